"""Time per training step (not a test): DPO vs mDPO (cached / live reference) vs the paper's 4-call loop.

(a) DPO with a live reference (TRL's usual setup: policy 2B rows, reference 2B rows)
(b) mDPO with the cached reference (one policy forward over 3B rows, no reference forward)
(c) mDPO with a live reference (policy 3B rows + one no-grad reference forward over 3B rows)
(d) the paper's loop: 4 calls per step — policy [chosen; rejected], policy [chosen + corrupted image], and
    both again for the reference
Goals: (b)/(a) ≤ 1.15, (d)/(b) ≥ 1.3, and on a GPU an MFU ≥ 35 % for (b).

Each variant has its own copy of the model, LoRA adapter and optimizer, and one fixed batch of B pairs. The
variants run interleaved, one step each per round, so a noisy shared machine slows all of them alike; the
first --warmup rounds are not timed. A step is ``trainer.training_step`` (forward + backward) plus the
optimizer step. Ratios are of medians; a second line gives them on minimums, the least disturbed steps.

Models: "tiny" is the ShapeWorld LLaVA (CNN tower); llava-1.5, qwen2.5-vl and gemma-3 are random-init real
transformers classes with their real processors (``families.build_checkpoint``), in memory.

CPU (default there: tiny + the three families at size "mid", images at 1/4 of each release's side,
32-token answers):

    .venv/bin/python benchmarks/bench_train_step.py --steps 6

GPU (random-init LLaVA-1.5-7B and Qwen2.5-VL-7B with their release vocabularies, bf16, LoRA r64/α128 on
every language-model linear, gradient checkpointing, 336 / 448 px images, 4 pairs, 200-token answers;
stops cleanly, printing what it measured, before --time-limit seconds):

    python benchmarks/bench_train_step.py --device cuda --size full --time-limit 420

FLOPs of a step (model FLOPs: the forward that gradient checkpointing recomputes is not counted, so this is
MFU, not HFU). T = real (non-padding) tokens of a call's rows, image tokens included; T_ans = answer tokens;
s = a row's real length; N_lm = weights of the language model's linear layers; N_head = vocab × hidden;
N_lora = adapter weights; L, d_attn = layers and heads × head_dim of the language model.

    forward, every call   = Σ_vision 2·|W|·positions      every Linear/Conv of the vision tower and projector,
                                                          counted by forward hooks on one no-grad pass
                          + 2·N_lm·T  (+ 2·N_lora·T when the adapter is on)
                          + 2·N_head·T_ans                TRL's fused LM head only needs the answer positions
                          + 2·L·d_attn·Σ s²               causal attention, QKᵀ and AV over half the square
    backward, policy call = 2·N_lm·T + 4·N_lora·T + 2·N_head·T_ans + 2·(2·L·d_attn·Σ s²)
                          activation gradients through every language-model matmul, weight gradients for LoRA
                          only; nothing flows back into the frozen vision tower and projector
    MFU = FLOPs / median step time / --peak-tflops

Vision attention (< 0.5 % of a 7B step) and Gemma's projector matmul (a bare parameter, no Linear) are left
out. tok/s counts T of the rows the policy trains on (2B rows for DPO, 3B for mDPO) per second.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from mdpo_pipeline import use_private_defaults

use_private_defaults()  # a script is an entry point: offline and private before the hub clients load

import datasets
import torch

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.losses import mdpo_loss
from mdpo_pipeline.shapeworld import ShapeWorldConfig, generate_vlfeedback
from mdpo_pipeline.training import families, reference
from mdpo_pipeline.training.config import MDPOConfig
from mdpo_pipeline.training.data import load_preference_dataset
from mdpo_pipeline.training.models import NON_LANGUAGE_PARTS, language_model_linear_names, lora_config
from mdpo_pipeline.training.reference import completion_logps, compute_reference_logprobs, reference_mode
from mdpo_pipeline.shapeworld.tiny import build_tiny_llava, shapeworld_words
from mdpo_pipeline.training.trainer import MDPOTrainer


#: What --json writes: one record per (model, variant) measured.
RECORDS: list[dict] = []
VARIANTS = {"a": "DPO, live ref", "b": "mDPO, cached ref", "c": "mDPO, live ref", "d": "paper 4-call loop"}
TINY = "tiny"
MODEL_NAMES = (TINY, *families.FAMILIES)
#: The preset whose LoRA settings (dropout, task type) each model is trained with.
PRESET = {TINY: "shapeworld-tiny", "llava-1.5": "llava-1.5-7b", "qwen2.5-vl": "qwen2.5-vl-7b", "gemma-3": "gemma-3-4b"}
#: Image side the releases see: CLIP-336 for LLaVA-1.5, ~448 px photos for Qwen2.5-VL (dynamic resolution,
#: 256 tokens), SigLIP-896 for Gemma 3; the tiny ShapeWorld model's own 64 px is never scaled.
RELEASE_IMAGE_SIDE = {TINY: 64, "llava-1.5": 336, "qwen2.5-vl": 448, "gemma-3": 896}
#: Vocabulary of each release. The families' BPE tokenizer has 1K tokens, which would make the embedding and
#: LM head of a "full" model ~0.3-1 B weights lighter than the real one; --release-vocab pads them to size.
RELEASE_VOCAB = {"llava-1.5": 32064, "qwen2.5-vl": 152064, "gemma-3": 262208}
#: No truncation at these lengths; the reference cache and the trainers must agree on it.
MAX_LENGTH = 2048
VISION_PARTS = NON_LANGUAGE_PARTS - {"lm_head"}
_GIB = 2**30


class PaperLoopTrainer(MDPOTrainer):
    """The public mDPO code's step: separate policy and reference calls for [chosen; rejected] and the crop."""

    def _compute_loss(self, model, inputs, return_outputs):
        b = inputs["input_ids"].shape[0] // 3
        pair, crop = rows_of(inputs, slice(0, 2 * b)), rows_of(inputs, slice(2 * b, 3 * b))
        policy_pair, policy_crop = completion_logps(model, pair), completion_logps(model, crop)
        ref_pair, ref_crop = self._reference_logps(pair), self._reference_logps(crop)
        pc, pr = policy_pair.chunk(2)
        rc, rr = ref_pair.chunk(2)
        return mdpo_loss(pc, pr, rc, rr, policy_crop, ref_crop, beta=self.beta, weights=self.args.mdpo_weights).loss


