"""Seeded corrupted images for mDPO's conditional term (paper Table 3; docs/method.md, "Corruption").
PIL and numpy only.

The public mDPO code draws a new crop at every forward call, so policy and reference see different
images. Here each corrupted image is drawn once from ``random.Random(stable_seed(seed, strategy, id))``
and stored: policy, reference and every epoch see the same pixels, and a rerun gives the same bytes.

Sources are read with ``images.load_rgb``, the view training sees (upright, 8-bit RGB). A sample is
quarantined, not fatal, when its image cannot be read (missing, not an image, undecodable, too large, an
unsupported pixel mode: the ingest reasons) or when a crop strategy cannot keep a share of its area within
the strategy's bounds, ``CROP_SCALES`` widened by a rounding slack of at most ``CROP_AREA_SLACK`` and a tenth
of each bound (``crop_area_bounds``, exactly what the corruption gate accepts): such an image (a long strip, a
few pixels) is too small or too elongated for the crop range, and torchvision's central fallback would store a
crop outside the range; the crop recorded for it is the nearest any box allows. Quarantined samples get no image
and no manifest row; ``quarantine.parquet`` and the summary's ``n_read`` / ``n_quarantined`` /
``quarantined_by_reason`` list them, and are written only when there is at least one, so a clean set's files are
unchanged. Failures to write output still abort the whole set.

Strategy ``counterfactual`` is SymMPO's (NeurIPS 2025, arXiv 2506.11712): its symmetric preference sets the image
m against a *contrasting* image m' (the same scene with one object swapped for a look-alike), and y, the answer for
m, against y', m''s own correct answer. Nothing here can make m' from m's pixels, so the strategy takes a provider
(``CounterfactualProvider``): ShapeWorld renders m' and rewrites y (shapeworld/counterfactual.py), real data reads
them from a file (``CounterfactualFile``, params.yaml:corrupted_images.counterfactual_path). The manifest's
``corrupted_image`` is then m' and its ``contrast_answer`` is y' (null for every other strategy); an instruction the
provider has nothing for is quarantined as ``no_counterfactual``.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from tqdm import tqdm

from mdpo_pipeline.core.errors import clip, shown
from mdpo_pipeline.core.images import DEFAULT_MAX_PIXELS, ImageError, load_rgb, resolve_image_path
from mdpo_pipeline.core.io import (
    atomic_dir,
    atomic_path,
    canonical_json,
    sha256_file,
    stable_seed,
    write_json,
    write_parquet,
)
from mdpo_pipeline.core.parallel import available_cores, worker_context
from mdpo_pipeline.core.schemas import QuarantineReason

STRATEGIES = ("crop_1_20", "crop_20_50", "random_image", "moco_v2", "diffusion_noise", "counterfactual")
#: Why strategy counterfactual cannot run on its own, and where each kind of data gets what it needs.
COUNTERFACTUAL_NEEDS = (
    "strategy 'counterfactual' makes nothing from the image itself: it needs SymMPO's contrasting image and its "
    "answer per instruction: ShapeWorld renders them; for real data set corrupted_images.counterfactual_path"
)
#: The fields of each counterfactual_path row.
COUNTERFACTUAL_FIELDS = ("id", "image", "answer")
#: Kept-area bounds of the crop strategies (paper Table 3; docs/method.md, "Corruption": the default keeps 1-20 %).
CROP_SCALES = {"crop_1_20": (0.01, 0.20), "crop_20_50": (0.20, 0.50)}
#: Tolerance on CROP_SCALES for integer pixel rounding; the corruption gate (quality.py) allows the same
#: (``crop_area_bounds``).
CROP_AREA_SLACK = 0.02
#: The slack never widens a bound by more than this share of the bound itself. A flat 0.02 below crop_1_20's 1 %
#: made the lower bound negative, so every crop passed it: the 1x1 central crop of a 1x20000 strip keeps 0.005 %.
#: A tenth keeps every other bound as it was (0.02 is at most a tenth of 0.2 and 0.5) and puts crop_1_20's at 0.9 %.
CROP_SLACK_SHARE = 0.1
MOCO_CROP_SCALE = (0.2, 1.0)
#: RandomResizedCrop's default aspect-ratio range, sampled log-uniformly.
ASPECT_RANGE = (3 / 4, 4 / 3)
_CROP_TRIES = 10
_POOL_TRIES = 10  # random_image: draws of another image before giving up on unreadable ones

#: image_format -> (PIL format, file extension, encoder options). Fixed options give deterministic bytes.
FORMATS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "jpeg": ("JPEG", "jpg", {"quality": 95, "subsampling": 0, "optimize": False}),
    "png": ("PNG", "png", {}),
}

MANIFEST_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source_image", pa.string()),  # relative to the image root
        ("corrupted_image", pa.string()),  # relative to the output directory
        ("strategy", pa.string()),
        ("seed", pa.int64()),
        ("params", pa.string()),  # canonical JSON of exactly what was done
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("contrast_answer", pa.string()),  # counterfactual: y', the correct answer for corrupted_image; else null
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source_image", pa.string()),  # relative to the image root
        ("reason", pa.string()),  # a QuarantineReason value
        ("detail", pa.string()),
    ]
)

PREVIEW_CELL = 128
PREVIEW_LABEL_HEIGHT = 16

#: Called with the sample's rng, returns (id of another image, that image as RGB); never the sample's own.
PoolLookup = Callable[[random.Random], tuple[str, Image.Image]]

#: Strategy counterfactual's source (SymMPO, arXiv 2506.11712): sample (instruction) id -> (the contrasting image m'
#: in RGB, its correct answer y', JSON-serialisable params saying how they were made); raises NoCounterfactual to
#: quarantine the sample. It runs in the worker processes, so it must pickle (a module-level class or function).
CounterfactualProvider = Callable[[str], tuple[Image.Image, str, dict[str, Any]]]


class CorruptionError(RuntimeError):
    """A sample whose image could not be read, corrupted or written."""


class NoCounterfactual(Exception):
    """Raised by a counterfactual provider for an instruction it has no contrasting image and answer for (no
    contrast record, no row, a chosen answer that does not name the object swapped): the sample is quarantined as
    ``no_counterfactual``, like an unreadable image, not fatal. The message is the quarantine detail."""


class CounterfactualError(ValueError):
    """A counterfactual source that cannot be used (a malformed row of counterfactual_path, an unreadable contrasting
    image), with the file and line named: an error, not a quarantine, since the file is the user's to fix."""


