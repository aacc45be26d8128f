"""Data-stage performance (not a test): prints figures and ratios against baselines run in the same process.

(a) Streaming ingest + pair building + a 10K sample from an 80K-instruction synthetic VLFeedback jsonl
    of realistic row size (~5–6 KB: 4 completions with three rated aspects and rationales each), for each
    image-check mode. Goal: ≤ 30 s and ≤ 1 GB peak memory on 2 cores.
(b) The corruption stage's images/s against a floor: plain PIL decode + crop + resize + encode of the
    same images in a tight loop, on the same number of processes. Goal: ≥ 0.8 of the floor.

    .venv/bin/python benchmarks/bench_data.py [--rows 80000] [--images 2000] [--modes none,header,full]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from mdpo_pipeline.core import corruption, ingest, pairs
from mdpo_pipeline.core.schemas import ASPECTS

# VLFeedback's instruction sources and counts (docs/data.md, "Instruction sources"): the 10K sample comes from the
# LLaVA share.
SOURCES = {"llava": 19614, "svit": 22823, "llavar": 13770, "lrv": 12357, "llava-med": 5861,
           "comvint": 2384, "pmc-vqa": 2364, "m3it": 687, "pca-eval": 398}  # fmt: skip
WORDS = ("the image shows a man riding a bicycle along a busy street next to parked cars and a red bus "
         "while people walk on the sidewalk under tall buildings with many windows").split()  # fmt: skip


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def _photo(rng: np.random.Generator, w: int = 512, h: int = 384) -> bytes:
    """A JPEG of photo-like size and entropy (~70 KB): smooth gradients plus noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * rng.uniform(0.2, 0.5)) % 255, (yy * rng.uniform(0.2, 0.5)) % 255, (xx + yy) % 255], -1)
    img = np.clip(base + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_vlfeedback(root: Path, rows: int, seed: int = 0) -> int:
    """Write a raw VLFeedback directory of ``rows`` instructions; images are hard links to 32 distinct JPEGs."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    (root / "merged_images").mkdir(parents=True)
    pool_dir = root / "pool"
    pool_dir.mkdir()
    pool = []
    for i in range(32):
        p = pool_dir / f"{i}.jpg"
        p.write_bytes(_photo(nrng))
        pool.append(p)
    names, weights = list(SOURCES), list(SOURCES.values())
    with open(root / "vlfeedback_80k.jsonl", "w") as f, open(root / "instruction_source.jsonl", "w") as s:
        for i in range(rows):
            rid = f"{i:07d}"
            os.link(pool[i % len(pool)], root / "merged_images" / f"{rid}.jpg")
            completions = [
                {
                    "model": f"model-{k}",
                    "response": _text(rng, rng.randint(60, 200)),
                    "annotations": {
                        a: {"Rating": str(rng.randint(1, 5)), "Rationale": _text(rng, rng.randint(25, 45))}
                        for a in ASPECTS
                    },
                }
                for k in rng.sample(range(12), 4)
            ]
            row = {"id": rid, "prompt": _text(rng, rng.randint(8, 25)) + "?",
                   "models": [c["model"] for c in completions], "completions": completions}  # fmt: skip
            f.write(json.dumps(row) + "\n")
            s.write(json.dumps({"id": rid, "source": rng.choices(names, weights)[0]}) + "\n")
    return (root / "vlfeedback_80k.jsonl").stat().st_size


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants (worker pools) every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.02):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def bench_ingest(root: Path, modes: list[str], n_sample: int) -> None:
    """(a): ingest → pairs → sample, timed per step, for each image-check mode."""
    for mode in modes:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            result = ingest.ingest(ingest.IngestConfig(format="vlfeedback", path=str(root), image_check=mode))
            t1 = time.perf_counter()
            made = pairs.make_pairs(result.instructions, pairs.PairsConfig(strategy="all_pairs", n=n_sample))
            t2 = time.perf_counter()
        print(
            f"(a) image_check={mode:<6} ingest {t1 - t0:6.1f} s ({result.n_read / (t1 - t0):6.0f} rows/s) | "
            f"pairs+sample {t2 - t1:4.1f} s | total {t2 - t0:6.1f} s (goal ≤ 30) | kept {len(result.instructions)} "
            f"| sampled {len(made.pairs)} | peak RSS {mem.peak / 2**20:.0f} MB incl. workers (goal ≤ 1024)"
        )
        del result, made


def _floor_one(args: tuple[str, str, int]) -> int:
    """The floor's unit of work: decode, crop a fixed ~10 % box, resize back, encode — nothing else."""
    src, dst, i = args
    with Image.open(src) as im:
        w, h = im.size
        cw, ch = int(w * 0.32), int(h * 0.32)
        x, y = (i * 7) % (w - cw), (i * 5) % (h - ch)
        out = im.convert("RGB").crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)
    out.save(dst, format="JPEG", quality=95, subsampling=0)
    return 1


def _floor(images: list[Path], out: Path, procs: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(str(p), str(out / f"{i}.jpg"), i) for i, p in enumerate(images)]
    t0 = time.perf_counter()
    if procs == 1:
        for t in tasks:
            _floor_one(t)
    else:
        with ProcessPoolExecutor(procs) as ex:
            list(ex.map(_floor_one, tasks, chunksize=64))
    return len(images) / (time.perf_counter() - t0)


def bench_corruption(root: Path, n_images: int, repeats: int = 3) -> None:
    """(b): the corruption stage vs the floor, on 1 process and on every core; medians of ``repeats``."""
    images = sorted((root / "merged_images").glob("*.jpg"))[:n_images]
    samples = [(p.stem, f"merged_images/{p.name}") for p in images]
    cores = len(os.sched_getaffinity(0))
    for procs in sorted({1, cores}):
        floor, stage = [], []
        for r in range(repeats):
            floor.append(_floor(images, root / f"floor{r}", procs))
            cfg = corruption.CorruptionConfig(strategy="crop_1_20", workers=procs)
            t0 = time.perf_counter()
            corruption.corrupt_images(samples, root, root / f"stage{r}", cfg)
            stage.append(len(samples) / (time.perf_counter() - t0))
        f, s = statistics.median(floor), statistics.median(stage)
        print(
            f"(b) {procs} process(es), {len(images)} images 512x384: floor {f:7.0f} img/s | corrupted_images "
            f"{s:7.0f} img/s (manifest, hashes, preview, atomic rename included) | ratio {s / f:.2f} (goal ≥ 0.8)"
        )


def main() -> None:
    """Run (a) and (b) in a temporary directory and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=80_000, help="instructions in the synthetic jsonl")
    ap.add_argument("--sample", type=int, default=10_000, help="pairs to sample")
    ap.add_argument("--images", type=int, default=2000, help="images for the corruption benchmark")
    ap.add_argument("--modes", default="none,header,full", help="image-check modes to time in (a)")
    ap.add_argument("--skip", choices=["a", "b"], help="skip one part")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        t0 = time.perf_counter()
        size = make_vlfeedback(tmp / "raw", args.rows)
        print(f"synthetic VLFeedback: {args.rows} rows, {size / 1e6:.0f} MB jsonl "
              f"({size / args.rows / 1e3:.1f} KB/row), made in {time.perf_counter() - t0:.1f} s; "
              f"{len(os.sched_getaffinity(0))} cores")  # fmt: skip
        if args.skip != "a":
            bench_ingest(tmp / "raw", args.modes.split(","), args.sample)
        if args.skip != "b":
            bench_corruption(tmp / "raw", args.images)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
