"""Batched greedy generation throughput (not a test): answers and new tokens per second of a random-initialised
family model through the evaluation's own ``generate_answers`` (left-padded batches, KV cache), as the
benchmark_scores stage generates.

    python benchmarks/bench_generate.py --device cuda --size full --batch 64 --new-tokens 96   # LLaVA-1.5-7B
    .venv/bin/python benchmarks/bench_generate.py --size tiny --prompts 8 --batch 4 --new-tokens 8

A random model rarely stops early, so nearly every answer runs the full --new-tokens; the new-token count is
measured from the answers' tokens, not assumed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mdpo_pipeline import use_private_defaults
from mdpo_pipeline.core.eval.settings import GenerationSettings
from mdpo_pipeline.evaluation.answers import Prompt
from mdpo_pipeline.evaluation.generation import generate_answers
from mdpo_pipeline.training.families import FAMILIES, build_checkpoint

QUESTIONS = ("Describe this image in detail.", "What objects are in the picture?", "Is there a dog in the image?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="llava-1.5", choices=sorted(FAMILIES))
    ap.add_argument("--size", default="tiny", choices=("tiny", "mid", "full"))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--json", type=Path, help="also write the measurement there")
    args = ap.parse_args()
    use_private_defaults()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, processor = build_checkpoint(args.family, size=args.size, dtype=dtype, device=args.device)
    model.eval()
    side = processor.image_processor.to_dict().get("crop_size", {}).get("height", 336)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = []
        for i in range(args.prompts):
            path = f"{tmp}/{i}.png"
            Image.effect_noise((side, side), 64 + i % 64).convert("RGB").save(path)
            prompts.append(Prompt(str(i), path, QUESTIONS[i % len(QUESTIONS)]))
        settings = GenerationSettings(batch_size=args.batch, max_new_tokens=args.new_tokens)
        generate_answers(model, processor, prompts[: args.batch], settings)  # warm-up: kernels, allocator
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        answers = generate_answers(model, processor, prompts, settings)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    new_tokens = sum(len(processor.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    record = {"model": f"{args.family} {args.size}", "device": args.device, "batch": args.batch,
              "max_new_tokens": args.new_tokens, "prompts": args.prompts, "seconds": round(seconds, 3),
              "answers_per_s": round(args.prompts / seconds, 2), "new_tokens_per_s": round(new_tokens / seconds, 1)}
    print(f"{record['model']} on {args.device}: {args.prompts} answers, batch {args.batch}, up to {args.new_tokens} "
          f"new tokens: {seconds:.1f} s, {record['answers_per_s']} answers/s, {record['new_tokens_per_s']} new tok/s")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