def rows_of(inputs: dict, rows: slice) -> dict:
    """Rows ``rows`` (a contiguous slice) of a collated batch, one image per row.

    Qwen's pixel_values are patch-major, every image's patches in one tensor with image_grid_thw giving each
    image's count, so they are cut at image boundaries; a row slice would pair images with the wrong rows."""
    n = inputs["input_ids"].shape[0]
    out = {k: v[rows] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v for k, v in inputs.items()}
    if "image_grid_thw" in inputs:
        ends = inputs["image_grid_thw"].prod(-1).cumsum(0)
        first, stop, _ = rows.indices(n)
        start = ends[first - 1].item() if first else 0
        out["pixel_values"] = inputs["pixel_values"][start : ends[stop - 1].item()]
    return out


# --- data ------------------------------------------------------------------------------------------


def make_data(root: Path, side: int, n_pairs: int) -> datasets.Dataset:
    """``n_pairs`` ShapeWorld pairs through the pipeline's own stages: pairs, images, corrupted images."""
    raw = root / "raw"
    # About a quarter of the instructions are LLaVA-sourced, the only ones make_pairs keeps by default.
    generate_vlfeedback(ShapeWorldConfig(n_instructions=16 * n_pairs + 64, image_size=side, bad_rating_share=0.0), raw)
    result = ingest.ingest(ingest.IngestConfig(format="vlfeedback", path=str(raw), workers=1))
    made = pairs.make_pairs(result.instructions, pairs.PairsConfig(strategy="one_per_instruction", n=n_pairs))
    pairs.write_pairs(made, root / "pairs")
    samples = sorted({(p.instruction_id, p.image) for p in made.pairs})
    corruption.corrupt_images(samples, raw, root / "corrupted", corruption.CorruptionConfig(workers=1))
    dataset = load_preference_dataset(root / "pairs", raw, root / "corrupted")
    if len(dataset) < n_pairs:
        raise RuntimeError(f"ShapeWorld gave {len(dataset)} pairs, {n_pairs} needed")
    return dataset.select(range(n_pairs))


