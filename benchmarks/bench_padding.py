"""What padding costs (not a test): the share of pad tokens in three-view preference batches, and the step time of
the padded forward + backward against the packed one (``training/packing.py``), on CPU.

Two answer-length distributions:
- ``shapeworld``: the pipeline's own pairs (data/preference_pairs, after `make demo`): short, even answers;
- ``long-tail``: answers log-uniform between 4 and 400 tokens (synthetic, stated as such: the shape of real
  preference data, where a pair's answers run from a word to several paragraphs; the VLFeedback export on this
  machine has 4 rows, too few to draw a distribution from).

The model is the random-initialised LLaVA-1.5 at size "mid" (``families.build_checkpoint``, 112 px images) with a
LoRA adapter; a step is one forward and backward of the policy over the batch's 3B rows. Padded and packed run
interleaved, one step each per round, the first round untimed; ratios are of medians.

    .venv/bin/python benchmarks/bench_padding.py --rounds 4
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from mdpo_pipeline import use_private_defaults
from mdpo_pipeline.training.data import DataCollatorForMDPO
from mdpo_pipeline.training.families import build_checkpoint
from mdpo_pipeline.training.models import apply_lora
from mdpo_pipeline.training.packing import packed_completion_logps, pad_share
from mdpo_pipeline.training.reference import completion_logps, ensure_fused_lm_head

REPO = Path(__file__).resolve().parent.parent
WORDS = "the a red blue circle square left right small large picture shows there is and of".split()


def _turn(role: str, text: str, image: bool = False) -> list[dict]:
    return [{"role": role, "content": ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]}]


def _example(prompt: str, chosen: str, rejected: str, rng: random.Random) -> dict:
    colour = tuple(rng.randrange(256) for _ in range(3))
    return {"prompt": _turn("user", prompt, image=True), "chosen": _turn("assistant", chosen),
            "rejected": _turn("assistant", rejected), "image": Image.new("RGB", (112, 112), colour),
            "corrupted_image": Image.new("RGB", (112, 112), colour[::-1])}


def shapeworld_pairs(rng: random.Random) -> list[tuple[str, str, str]] | None:
    path = REPO / "data/preference_pairs/pairs.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=["prompt", "chosen", "rejected"]).to_pylist()
    return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


def long_tail_pairs(rng: random.Random, n: int = 400) -> list[tuple[str, str, str]]:
    def answer() -> str:
        length = int(math.exp(rng.uniform(math.log(4), math.log(400))))
        return " ".join(rng.choice(WORDS) for _ in range(length))

    return [("Describe this image in detail.", answer(), answer()) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (one padded and one packed step each)")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per batch (3 rows each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    use_private_defaults()
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    model, processor = build_checkpoint("llava-1.5", size="mid", image_size=112)
    policy = apply_lora(model, "llava-1.5-7b", r=8, alpha=16)
    ensure_fused_lm_head(policy)
    policy.train()
    collate = DataCollatorForMDPO(processor)
    print(f"llava-1.5 mid, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, {args.threads} "
          f"threads, {args.pairs} pairs per batch, {args.rounds} timed rounds")
    print(f"{'answers':12} {'pad share':>9} {'padded s':>9} {'packed s':>9} {'packed/padded':>13}")
    for name, source in (("shapeworld", shapeworld_pairs), ("long-tail", long_tail_pairs)):
        pairs = source(rng)
        if pairs is None:
            print(f"{name:12} (no data/preference_pairs: run `make demo` first)")
            continue
        batches = [collate([_example(*rng.choice(pairs), rng) for _ in range(args.pairs)])
                   for _ in range(args.rounds + 1)]
        share = statistics.mean(pad_share(b) for b in batches)
        times: dict[str, list[float]] = {"padded": [], "packed": []}
        for i, batch in enumerate(batches):
            for variant, logps in (("padded", completion_logps), ("packed", packed_completion_logps)):
                start = time.perf_counter()
                logps(policy, batch).sum().backward()
                policy.zero_grad(set_to_none=True)
                if i:  # the first round warms up
                    times[variant].append(time.perf_counter() - start)
        padded, packed = statistics.median(times["padded"]), statistics.median(times["packed"])
        print(f"{name:12} {share:9.1%} {padded:9.2f} {packed:9.2f} {packed / padded:13.2f}")


if __name__ == "__main__":
    main()