@dataclass(frozen=True)
class CorruptionConfig:
    """How corrupted images are made (params.yaml: corrupted_images)."""

    strategy: str = "crop_1_20"  # one of STRATEGIES; crop_1_20 is the paper's best
    seed: int = 0  # with the strategy and sample id, fixes every random draw
    workers: int = 0  # worker processes; 0 = all available cores
    image_format: str = "jpeg"  # "jpeg" (quality 95, 4:4:4) or "png" (lossless)
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # refuse larger inputs before decoding them
    counterfactual_path: str | None = None  # strategy counterfactual on real data: JSONL of {id, image, answer} rows

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {shown(self.strategy)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {shown(self.seed)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (0 = all cores), got {shown(self.workers)}")
        if self.image_format not in FORMATS:
            raise ValueError(f"image_format must be one of {sorted(FORMATS)}, got {shown(self.image_format)}")
        if isinstance(self.max_image_pixels, bool) or not isinstance(self.max_image_pixels, int) or (
            self.max_image_pixels < 1
        ):
            raise ValueError(f"max_image_pixels must be a positive integer, got {shown(self.max_image_pixels)}")
        if self.counterfactual_path is not None:
            if not isinstance(self.counterfactual_path, str) or not self.counterfactual_path.strip():
                got = shown(self.counterfactual_path)
                raise ValueError(f"counterfactual_path must be a file path or null, got {got}")
            if self.strategy != "counterfactual":
                # Read by no other strategy: a path set beside another one would be silently ignored.
                raise ValueError(
                    f"counterfactual_path is read only by strategy 'counterfactual' (SymMPO's contrasting images), "
                    f"not {self.strategy!r}: remove it or set strategy: counterfactual")


@dataclass
class CorruptionResult:
    """Manifest rows and summary as written, plus timing (kept out of the files so they stay reproducible)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float
    workers: int
    quarantine: list[dict[str, Any]] = field(default_factory=list)  # QUARANTINE_SCHEMA rows, by sample id

    @property
    def n_read(self) -> int:
        """Samples given: each one either has a manifest row or is quarantined."""
        return len(self.rows) + len(self.quarantine)

    @property
    def images_per_second(self) -> float:
        """Throughput of the whole call, file writes included."""
        return len(self.rows) / self.seconds if self.seconds > 0 else float("inf")


def corruption_rng(sample_id: str, strategy: str, seed: int) -> random.Random:
    """The one generator behind a sample's corrupted image."""
    return random.Random(stable_seed(seed, strategy, sample_id))


def crop_area_bounds(scale: tuple[float, float]) -> tuple[float, float]:
    """The kept-area shares a crop drawn for ``scale`` may have: each bound widened by the rounding slack, which is
    at most CROP_SLACK_SHARE of that bound (rounded as ``area_fraction`` is, so both compare exactly)."""
    lo, hi = scale
    return (round(lo - min(CROP_AREA_SLACK, CROP_SLACK_SHARE * lo), 6),
            round(hi + min(CROP_AREA_SLACK, CROP_SLACK_SHARE * hi), 6))


def crop_area_ok(area_fraction: float, scale: tuple[float, float]) -> bool:
    """Whether a crop keeping ``area_fraction`` (as ``_box`` records it) lies within ``crop_area_bounds(scale)``."""
    lo, hi = crop_area_bounds(scale)
    return lo <= area_fraction <= hi


def sample_crop(
    width: int, height: int, scale: tuple[float, float], rng: random.Random, ratio: tuple[float, float] = ASPECT_RANGE
) -> dict[str, Any]:
    """A crop box with torchvision RandomResizedCrop.get_params semantics, including its central fallback.

    Two differences, both only on images of a few pixels or long strips: a draw whose pixel rounding takes the kept
    area outside ``crop_area_bounds(scale)`` is redrawn, like a box that does not fit; and when the central fallback
    is outside them too, the fallback is the central box (within the ratio range, as rounded) nearest to them.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for attempt in range(1, _CROP_TRIES + 1):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height and crop_area_ok(round(w * h / area, 6), scale):
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            return _box(x, y, w, h, area, attempt, fallback=False)
    # No draw fit (very elongated or tiny image): the largest central crop within the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    if not crop_area_ok(round(w * h / area, 6), scale):
        w, h = _nearest_box(width, height, scale, ratio, (w, h))
    return _box((width - w) // 2, (height - h) // 2, w, h, area, _CROP_TRIES, fallback=True)


def _nearest_box(
    width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float], fallback: tuple[int, int]
) -> tuple[int, int]:
    """The (w, h) within the ratio range (as pixel rounding gives it) whose kept area is nearest to the bounds, the
    largest of those within them; ``fallback`` unless another is strictly nearer.

    A box outside the bounds is still returned: the caller quarantines the sample, and the record shows the crop
    that came closest, so "no crop fits" is visibly true of the image rather than of an unlucky draw."""
    area = width * height
    lo, hi = crop_area_bounds(scale)

    def distance(w: int, h: int) -> float:
        share = round(w * h / area, 6)
        return max(lo - share, share - hi, 0.0)

    best, best_key = fallback, (distance(*fallback), -fallback[0] * fallback[1])
    for h in range(1, height + 1):
        w_min, w_max = max(1, round(h * ratio[0])), min(width, round(h * ratio[1]))
        if w_min > w_max:
            if w_min > width:  # taller boxes need wider ones still
                break
            continue
        # The widest box of this height within the upper bound, else the narrowest (all are above it); its
        # neighbours too, since the float division may land one pixel off the rounded bound.
        widest = math.floor(hi * area / h)
        for w in {min(w_max, max(w_min, widest + d)) for d in (-1, 0, 1)}:
            key = (distance(w, h), -w * h)
            if key < best_key:
                best, best_key = (w, h), key
    return best


def _box(x: int, y: int, w: int, h: int, area: int, tries: int, fallback: bool) -> dict[str, Any]:
    # Fractions come from the integer box actually used, not the draw, so they can be re-checked.
    return {
        "box": [x, y, w, h],
        "area_fraction": round(w * h / area, 6),
        "aspect": round(w / h, 6),
        "tries": tries,
        "fallback": fallback,
    }


def crop_out_of_bounds(strategy: str, params: dict[str, Any]) -> bool:
    """True when a crop strategy's recorded crop keeps a share of the area outside ``crop_area_bounds``."""
    if strategy not in CROP_SCALES:
        return False
    return not crop_area_ok(params["area_fraction"], CROP_SCALES[strategy])


def _resized_crop(img: Image.Image, crop: dict[str, Any]) -> Image.Image:
    x, y, w, h = crop["box"]
    # Crop first: resize(box=...) would blend pixels from outside the box into the edges.
    return img.crop((x, y, x + w, y + h)).resize(img.size, Image.Resampling.BILINEAR)


def _adjust_hue(img: Image.Image, factor: float) -> Image.Image:
    """Rotate hue by ``factor`` of a turn (torchvision's PIL adjust_hue)."""
    h, s, v = img.convert("HSV").split()
    # uint8 addition wraps around, which is exactly a rotation of the hue circle.
    shifted = np.asarray(h, dtype=np.uint8) + np.uint8(round(factor * 255) % 256)
    return Image.merge("HSV", (Image.fromarray(shifted), s, v)).convert("RGB")


_JITTER = {
    "brightness": lambda im, f: ImageEnhance.Brightness(im).enhance(f),
    "contrast": lambda im, f: ImageEnhance.Contrast(im).enhance(f),
    "saturation": lambda im, f: ImageEnhance.Color(im).enhance(f),
    "hue": _adjust_hue,
}


def _moco_v2(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """MoCo v2's augmentation, in its order, with the output kept at the input size."""
    crop = sample_crop(img.width, img.height, MOCO_CROP_SCALE, rng)
    out = _resized_crop(img, crop)
    params: dict[str, Any] = dict(crop)
    if rng.random() < 0.8:  # ColorJitter(0.4, 0.4, 0.4, 0.1), its four adjustments in random order
        factors = {
            "brightness": rng.uniform(0.6, 1.4),
            "contrast": rng.uniform(0.6, 1.4),
            "saturation": rng.uniform(0.6, 1.4),
            "hue": rng.uniform(-0.1, 0.1),
        }
        order = list(factors)
        rng.shuffle(order)
        for name in order:
            out = _JITTER[name](out, factors[name])
        params["jitter"] = {"order": order} | {k: round(v, 6) for k, v in factors.items()}
    else:
        params["jitter"] = None
    params["grayscale"] = rng.random() < 0.2
    if params["grayscale"]:
        out = out.convert("L").convert("RGB")  # three equal channels, as RandomGrayscale keeps them
    params["blur_sigma"] = round(rng.uniform(0.1, 2.0), 6) if rng.random() < 0.5 else None
    if params["blur_sigma"] is not None:
        out = out.filter(ImageFilter.GaussianBlur(radius=params["blur_sigma"]))
    params["hflip"] = rng.random() < 0.5
    if params["hflip"]:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out, params


#: diffusion_noise: the forward diffusion process at step DIFFUSION_STEP of DIFFUSION_STEPS, with the sigmoid β
#: schedule of Visual Contrastive Decoding (Leng et al., CVPR 2024, §3.2), which CHiP (ICLR 2025) uses for the
#: rejected image of its visual preference: β_t = 1e-5 + (5e-3 − 1e-5)·σ(linspace(−6, 6, 1000)_t), step 500.
DIFFUSION_STEPS, DIFFUSION_STEP = 1000, 500


def diffusion_alpha_bar(step: int = DIFFUSION_STEP) -> float:
    """ᾱ_t = Π_{s<=t} (1 − β_s) of the DIFFUSION_STEPS schedule: the share of the image's signal variance kept."""
    x = np.linspace(-6.0, 6.0, DIFFUSION_STEPS)
    betas = 1e-5 + (5e-3 - 1e-5) / (1.0 + np.exp(-x))
    return float(np.prod(1.0 - betas[: step + 1]))


def _diffusion_noise(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, ε ~ N(0, I) seeded from ``rng``, on the pixels scaled to [−1, 1] and stored as
    8-bit RGB. VCD and CHiP noise the processor's normalised tensor; noising the stored pixels instead keeps one
    corrupted image for every model, as the other strategies do (the noise level differs by the normaliser's scale)."""
    alpha_bar = diffusion_alpha_bar()
    seed = rng.getrandbits(63)
    x0 = np.asarray(img, dtype=np.float64) / 127.5 - 1.0
    noise = np.random.default_rng(seed).standard_normal(x0.shape)
    xt = math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * noise
    out = np.clip(np.rint((xt + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB"), {"step": DIFFUSION_STEP, "alpha_bar": round(alpha_bar, 6), "noise_seed": seed}


def corrupt(
    img: Image.Image, strategy: str, rng: random.Random, pool_lookup: PoolLookup | None = None
) -> tuple[Image.Image, dict[str, Any]]:
    """Corrupt one RGB image at its own size; return it with JSON-serialisable params recording every draw."""
    if strategy in CROP_SCALES:
        crop = sample_crop(img.width, img.height, CROP_SCALES[strategy], rng)
        return _resized_crop(img, crop), crop
    if strategy == "moco_v2":
        return _moco_v2(img, rng)
    if strategy == "diffusion_noise":
        return _diffusion_noise(img, rng)
    if strategy == "random_image":
        if pool_lookup is None:
            raise ValueError("strategy 'random_image' needs a pool_lookup of other images")
        other_id, other = pool_lookup(rng)
        params = {"other_image": other_id, "other_size": list(other.size)}
        # Same size as the original, so every strategy yields a drop-in replacement image.
        return (other if other.size == img.size else other.resize(img.size, Image.Resampling.BILINEAR)), params
    if strategy == "counterfactual":
        raise ValueError(f"{COUNTERFACTUAL_NEEDS} (corrupt_images' counterfactual provider), not one image")
    raise ValueError(f"unknown corruption strategy {strategy!r}; expected one of {STRATEGIES}")


# --- strategy counterfactual: SymMPO's contrasting image and answer from a file ------------------------------------


@dataclass(frozen=True)
class CounterfactualFile:
    """SymMPO's (arXiv 2506.11712) contrasting images for real data, read from params.yaml's counterfactual_path.

    A JSONL file, one row per instruction: ``{"id": instruction id, "image": m' as a path relative to the file's
    folder, "answer": y', the correct answer for m'}``; other keys are ignored, blank lines skipped. Real photos have
    no renderer to swap an object, so someone (an editing model, a person) has to make m' and y'; this file is where
    they come in. Every row is checked when the file is read (``read``), before any image is written: a missing or
    mistyped field, a path outside the folder, an absent file or a repeated id is a CounterfactualError naming the
    file and line. An instruction with no row is quarantined (``no_counterfactual``); one whose image cannot be
    decoded stops the run, naming the row, since the file is the user's to fix.
    """

    path: str
    rows: dict[str, tuple[int, str, str]]  # instruction id -> (line, image relative to the file's folder, answer)
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def read(cls, path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> CounterfactualFile:
        """Read and check every row of ``path``; raise CounterfactualError naming the file (and line) on any fault."""
        path = Path(path)
        folder = path.parent
        rows: dict[str, tuple[int, str, str]] = {}
        try:
            f = path.open("rb")
        except OSError as e:
            raise CounterfactualError(f"{path}: cannot read the counterfactual file ({e.strerror or e})") from None
        with f:
            for n, raw in enumerate(f, start=1):
                where = f"{path}:{n}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CounterfactualError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
                text = text.removeprefix("\ufeff") if n == 1 else text
                if not text.strip():
                    continue
                rows_id, rel, answer = _counterfactual_row(text, where, folder)
                if rows_id in rows:
                    raise CounterfactualError(
                        f"{where}: duplicate id {shown(rows_id)}, first on line {rows[rows_id][0]}: one contrasting "
                        "image per instruction")
                rows[rows_id] = (n, rel, answer)
        if not rows:
            raise CounterfactualError(
                f"{path}: no rows; expected one JSON object per line with {COUNTERFACTUAL_FIELDS}")
        return cls(str(path), rows, max_pixels)

    def __call__(self, sample_id: str) -> tuple[Image.Image, str, dict[str, Any]]:
        """The row's image (as training sees it: upright RGB) and answer; NoCounterfactual when there is no row."""
        if sample_id not in self.rows:
            raise NoCounterfactual(f"{self.path} has no row for this instruction")
        line, rel, answer = self.rows[sample_id]
        file = os.path.join(os.path.dirname(self.path), rel)
        try:
            img = load_rgb(file, self.max_pixels)
            digest = sha256_file(file)
        except (ImageError, OSError) as e:
            detail = e.detail if isinstance(e, ImageError) else f"{type(e).__name__}: {e}"
            raise CounterfactualError(f"{self.path}:{line}: image {shown(rel)}: {detail}") from None
        # The input's own hash: a replaced file changes the record even where its re-encoded bytes would not.
        return img, answer, {"source": "file", "line": line, "image": rel, "image_sha256": digest}


def _counterfactual_row(text: str, where: str, folder: Path) -> tuple[str, str, str]:
    """(id, image, answer) of one counterfactual_path line, each checked; CounterfactualError naming ``where``."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise CounterfactualError(f"{where}: not valid JSON ({e.msg}): {shown(text.strip())}") from None
    if not isinstance(row, dict):
        raise CounterfactualError(f"{where}: expected a JSON object with {COUNTERFACTUAL_FIELDS}, got {shown(row)}")
    missing = [k for k in COUNTERFACTUAL_FIELDS if k not in row]
    if missing:
        raise CounterfactualError(
            f"{where}: missing {', '.join(missing)}; each row is {{\"id\": the instruction id, \"image\": the "
            f"contrasting image, relative to {folder}, \"answer\": the correct answer for that image}}")
    for k in COUNTERFACTUAL_FIELDS:
        if not isinstance(row[k], str) or not row[k].strip():
            raise CounterfactualError(f"{where}: {k} must be a non-empty string, got {shown(row[k])}")
    try:
        resolved = resolve_image_path(folder, row["image"])
    except ImageError as e:
        raise CounterfactualError(f"{where}: {clip(e.detail)}") from None
    if not resolved.is_file():
        raise CounterfactualError(f"{where}: image {shown(row['image'])} not found at {resolved}")
    return row["id"], row["image"], row["answer"]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def image_filename(sample_id: str, ext: str) -> str:
    """A file name for ``sample_id``: kept as is when safe, else sanitized plus a hash so ids cannot collide."""
    if not sample_id:
        raise ValueError("sample ids must be non-empty")
    safe = _UNSAFE.sub("_", sample_id)[:100]
    if safe.startswith("."):  # no hidden files, and never "." or ".."
        safe = "_" + safe[1:]
    if safe != sample_id:
        safe = f"{safe}-{hashlib.sha256(sample_id.encode()).hexdigest()[:12]}"
    return f"{safe}.{ext}"


@dataclass(frozen=True)
class _Job:
    """What every worker needs, sent once per worker process rather than with every chunk."""

    root: str  # plain strings: os.path.join is several times cheaper than pathlib per image
    images_dir: str
    strategy: str
    seed: int
    image_format: str
    max_pixels: int
    pool: tuple[str, ...]  # sorted distinct source images, for random_image
    counterfactual: CounterfactualProvider | None = None  # for counterfactual: instruction id -> (m', y', params)


def _pool_lookup(job: _Job, own: str) -> PoolLookup:
    own_idx = bisect.bisect_left(job.pool, own)

    def lookup(rng: random.Random) -> tuple[str, Image.Image]:
        # Draw among the n-1 others and step over our own slot: uniform and never the sample's own image.
        # An unreadable other image is skipped by drawing again, so one bad file cannot take down the
        # samples that happen to pick it; the draws stay a function of the seed and the files.
        for _ in range(_POOL_TRIES):
            j = rng.randrange(len(job.pool) - 1)
            other = job.pool[j + (j >= own_idx)]
            try:
                return other, load_rgb(os.path.join(job.root, other), job.max_pixels)
            except ImageError as e:
                last = e
        raise ImageError(last.reason, f"no readable other image in {_POOL_TRIES} draws; last: {last.detail}")

    return lookup


#: _process results: (sample_id, sha256, width, height, params, contrast_answer) kept; (sample_id, reason, detail)
#: quarantined.
_Kept = tuple[str, str, int, int, str, str | None]
_Quarantined = tuple[str, str, str]


def _provided(provider: CounterfactualProvider, sample_id: str) -> tuple[Image.Image, str, dict[str, Any]]:
    """The provider's (m', y', params) for ``sample_id``, checked against CounterfactualProvider's contract."""
    out = provider(sample_id)
    if not isinstance(out, tuple) or len(out) != 3:
        raise TypeError(f"the counterfactual provider must return (image, answer, params), got {shown(out)}")
    img, answer, params = out
    if not isinstance(img, Image.Image) or img.mode != "RGB":
        raise TypeError(f"the contrasting image must be an RGB PIL image, got {shown(img)}")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"the contrasting image's answer must be a non-empty string, got {shown(answer)}")
    if not isinstance(params, dict):
        raise TypeError(f"the counterfactual params must be a dict, got {shown(params)}")
    return img, answer, params


def _process(job: _Job, chunk: Sequence[tuple[str, str, str]]) -> tuple[list[_Kept], list[_Quarantined]]:
    """Decode, corrupt, encode and write each sample; return only small per-sample records."""
    fmt, _, options = FORMATS[job.image_format]
    kept: list[_Kept] = []
    quarantined: list[_Quarantined] = []
    for sample_id, rel, name in chunk:
        answer = None
        try:
            # Counterfactual reads the original too: m must be readable for SymMPO's pair (m, m') to exist.
            img = load_rgb(os.path.join(job.root, rel), job.max_pixels)
            if job.strategy != "counterfactual":
                lookup = _pool_lookup(job, rel) if job.strategy == "random_image" else None
                rng = corruption_rng(sample_id, job.strategy, job.seed)
                corrupted, params = corrupt(img, job.strategy, rng, lookup)
        except ImageError as e:  # the input's fault: this sample only
            quarantined.append((sample_id, e.reason.value, e.detail))
            continue
        except Exception as e:  # anything else is a bug or the machine: stop, naming the sample
            raise CorruptionError(f"sample {sample_id!r} ({rel}): {type(e).__name__}: {e}") from e
        if job.strategy == "counterfactual":
            assert job.counterfactual is not None, "corrupt_images checks the provider"
            try:
                corrupted, answer, params = _provided(job.counterfactual, sample_id)
            except NoCounterfactual as e:  # nothing to contrast with for this instruction: this sample only
                quarantined.append((sample_id, QuarantineReason.NO_COUNTERFACTUAL.value, str(e)))
                continue
            except Exception as e:  # an unusable m' (an unreadable file row) or a provider bug: stop, naming both
                detail = f"{type(e).__name__}: {clip(str(e))}"
                raise CorruptionError(f"sample {sample_id!r}: counterfactual: {detail}") from e
        if crop_out_of_bounds(job.strategy, params):
            lo, hi = crop_area_bounds(CROP_SCALES[job.strategy])
            _, _, w, h = params["box"]
            detail = (
                f"{img.width}x{img.height} image: the crop ({w}x{h}, fallback={params['fallback']}) keeps "
                f"{params['area_fraction']:g} of the area, outside [{lo:g}, {hi:g}] (the strategy's range with its "
                f"rounding slack): too small or too elongated for {job.strategy}"
            )
            quarantined.append((sample_id, QuarantineReason.CROP_OUT_OF_BOUNDS.value, detail))
            continue
        try:
            buf = io.BytesIO()
            corrupted.save(buf, fmt, **options)
            data = buf.getbuffer()
            with open(os.path.join(job.images_dir, name), "wb") as f:
                f.write(data)
        except Exception as e:  # encoders and the file system raise many types; name the sample whatever it was
            raise CorruptionError(f"sample {sample_id!r} ({rel}): {type(e).__name__}: {e}") from e
        kept.append((sample_id, hashlib.sha256(data).hexdigest(), *corrupted.size, canonical_json(params), answer))
    return kept, quarantined


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _process_in_worker(chunk: Sequence[tuple[str, str, str]]) -> tuple[list[_Kept], list[_Quarantined]]:
    assert _WORKER_JOB is not None, "worker used without _init_worker"
    return _process(_WORKER_JOB, chunk)


def _run(
    job: _Job, tasks: list[tuple[str, str, str]], workers: int, progress: bool
) -> tuple[list[_Kept], list[_Quarantined]]:
    # ~8 chunks per worker balance the load; the cap keeps the progress bar moving on large sets.
    size = max(8, min(256, math.ceil(len(tasks) / (workers * 8))))
    chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    kept: list[_Kept] = []
    quarantined: list[_Quarantined] = []
    with tqdm(total=len(tasks), unit="img", desc=f"corrupt {job.strategy}", disable=not progress) as bar:
        if workers <= 1 or len(chunks) == 1:
            for chunk in chunks:
                k, q = _process(job, chunk)
                kept += k
                quarantined += q
                bar.update(len(chunk))
        else:
            ctx = worker_context()
            if ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload([__name__])
            with ProcessPoolExecutor(
                min(workers, len(chunks)), mp_context=ctx, initializer=_init_worker, initargs=(job,)
            ) as pool:
                futures = {pool.submit(_process_in_worker, chunk): len(chunk) for chunk in chunks}
                try:
                    for fut in as_completed(futures):
                        k, q = fut.result()
                        kept += k
                        quarantined += q
                        bar.update(futures[fut])
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # fail now, not after every queued chunk has run
                    raise
    return sorted(kept), sorted(quarantined)


def _check_samples(samples: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    items = sorted((str(sid), str(rel)) for sid, rel in samples)
    if not items:
        raise ValueError("no samples to corrupt")
    for (a, _), (b, _) in zip(items, items[1:]):
        if a == b:
            raise ValueError(f"duplicate sample id {a!r}: one corrupted image per sample")
    for sid, rel in items:
        # Containment was verified at ingest; this cheap lexical check keeps a hand-made list honest too.
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts:
            raise ValueError(f"sample {sid!r}: image path {rel!r} must be relative and inside the image root")
    return items


def corrupt_images(
    samples: Sequence[tuple[str, str]],
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: CorruptionConfig,
    progress: bool = False,
    counterfactual: CounterfactualProvider | None = None,
) -> CorruptionResult:
    """Write one corrupted image per (sample_id, relative image path), a manifest, summary and preview.

    ``out_dir`` is replaced whole and atomically; the bytes do not depend on the worker count. Strategy
    counterfactual writes the provider's contrasting image instead and its answer as ``contrast_answer``; without
    ``counterfactual`` it reads ``cfg.counterfactual_path`` (relative to the working directory), and with neither it
    refuses before any work.
    """
    counterfactual = _counterfactual_source(cfg, counterfactual, workers=cfg.workers or available_cores())
    items = _check_samples(samples)
    _, ext, _ = FORMATS[cfg.image_format]
    names = [image_filename(sid, ext) for sid, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("two sample ids map to the same image file name")
    pool = tuple(sorted({rel for _, rel in items})) if cfg.strategy == "random_image" else ()
    if cfg.strategy == "random_image" and len(pool) < 2:
        raise ValueError("strategy 'random_image' needs at least two distinct source images")
    workers = cfg.workers or available_cores()
    root = Path(image_root)
    start = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        job = _Job(str(root), str(tmp / "images"), cfg.strategy, cfg.seed, cfg.image_format, cfg.max_image_pixels, pool,
                   counterfactual)
        tasks = [(sid, rel, name) for (sid, rel), name in zip(items, names)]
        kept, quarantined = _run(job, tasks, workers, progress)
        task_of = {sid: (rel, name) for sid, rel, name in tasks}
        rows = [
            {
                "sample_id": sid,
                "source_image": task_of[sid][0],
                "corrupted_image": f"images/{task_of[sid][1]}",
                "strategy": cfg.strategy,
                "seed": cfg.seed,
                "params": params,
                "sha256": sha,
                "width": w,
                "height": h,
                "contrast_answer": answer,
            }
            for sid, sha, w, h, params, answer in kept
        ]
        quarantine = [
            {"sample_id": sid, "source_image": task_of[sid][0], "reason": reason, "detail": detail}
            for sid, reason, detail in quarantined
        ]
        if len(rows) + len(quarantine) != len(tasks):
            raise AssertionError(
                f"corruption lost samples: {len(rows)} kept + {len(quarantine)} quarantined != {len(tasks)} read"
            )
        if not rows:
            raise CorruptionError(
                f"all {len(tasks)} samples were quarantined ({_by_reason(quarantine)}), e.g. "
                f"{quarantine[0]['sample_id']!r}: {quarantine[0]['detail']}; is the image root {root} right?"
            )
        write_parquet(rows, tmp / "manifest.parquet", MANIFEST_SCHEMA)
        if quarantine:  # absent when empty: a clean set's files stay exactly what they were
            write_parquet(quarantine, tmp / "quarantine.parquet", QUARANTINE_SCHEMA)
        preview_grid(rows, root, tmp, tmp / "preview.png")
        summary = _summary(rows, quarantine, cfg)
        write_json(summary, tmp / "summary.json")
    return CorruptionResult(rows, summary, time.perf_counter() - start, workers, quarantine)


def _counterfactual_source(
    cfg: CorruptionConfig, provider: CounterfactualProvider | None, workers: int
) -> CounterfactualProvider | None:
    """The provider strategy counterfactual runs with (``cfg.counterfactual_path``'s file when none is given);
    a ValueError, before any work, when it has none or another strategy is given one."""
    if cfg.strategy != "counterfactual":
        if provider is not None:
            raise ValueError(
                f"a counterfactual provider is used only by strategy 'counterfactual', not {cfg.strategy!r}")
        return None
    if provider is None and cfg.counterfactual_path:
        provider = CounterfactualFile.read(cfg.counterfactual_path, cfg.max_image_pixels)
    if provider is None:
        raise ValueError(f"{COUNTERFACTUAL_NEEDS}; no counterfactual provider was given")
    if not callable(provider):
        raise TypeError(f"the counterfactual provider must be callable, got {shown(provider)}")
    if workers > 1:
        try:  # the worker processes get it pickled: say so now rather than from inside the pool
            pickle.dumps(provider)
        except Exception as e:
            raise ValueError(f"the counterfactual provider must pickle to reach the worker processes "
                             f"(a module-level class or function): {type(e).__name__}: {e}") from e
    return provider


def _by_reason(quarantine: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(q["reason"] for q in quarantine)
    order = {r.value: i for i, r in enumerate(QuarantineReason)}
    return {r: counts[r] for r in sorted(counts, key=order.__getitem__)}


def _summary(rows: list[dict[str, Any]], quarantine: list[dict[str, Any]], cfg: CorruptionConfig) -> dict[str, Any]:
    params = [json.loads(r["params"]) for r in rows]
    areas = [p["area_fraction"] for p in params if "area_fraction" in p]
    digest = hashlib.sha256("".join(f"{r['sample_id']}\t{r['sha256']}\n" for r in rows).encode()).hexdigest()
    summary = {
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "image_format": cfg.image_format,
        "n_images": len(rows),
        "images_sha256": digest,  # one fingerprint of the whole set: ids and image bytes
        "fallback_crops": sum(bool(p.get("fallback")) for p in params),
        "area_fraction": (
            {"min": min(areas), "mean": round(sum(areas) / len(areas), 6), "max": max(areas)} if areas else None
        ),
        "files": {"images": "images/", "manifest": "manifest.parquet", "preview": "preview.png"},
    }
    if quarantine:  # only then, so that a clean set's summary keeps its bytes
        summary |= {
            "n_read": len(rows) + len(quarantine),
            "n_quarantined": len(quarantine),
            "quarantined_by_reason": _by_reason(quarantine),
        }
        summary["files"]["quarantine"] = "quarantine.parquet"
    return summary


def _fit(im: Image.Image, cell: int) -> Image.Image:
    scale = min(cell / im.width, cell / im.height)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    # NEAREST keeps 32-64 px images crisp when blown up; shrinking large ones needs a filter.
    return im.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)


def preview_grid(
    manifest_rows: Sequence[dict[str, Any]],
    image_root: str | os.PathLike,
    corrupted_dir: str | os.PathLike,
    path: str | os.PathLike,
    n: int = 8,
) -> Path:
    """A PNG with originals on top and their corrupted images below, each column labelled; returns ``path``."""
    if not manifest_rows:
        raise ValueError("preview_grid needs at least one manifest row")
    # A hash order picks the same samples every time, spread over the whole set rather than its first ids.
    chosen = sorted(manifest_rows, key=lambda r: (stable_seed("preview", r["sample_id"]), r["sample_id"]))[:n]
    chosen.sort(key=lambda r: r["sample_id"])
    cell, label_h = PREVIEW_CELL, PREVIEW_LABEL_HEIGHT
    sheet = Image.new("RGB", (len(chosen) * cell, 2 * cell + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for col, row in enumerate(chosen):
        files = (Path(image_root) / row["source_image"], Path(corrupted_dir) / row["corrupted_image"])
        for r, file in enumerate(files):
            tile = _fit(load_rgb(file), cell)  # the original as corruption and training see it: upright
            sheet.paste(tile, (col * cell + (cell - tile.width) // 2, r * cell + (cell - tile.height) // 2))
        params = json.loads(row["params"])
        if "area_fraction" in params:
            label = f"area {params['area_fraction']:.3f}"
        elif "shown" in params and "absent" in params:  # counterfactual: which object was swapped for which
            label = f"{params['shown']} > {params['absent']}"
        else:
            label = row["strategy"]
        draw.text((col * cell + 4, 2 * cell + 2), label, fill="black")
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)  # a human-only preview: speed over size
    return path
