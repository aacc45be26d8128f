"""Time per training step (not a test): the same batches and model through four variants, medians and ratios.

(a) DPO with a live reference (TRL's usual setup: policy 2B rows, reference 2B rows)
(b) mDPO with the cached reference (one policy forward over 3B rows, no reference forward)
(c) mDPO with a live reference (policy 3B rows + one no-grad reference forward over 3B rows)
(d) the paper's loop: 4 calls per step — policy [chosen; rejected], policy [chosen + corrupted image], and
    both again for the reference
Goals: (b)/(a) ≤ 1.15 and (d)/(b) ≥ 1.3.

    .venv/bin/python benchmarks/bench_train_step.py [--models tiny,mid] [--pairs 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import LlavaForConditionalGeneration

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.losses import mdpo_loss
from mdpo_pipeline.core.shapeworld import ShapeWorldConfig, generate_vlfeedback
from mdpo_pipeline.training.config import MDPOConfig
from mdpo_pipeline.training.data import load_preference_dataset
from mdpo_pipeline.training.models import language_model_linear_names
from mdpo_pipeline.training.tiny import build_tiny_llava
from mdpo_pipeline.training.reference import (
    completion_logps,
    compute_reference_logprobs,
)
from mdpo_pipeline.training.trainer import MDPOTrainer


class PaperLoopTrainer(MDPOTrainer):
    """The public mDPO code's step: separate policy and reference calls for [chosen; rejected] and the crop."""

    def _compute_loss(self, model, inputs, return_outputs):
        n = inputs["input_ids"].shape[0]
        b = n // 3
        pair = {k: v[: 2 * b] if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in inputs.items()}
        crop = {k: v[2 * b :] if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in inputs.items()}
        policy_pair, policy_crop = completion_logps(model, pair), completion_logps(model, crop)
        ref_pair, ref_crop = self._reference_logps(pair), self._reference_logps(crop)
        pc, pr = policy_pair.chunk(2)
        rc, rr = ref_pair.chunk(2)
        return mdpo_loss(pc, pr, rc, rr, policy_crop, ref_crop, beta=self.beta, weights=self.args.mdpo_weights).loss


def make_data(root: Path, image_size: int) -> tuple[Path, Path, Path]:
    """A small ShapeWorld run through the pipeline's own stages: pairs, images, corrupted images."""
    raw = root / "raw"
    generate_vlfeedback(ShapeWorldConfig(n_instructions=400, image_size=image_size), raw)
    result = ingest.ingest(ingest.IngestConfig(format="vlfeedback", path=str(raw), workers=1))
    made = pairs.make_pairs(result.instructions, pairs.PairsConfig(strategy="one_per_instruction", n=64))
    pairs.write_pairs(made, root / "pairs")
    samples = sorted({(p.instruction_id, p.image) for p in made.pairs})
    corruption.corrupt_images(samples, raw, root / "corrupted", corruption.CorruptionConfig(workers=1))
    return root / "pairs", raw, root / "corrupted"


def mid_model(tiny: LlavaForConditionalGeneration) -> LlavaForConditionalGeneration:
    """A random-init LLaVA ~40x the tiny one (wider CNN tower, 256-d tokens; 8-layer 512-d language model), same vocab."""
    config = tiny.config
    v, t = config.vision_config, config.text_config
    v.stem_channels, v.channels, v.hidden_size = 64, [128, 256], 256
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = 512, 1408, 8
    t.num_attention_heads = t.num_key_value_heads = 8
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config)


def time_variant(name, model_fn, processor, dataset, cache, n_pairs, steps, out) -> float:
    """Median seconds of trainer.training_step over ``steps`` identical-batch steps (after 2 warm-up steps)."""
    method = "dpo" if name == "a" else "mdpo"
    args = MDPOConfig(
        output_dir=str(out / name), method=method, reference_cache=str(cache) if name == "b" else None,
        per_device_train_batch_size=n_pairs, report_to=[], use_cpu=not torch.cuda.is_available(),
        bf16=False, max_length=1024, save_strategy="no", disable_tqdm=True,
    )
    model = model_fn()
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=language_model_linear_names(model))
    cls = PaperLoopTrainer if name == "d" else MDPOTrainer
    trainer = cls(model, args=args, train_dataset=dataset, processing_class=processor, peft_config=lora)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which we bypass to time single steps
    batch = next(iter(trainer.get_train_dataloader()))
    batch = trainer._prepare_inputs(batch)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        trainer.training_step(trainer.model, batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Run the four variants for each model size and print medians and ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,mid", help="comma-separated: tiny, mid")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per step (B)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        pairs_dir, image_root, corrupted_dir = make_data(root, args.image_size)
        dataset = load_preference_dataset(pairs_dir, image_root, corrupted_dir)
        print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}, "
              f"B={args.pairs} pairs, {args.image_size}px images")  # fmt: skip
        for size in args.models.split(","):
            tiny, processor = build_tiny_llava(image_size=args.image_size)

            def model_fn(size=size):
                model, _ = build_tiny_llava(image_size=args.image_size)
                return model if size == "tiny" else mid_model(model)

            base = model_fn()
            params = sum(p.numel() for p in base.parameters())
            cache = root / f"ref-{size}.parquet"
            compute_reference_logprobs(base, processor, dataset, args.pairs, cache, max_length=1024)
            med = {v: time_variant(v, model_fn, processor, dataset, cache, args.pairs, args.steps, root) for v in "abcd"}
            print(
                f"[{size}, {params / 1e6:.1f}M params] step median ms: (a) DPO live {med['a'] * 1e3:.0f} | "
                f"(b) mDPO cached {med['b'] * 1e3:.0f} | (c) mDPO live {med['c'] * 1e3:.0f} | "
                f"(d) paper loop {med['d'] * 1e3:.0f}\n"
                f"    (b)/(a) = {med['b'] / med['a']:.2f} (goal ≤ 1.15) | (d)/(b) = {med['d'] / med['b']:.2f} "
                f"(goal ≥ 1.3) | (c)/(b) = {med['c'] / med['b']:.2f} | (d)/(c) = {med['d'] / med['c']:.2f}"
            )


if __name__ == "__main__":
    main()
