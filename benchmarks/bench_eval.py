"""Evaluation speed (not a test): batched vs one-at-a-time generation, and scorer throughput on 10K answers.

(1) Same model, same prompts: ``generate_answers`` (batched, left padding, KV cache) vs one generate() call
    per prompt. Prints samples/s and the ratio (goal ≥ 5× on a GPU; the CPU ratio is reported too). The
    answers must be identical, so the comparison is fair.
(2) CHAIR (Object HalBench), AMBER generative + discriminative and the ShapeWorld MMHal judge on 10,000
    answers built from ShapeWorld's ground truth with hallucinated objects mixed in.

    .venv/bin/python benchmarks/bench_eval.py [--prompts 128] [--batch-size 32] [--max-new-tokens 48]
                                               [--model data/base_model] [--answers 10000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from mdpo_pipeline import use_private_defaults

use_private_defaults()  # a script is an entry point: offline and private before the hub clients load

from mdpo_pipeline.core.eval.amber import amber_discriminative, amber_generative, load_amber
from mdpo_pipeline.core.eval.chair import chair_scores, load_object_halbench
from mdpo_pipeline.core.eval.mmhal import load_mmhal, mmhal_scores, parse_rating
from mdpo_pipeline.shapeworld import ShapeWorldConfig, generate_benchmarks
from mdpo_pipeline.shapeworld.judge import ShapeWorldJudge
from mdpo_pipeline.evaluation.answers import GenerationSettings, Prompt
from mdpo_pipeline.evaluation.generation import generate_answers, generate_one_by_one



def _model(path: str | None, image_size: int):
    if path and Path(path, "config.json").is_file():
        from mdpo_pipeline.shapeworld.preset import SHAPEWORLD_TINY
        from mdpo_pipeline.training.models import load_model_and_processor

        model, processor = load_model_and_processor(SHAPEWORLD_TINY, path)  # the pipeline's own loading path
        return model.eval(), processor, path
    from mdpo_pipeline.shapeworld.tiny import build_tiny_llava

    model, processor = build_tiny_llava(image_size=image_size)
    return model.eval(), processor, "random-init tiny LLaVA"


def bench_generation(bench: Path, args) -> None:
    model, processor, name = _model(args.model, args.image_size)
    if torch.cuda.is_available():
        model = model.to("cuda")
    amber = load_amber(bench / "amber")
    prompts = [Prompt(str(q.id), str(amber.image_dir / q.image), q.query) for q in amber.queries][: args.prompts]
    settings = GenerationSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    generate_answers(model, processor, prompts[: args.batch_size], settings)  # warm-up
    start = time.perf_counter()
    batched = generate_answers(model, processor, prompts, settings)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = generate_one_by_one(model, processor, prompts, settings)
    t_single = time.perf_counter() - start
    same = sum(a == b for a, b in zip(batched, single))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"generation on {device}, {name}, {len(prompts)} AMBER prompts, max_new_tokens {args.max_new_tokens}")
    print(f"  batched (batch {args.batch_size}): {len(prompts) / t_batched:8.1f} samples/s ({t_batched:.2f} s)")
    print(f"  one at a time:        {len(prompts) / t_single:8.1f} samples/s ({t_single:.2f} s)")
    print(f"  ratio batched / one-at-a-time: {t_single / t_batched:.2f}x (goal ≥ 5x on GPU); "
          f"identical answers {same}/{len(prompts)}")


def _answers(rng: random.Random, truths: list[list[str]], vocabulary: list[str], n: int) -> tuple[list[int], list[str]]:
    idx, texts = [], []
    for i in range(n):
        k = i % len(truths)
        said = list(truths[k]) + ([rng.choice(vocabulary)] if rng.random() < 0.5 else [])
        rng.shuffle(said)
        idx.append(k)
        texts.append("The image shows " + ", ".join(f"a {w}" for w in said) + ".")
    return idx, texts


def bench_scorers(bench: Path, n: int) -> None:
    rng = random.Random(0)
    ohb = load_object_halbench(bench / "object_halbench")
    items = list(ohb.items)
    truths = [sorted(ohb.truth[it.image_id]) for it in items]
    idx, texts = _answers(rng, truths, sorted(ohb.table.categories), n)
    start = time.perf_counter()
    result = chair_scores(texts, [truths[k] for k in idx], ohb.table)
    t = time.perf_counter() - start
    print(f"scorers on {n} answers")
    print(f"  CHAIR (rule-based):        {n / t:9.0f} answers/s  (CHAIR_s {result.chair_s:.3f})")

    amber = load_amber(bench / "amber")
    gen_ids = amber.ids("generative")
    gen_truths = [list(amber.annotation(i)["truth"]) for i in gen_ids]
    idx, texts = _answers(rng, gen_truths, sorted(amber.association), n)
    start = time.perf_counter()
    # AMBER keys answers by annotation id, so 10K answers are scored as repeated passes over its images.
    for lo in range(0, n, len(gen_ids)):
        chunk = {gen_ids[k]: texts[j] for j, k in enumerate(idx[lo : lo + len(gen_ids)], start=lo)}
        amber_generative(chunk, amber)
    t = time.perf_counter() - start
    print(f"  AMBER generative:          {n / t:9.0f} answers/s")
    dis_ids = amber.ids("discriminative")
    start = time.perf_counter()
    for lo in range(0, n, len(dis_ids)):
        amber_discriminative({i: rng.choice(("Yes", "No")) for i in dis_ids[: n - lo]}, amber)
    t = time.perf_counter() - start
    print(f"  AMBER discriminative:      {n / t:9.0f} answers/s")

    records = load_mmhal(bench / "mmhal" / "response_template.json")
    judge = ShapeWorldJudge()
    start = time.perf_counter()
    ratings = [parse_rating(judge.judge(records[i % len(records)], records[i % len(records)].gt_answer))
               for i in range(n)]
    t = time.perf_counter() - start
    scores = mmhal_scores(ratings[: len(records)], [r.question_type for r in records])
    print(f"  MMHal ShapeWorld judge:    {n / t:9.0f} answers/s  (score of the reference answers {scores.score:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--model", default="data/base_model", help="a saved LLaVA; else a random-init tiny one")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--answers", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        bench = Path(tmp)
        generate_benchmarks(ShapeWorldConfig(image_size=args.image_size), bench)
        bench_generation(bench, args)
        bench_scorers(bench, args.answers)


if __name__ == "__main__":
    main()