def fit_answers(dataset: datasets.Dataset, tokenizer, n_tokens: int) -> datasets.Dataset:
    """Every chosen and rejected answer repeated, then cut, to ``n_tokens`` tokens of ``tokenizer``: ShapeWorld
    answers are a dozen words, real ones (and the step cost the goals are about) a few hundred tokens."""

    def fit(text: str) -> str:
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) or 1
        ids = tokenizer(" ".join([text] * -(-n_tokens // n)), add_special_tokens=False)["input_ids"]
        return tokenizer.decode(ids[:n_tokens])

    def fit_messages(messages):
        return [
            {**m, "content": [{**b, "text": fit(b["text"])} if b["type"] == "text" else b for b in m["content"]]}
            for m in messages
        ]

    return dataset.map(
        lambda chosen, rejected: {"chosen": fit_messages(chosen), "rejected": fit_messages(rejected)},
        input_columns=["chosen", "rejected"],
    )


# --- models ----------------------------------------------------------------------------------------


def image_side(name: str, args) -> int:
    """The side images are drawn at: the release's, scaled by --image-scale and snapped to what the tower takes."""
    if args.image_size:
        return args.image_size
    if name == TINY:
        return RELEASE_IMAGE_SIDE[TINY]
    # Whole patches of 14 px; Qwen merges 2×2 patches into one token; Gemma pools its patch grid to a fixed
    # number of tokens per side (4 at "mid", 16 at "full"), which must divide it.
    quantum = {"llava-1.5": 14, "qwen2.5-vl": 28, "gemma-3": 14 * {"tiny": 2, "mid": 4, "full": 16}[args.size]}[name]
    return max(quantum, round(RELEASE_IMAGE_SIDE[name] * args.image_scale / quantum) * quantum)


def build_model(name: str, args, side: int):
    """(model, processor) of ``name`` on ``args.device`` in ``args.dtype`` (release vocabulary when asked)."""
    if name == TINY:
        model, processor = build_tiny_llava(image_size=side)
        return model.to(args.device, getattr(torch, args.dtype)), processor
    # ShapeWorld's words in the BPE corpus: ~1 token per word, as a release tokenizer on English text.
    model, processor = families.build_checkpoint(
        name, size=args.size, corpus=[" ".join(shapeworld_words())], image_size=side,
        dtype=getattr(torch, args.dtype), device=args.device,
    )
    if args.release_vocab:
        model.resize_token_embeddings(RELEASE_VOCAB[name], mean_resizing=False)
    return model, processor


@contextlib.contextmanager
def unhashed_cache():
    """Skip the reference cache's fingerprint: it hashes every weight on the host (tens of seconds at 7B), the
    trainer only checks the cache's max_length, and this cache lives as long as the run."""
    with mock.patch.object(reference, "reference_fingerprint", lambda *args, **kwargs: {"combined": "benchmark"}):
        yield


# --- FLOPs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs of a model besides the batch."""

    lm: int  #: weights of the language model's linear layers (attention + MLP)
    head: int  #: LM head weights, vocab × hidden
    layers: int
    d_attn: int  #: query heads × head_dim

    @classmethod
    def of(cls, model) -> Shape:
        modules = dict(model.named_modules())
        text = model.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return cls(
            lm=sum(modules[name].weight.numel() for name in language_model_linear_names(model)),
            head=model.get_output_embeddings().weight.numel(),
            layers=text.num_hidden_layers,
            d_attn=text.num_attention_heads * head_dim,
        )


def vision_flops(model, batch: dict) -> int:
    """Forward FLOPs of the vision tower and projector on ``batch``'s images: 2·|W| per output position of every
    Linear and Conv, hooked during one no-grad forward, so CLS tokens, windows, merges and pooling count as run."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += 2 * module.weight.numel() * (output.numel() // module.weight.shape[0])

    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    hooks = [
        module.register_forward_hook(count)
        for name, module in model.named_modules()
        if isinstance(module, layers) and VISION_PARTS.intersection(name.split("."))
    ]
    try:
        with torch.no_grad(), reference_mode(model):
            completion_logps(model, batch)
    finally:
        for hook in hooks:
            hook.remove()
    return total


def step_flops(shape: Shape, lora: int, vision: int, batch: dict, live_reference: bool) -> float:
    """Model FLOPs of one step over ``batch`` (the module docstring's formula): the policy's forward and
    backward, plus a reference forward when ``live_reference``. The paper's loop splits the same rows into two
    calls each, which adds up to the same count."""
    mask = batch["attention_mask"]
    tokens = mask.sum().item()
    answer = batch["completion_mask"].sum().item()
    attention = 2 * shape.layers * shape.d_attn * (mask.sum(1).double() ** 2).sum().item()
    frozen = vision + 2 * shape.lm * tokens + 2 * shape.head * answer + attention
    backward = 2 * shape.lm * tokens + 4 * lora * tokens + 2 * shape.head * answer + 2 * attention
    return frozen + 2 * lora * tokens + backward + (frozen if live_reference else 0)


# --- variants --------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One variant of the step: its trainer (own model copy, adapter, optimizer), fixed batch and measurements."""

    key: str
    trainer: MDPOTrainer
    batch: dict
    flops: float
    tokens: int  #: real tokens of the rows the policy trains on
    times: list[float] = field(default_factory=list)
    transient: int = 0  #: most bytes allocated on top of what was resident, during a step (CUDA)
    process_peak: int = 0  #: torch.cuda.max_memory_allocated during its steps, every variant resident (CUDA)

    def resident(self) -> int:
        """Bytes this variant holds between steps: weights, buffers, adapter and optimizer state."""
        tensors = [*self.trainer.model.parameters(), *self.trainer.model.buffers()]
        tensors += [t for state in self.trainer.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
        return sum(t.numel() * t.element_size() for t in tensors)


def make_variant(key, name, model, processor, dataset, cache, args, out: Path) -> Variant:
    config = MDPOConfig(
        output_dir=str(out / key), method="dpo" if key == "a" else "mdpo",
        reference_cache=str(cache) if key == "b" else None, per_device_train_batch_size=args.pairs,
        report_to=[], use_cpu=args.device == "cpu", bf16=args.dtype == "bfloat16", max_length=MAX_LENGTH,
        save_strategy="no", disable_tqdm=True, activation_checkpointing=args.gradient_checkpointing,
        packed_rows=args.packed_rows,
    )  # fmt: skip
    shape = Shape.of(model)
    lora = lora_config(model, PRESET[name], r=args.lora_r, alpha=args.lora_alpha)
    cls = PaperLoopTrainer if key == "d" else MDPOTrainer
    trainer = cls(model, args=config, train_dataset=dataset, processing_class=processor, peft_config=lora)
    if config.activation_checkpointing:
        # Trainer.train turns it on, and the benchmark times training_step without train().
        trainer.model.activation_checkpointing_enable(config.activation_checkpointing_kwargs)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which we bypass to time single steps
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    lora_weights = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n and p.requires_grad)
    flops = step_flops(shape, lora_weights, vision_flops(trainer.model, batch), batch, live_reference=key != "b")
    return Variant(key, trainer, batch, flops, tokens=batch["attention_mask"].sum().item())


def timed_step(variant: Variant, cuda: bool) -> float:
    trainer = variant.trainer
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.training_step(trainer.model, variant.batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        variant.transient = max(variant.transient, peak - before)
        variant.process_peak = max(variant.process_peak, peak)
    return seconds


def run_rounds(variants: list[Variant], args, deadline: float | None) -> str:
    """Round-robin steps; returns why it stopped early, or "" when all rounds ran."""
    cuda = args.device == "cuda"
    last_round = 0.0
    for i in range(args.warmup + args.steps):
        # 1.5 rounds of slack: a round can be slower than the last, and the tables still have to print.
        if deadline is not None and time.monotonic() + 1.5 * last_round > deadline:
            return f"time limit: stopped after {max(0, i - args.warmup)} of {args.steps} timed rounds"
        start = time.monotonic()
        # Each round starts at the next variant, so none always runs right after the same neighbour.
        for variant in variants[i % len(variants) :] + variants[: i % len(variants)]:
            seconds = timed_step(variant, cuda)
            if i >= args.warmup:
                variant.times.append(seconds)
        last_round = time.monotonic() - start
    return ""


# --- report ----------------------------------------------------------------------------------------


def print_model(name: str, model_info: str, variants: list[Variant], args, stopped: str) -> None:
    by_key = {v.key: v for v in variants}
    b = by_key["b"].batch
    rows = b["input_ids"].shape[0]
    image_token = getattr(by_key["b"].trainer.model.config, "image_token_id", None)
    image_tokens = (b["input_ids"] == image_token).sum().item() / rows if image_token is not None else 0
    print(f"\n== {name}: {model_info}")
    print(f"   {args.pairs} pairs; {image_tokens:.0f} image tokens and {b['completion_mask'].sum().item() / rows:.0f} "
          f"answer tokens a row; batch rows × length: (a) {tuple(by_key['a'].batch['input_ids'].shape)}, "
          f"(b-d) {tuple(b['input_ids'].shape)}" + (f"; {stopped}" if stopped else ""))  # fmt: skip
    cuda = args.device == "cuda"
    print(f"   {'variant':<22} {'min ms':>8} {'median ms':>10} {'TFLOP/step':>11} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'tok/s':>8} {'pairs/s':>8} {'peak GiB':>9}")  # fmt: skip
    medians = {}
    for v in variants:
        if not v.times:
            print(f"   ({v.key}) {VARIANTS[v.key]:<18} {'no timed steps':>19}")
            continue
        med = medians[v.key] = statistics.median(v.times)
        tflops = v.flops / med / 1e12
        mfu = f"{100 * tflops / args.peak_tflops:5.1f}%" if args.peak_tflops else "-"
        peak = f"{(v.resident() + v.transient) / _GIB:9.1f}" if cuda else "-"
        RECORDS.append({
            "model": name, "variant": VARIANTS[v.key], "packed_rows": args.packed_rows and v.trainer.logps is not
            completion_logps and v.key != "d", "s_per_step": round(med, 4), "min_s": round(min(v.times), 4),
            "tokens_per_s": round(v.tokens / med, 1), "tflop_per_step": round(v.flops / 1e12, 4),
            "mfu": round(tflops / args.peak_tflops, 4) if args.peak_tflops else None,
            "peak_gib": round((v.resident() + v.transient) / _GIB, 2) if cuda else None,
        })  # fmt: skip
        print(f"   ({v.key}) {VARIANTS[v.key]:<18} {min(v.times) * 1e3:8.0f} {med * 1e3:10.0f} {v.flops / 1e12:11.4f} "
              f"{tflops:8.3f} {mfu:>6} {v.tokens / med:8.0f} {args.pairs / med:8.2f} {peak:>9}")  # fmt: skip
    if len(medians) == 4:
        m = medians
        print(f"   (b)/(a) = {m['b'] / m['a']:.2f} (goal ≤ 1.15) | (d)/(b) = {m['d'] / m['b']:.2f} (goal ≥ 1.3) | "
              f"(c)/(b) = {m['c'] / m['b']:.2f} | (d)/(c) = {m['d'] / m['c']:.2f}   "
              f"[medians of {len(variants[0].times)} rounds]")  # fmt: skip
        # On a shared machine the minimum is the least disturbed step: when the two disagree, trust neither much.
        m = {v.key: min(v.times) for v in variants}
        print(f"   on minimums: (b)/(a) = {m['b'] / m['a']:.2f} | (d)/(b) = {m['d'] / m['b']:.2f} | "
              f"(c)/(b) = {m['c'] / m['b']:.2f}")  # fmt: skip
    if cuda:
        print(f"   process peak (torch.cuda.max_memory_allocated, all four variants resident): "
              f"{max(v.process_peak for v in variants) / _GIB:.1f} GiB; a variant's peak = its weights, adapter and "
              "optimizer state + its step's largest transient")  # fmt: skip


def bench_model(name: str, args, root: Path, data: dict, deadline: float | None) -> None:
    t0 = time.monotonic()
    side = image_side(name, args)
    if side not in data:
        data[side] = make_data(root / f"data-{side}", side, args.pairs)
    base, processor = build_model(name, args, side)
    dataset = fit_answers(data[side], processor.tokenizer, args.answer_tokens)
    params = sum(p.numel() for p in base.parameters())
    shape = Shape.of(base)
    dtype = next(base.parameters()).dtype
    model_info = (f"{'ShapeWorld LLaVA' if name == TINY else args.size}, {params / 1e6:,.1f}M weights "
                  f"(LM linear {shape.lm / 1e6:,.1f}M, LM head {shape.head / 1e6:,.1f}M), {str(dtype)[6:]}, "
                  f"{side} px images")  # fmt: skip
    # Copies before anything patches the model (the cache's fused head, PEFT): every variant starts equal.
    models = {"a": base, **{key: copy.deepcopy(base) for key in "bcd"}}
    cache = root / f"ref-{name}.parquet"
    with unhashed_cache():
        compute_reference_logprobs(base, processor, dataset, args.pairs, cache, max_length=MAX_LENGTH,
                                   packed_rows=args.packed_rows)
    variants = [
        make_variant(key, name, models[key], processor, dataset, cache, args, root / name) for key in VARIANTS
    ]
    del models, base
    setup = time.monotonic() - t0
    stopped = ""
    try:
        stopped = run_rounds(variants, args, deadline)
    except torch.OutOfMemoryError as e:
        stopped = f"out of memory: {str(e).splitlines()[0]}"
    lora_weights = sum(p.numel() for n, p in variants[0].trainer.model.named_parameters() if "lora_" in n)
    model_info += (f", LoRA r{args.lora_r}/α{args.lora_alpha} {lora_weights / 1e6:,.2f}M"
                   f"{', gradient checkpointing' if args.gradient_checkpointing else ''}; setup {setup:.0f} s, "
                   f"rounds {time.monotonic() - t0 - setup:.0f} s")  # fmt: skip
    print_model(name, model_info, variants, args, stopped)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", help=f"comma-separated models among {', '.join(MODEL_NAMES)} (tiny: the "
                    "ShapeWorld LLaVA; default: all four at --size mid, llava-1.5,qwen2.5-vl at full)")  # fmt: skip
    ap.add_argument("--size", choices=("mid", "full"), default="mid",
                    help="architecture size of the real families (families.SIZES); full needs --device cuda")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where to run (default: cuda when available)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"),
                    help="weights dtype; bfloat16 also turns on bf16 autocast (default: bfloat16 on cuda, else "
                    "float32)")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per step (B): 2B rows for DPO, 3B for mDPO")
    ap.add_argument("--steps", type=int, default=10, help="timed rounds (one step of every variant each)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (allocator, kernels, autotuning)")
    ap.add_argument("--answer-tokens", type=int,
                    help="tokens of every chosen and rejected answer (default: 200 at full, 32 at mid)")
    ap.add_argument("--image-scale", type=float, help="image side as a fraction of each release's (LLaVA 336, "
                    "Qwen 448, Gemma 896), snapped to the tower's patch grid (default: 1 at full, 0.25 at mid)")
    ap.add_argument("--image-size", type=int, help="one image side in px for every model, instead of --image-scale")
    ap.add_argument("--lora-r", type=int, help="LoRA rank on every language-model linear (default: 64 at full, 8 "
                    "at mid, the same share of the hidden size)")
    ap.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: 2 × rank)")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                    help="recompute activations in the backward (default: on at full, off at mid)")
    ap.add_argument("--release-vocab", action=argparse.BooleanOptionalAction,
                    help="pad embeddings and LM head to the release's vocabulary (default: on at full, off at mid)")
    ap.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s of the device in --dtype, for the MFU "
                    "(default: 989, H100/H200 SXM bf16, on cuda; none on cpu, where only TFLOP/s is printed)")
    ap.add_argument("--packed-rows", action=argparse.BooleanOptionalAction, default=True,
                    help="pack each batch's rows padding-free where the model type allows (MDPOConfig.packed_rows; "
                    "the paper's 4-call loop stays padded)")
    ap.add_argument("--json", type=Path, help="also write the measurements there, one record per model and variant")
    ap.add_argument("--time-limit", type=float, help="seconds: stop starting rounds and models when the limit "
                    "nears and print what was measured (default: no limit)")
    args = ap.parse_args()
    big = args.size == "full"
    if big and args.device != "cuda":
        ap.error("--size full needs --device cuda")
    if args.families is None:
        args.families = "llava-1.5,qwen2.5-vl" if big else ",".join(MODEL_NAMES)
    unknown = sorted(set(args.families.split(",")) - set(MODEL_NAMES))
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(MODEL_NAMES)}")
    if args.pairs < 1 or args.steps < 1 or args.warmup < 0:
        ap.error("--pairs and --steps must be ≥ 1, --warmup ≥ 0")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.answer_tokens = args.answer_tokens or (200 if big else 32)
    args.image_scale = args.image_scale or (1.0 if big else 0.25)
    args.lora_r = args.lora_r or (64 if big else 8)
    args.lora_alpha = args.lora_alpha or 2 * args.lora_r
    args.gradient_checkpointing = big if args.gradient_checkpointing is None else args.gradient_checkpointing
    args.release_vocab = big if args.release_vocab is None else args.release_vocab
    if args.peak_tflops is None and args.device == "cuda":
        args.peak_tflops = 989.0
    return args


def main() -> None:
    """Run the four variants round-robin for each model and print min / median step times, FLOPs and ratios."""
    start = time.monotonic()
    args = parse_args()
    # Room to print and free the last model once the limit stops the rounds.
    deadline = start + args.time_limit - max(10.0, 0.05 * args.time_limit) if args.time_limit else None
    datasets.disable_progress_bars()
    # TRL 1.16 still calls transformers' v6-deprecated gradient-checkpointing aliases every live-reference step.
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {args.device} ({where}), "
          f"{args.dtype}, B={args.pairs} pairs, {args.answer_tokens}-token answers, {args.warmup} warm-up + "
          f"{args.steps} timed rounds, MFU peak {args.peak_tflops or '-'} TFLOP/s, "
          f"{'packed' if args.packed_rows else 'padded'} rows")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        data: dict[int, datasets.Dataset] = {}
        last_cost = 0.0
        for name in args.families.split(","):
            if deadline is not None and time.monotonic() + last_cost > deadline:
                print(f"\n== {name}: skipped, the previous model took {last_cost:.0f} s and the time limit is near")
                continue
            t0 = time.monotonic()
            try:
                bench_model(name, args, Path(tmp), data, deadline)
            except torch.OutOfMemoryError as e:
                print(f"\n== {name}: out of memory while building: {str(e).splitlines()[0]}")
            finally:
                gc.collect()
                if args.device == "cuda":
                    torch.cuda.empty_cache()
            last_cost = time.monotonic() - t0
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(RECORDS, indent=1) + "\n")


if __name__ == "__main__":
    main()
