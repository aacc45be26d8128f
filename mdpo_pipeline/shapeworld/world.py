"""ShapeWorld's objects, scenes and renderer: a closed world whose ground truth is known exactly.

Everything here is a pure function of its inputs (a seeded ``random.Random`` or a Scene), so the
generator that builds on it is byte-for-byte reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from mdpo_pipeline.shapeworld.config import ShapeWorldConfig

# --- vocabulary ---------------------------------------------------------------------------------

#: canonical name -> synonyms. Two-word names ("half moon", "plus sign", "crescent moon") are there
#: so that CHAIR-style matching has to handle two-word phrases before single words.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "disk", "dot"),
    "ellipse": ("oval",),
    "ring": ("donut", "doughnut", "hoop", "annulus"),
    "square": ("box", "block"),
    "diamond": ("rhombus", "lozenge"),
    "bar": ("stripe", "strip", "rectangle"),
    "triangle": ("wedge",),
    "trapezoid": ("trapezium",),
    "hexagon": ("hex",),
    "star": ("pentagram",),
    "cross": ("saltire", "x mark"),
    "plus sign": ("plus", "plus symbol"),
    "heart": ("love heart", "valentine"),
    "arrow": ("pointer",),
    "half moon": ("crescent", "crescent moon", "moon"),
}

_IRREGULAR_PLURALS = {"rhombus": "rhombi", "annulus": "annuli", "trapezium": "trapezia"}


def plural(word: str) -> str:
    """English plural of a (possibly two-word) object name: only the last word is inflected."""
    *head, last = word.split(" ")
    if last in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    else:
        last += "s"
    return " ".join([*head, last])


#: canonical -> {"synonyms": (...), "plurals": {singular: plural} for the canonical name and every synonym}.
VOCABULARY: dict[str, dict] = {
    name: {"synonyms": syns, "plurals": {w: plural(w) for w in (name, *syns)}}
    for name, syns in _SYNONYMS.items()
}

CATEGORIES: tuple[str, ...] = tuple(VOCABULARY)

#: Look-alike pairs (symmetric): at 32–64 px, and worse when small or faint, these are easy to confuse.
LOOKALIKE_PAIRS: tuple[tuple[str, str], ...] = (
    ("circle", "ellipse"),
    ("square", "diamond"),
    ("cross", "plus sign"),
    ("hexagon", "circle"),
    ("triangle", "trapezoid"),
    ("bar", "arrow"),
)
LOOKALIKES: dict[str, tuple[str, ...]] = {
    c: tuple(sorted({b for a, b in LOOKALIKE_PAIRS if a == c} | {a for a, b in LOOKALIKE_PAIRS if b == c}))
    for c in CATEGORIES
}

#: Co-occurrence bias (A -> B): a hallucinating model tends to mention B when A is shown and B is not,
#: the way real VLMs add a "fork" next to a "plate".
COOCCURRENCE: tuple[tuple[str, str], ...] = (
    ("star", "half moon"),
    ("heart", "arrow"),
    ("triangle", "square"),
    ("cross", "circle"),
    ("ring", "diamond"),
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (135, 60, 180),
    "orange": (245, 130, 25),
    "white": (245, 245, 245),
    "cyan": (40, 200, 210),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "dark grey": (72, 72, 76),
    "beige": (176, 160, 130),
    "slate": (88, 100, 120),
    "olive": (110, 112, 84),
}

#: Size class -> range of the object's longer side as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.13, 0.18), "medium": (0.24, 0.30), "large": (0.34, 0.42)}

#: Spatial relations, phrased to the same length so that a relation swap leaves no length cue.
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "directly above", "directly below")
OPPOSITE: dict[str, str] = dict(zip(RELATIONS, (RELATIONS[1], RELATIONS[0], RELATIONS[3], RELATIONS[2])))

_ELONGATION = {"ellipse": 0.55, "bar": 0.3, "arrow": 0.6, "trapezoid": 0.65}  # short side / long side
_LOW_CONTRAST_KEEP = 0.3  # a low-contrast object keeps this much of its colour's distance from the background
_OCCLUDED_SHARE = 0.45  # share of the bbox hidden on one side
_SUPERSAMPLE = 2


def synonym_lines() -> list[str]:
    """The vocabulary as a CHAIR synonym list: one line per category, "canonical, syn1, ..., plurals"."""
    lines = []
    for name, entry in VOCABULARY.items():
        words = [name, *entry["synonyms"]]
        words += [entry["plurals"][w] for w in words]
        lines.append(", ".join(words))
    return lines


def number_word(n: int) -> str:
    """The word for a count, "zero" to "seven" (counts here never exceed max_objects + 1)."""
    return ("zero", "one", "two", "three", "four", "five", "six", "seven")[n]


def head_noun(name: str) -> str:
    """The single-token noun a POS tagger would extract ("half moon" -> "moon"): AMBER's object words."""
    return name.split(" ")[-1]


def article(phrase: str) -> str:
    """'a' or 'an' for the phrase that follows."""
    return "an" if phrase[:1] in "aeiou" else "a"


# --- scenes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One drawn object. ``bbox`` is (x0, y0, x1, y1) as fractions of the image side."""

    category: str
    colour: str
    size: str
    bbox: tuple[float, float, float, float]
    variant: int = 0  # orientation (0–3): arrow direction, bar/ellipse axis, side hidden when occluded
    low_contrast: bool = False
    occluded: bool = False

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the bbox, as fractions of the image side."""
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def position(self) -> str:
        """Coarse position on a 3×3 grid, e.g. "top left", "center", "bottom"."""
        cx, cy = self.center
        col = "left" if cx < 0.36 else "right" if cx > 0.64 else ""
        row = "top" if cy < 0.36 else "bottom" if cy > 0.64 else ""
        return " ".join(p for p in (row, col) if p) or "center"

    @property
    def weak(self) -> bool:
        """True when the visual evidence is weak: small, faint or partly hidden."""
        return self.size == "small" or self.low_contrast or self.occluded

    def to_dict(self) -> dict:
        """JSON form, with the derived position."""
        return {
            "category": self.category,
            "colour": self.colour,
            "size": self.size,
            "bbox": [round(v, 4) for v in self.bbox],
            "position": self.position,
            "variant": self.variant,
            "low_contrast": self.low_contrast,
            "occluded": self.occluded,
        }


@dataclass(frozen=True)
class Scene:
    """Objects on a textured background; ``texture_seed`` fixes the background and sensor noise."""

    objects: tuple[SceneObject, ...]
    background: str
    texture_seed: int

    @property
    def categories(self) -> set[str]:
        """Categories present in the scene."""
        return {o.category for o in self.objects}

    def count(self, category: str) -> int:
        """How many objects of ``category`` the scene holds."""
        return sum(o.category == category for o in self.objects)

    def reading_order(self) -> list[SceneObject]:
        """Objects top to bottom, then left to right: the order descriptions list them in."""
        return sorted(self.objects, key=lambda o: (round(o.center[1], 1), o.center[0]))

    def with_category(self, index: int, category: str) -> Scene:
        """The same scene with object ``index`` redrawn as ``category`` in the same cell, colour and flags."""
        objs = list(self.objects)
        old = objs[index]
        x0, y0, x1, y1 = old.bbox
        box = _tight_box(*old.center, max(x1 - x0, y1 - y0), category, old.variant)
        objs[index] = replace(old, category=category, bbox=box)
        return replace(self, objects=tuple(objs))

    def to_dict(self) -> dict:
        """JSON form."""
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` is relative to ``b`` along the dominant axis, one of RELATIONS."""
    (ax, ay), (bx, by) = a.center, b.center
    if abs(ax - bx) >= abs(ay - by):
        return RELATIONS[0] if ax < bx else RELATIONS[1]
    return RELATIONS[2] if ay < by else RELATIONS[3]


def _tight_box(cx: float, cy: float, long_side: float, category: str, variant: int):
    """The object's box inside its square cell: elongated shapes are narrower, upright for odd variants."""
    short = long_side * _ELONGATION.get(category, 1.0)
    w, h = (short, long_side) if variant % 2 else (long_side, short)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _place_cell(side: float, taken: list[tuple[float, float, float, float]], rng: random.Random):
    """A free square cell of ``side`` (centre x, centre y), or None. Cells, not boxes, must not touch, so
    an object can later be redrawn as another category without overlapping its neighbours."""
    margin, gap = 0.03, 0.03
    for _ in range(60):
        x0 = rng.uniform(margin, 1 - margin - side)
        y0 = rng.uniform(margin, 1 - margin - side)
        box = (x0, y0, x0 + side, y0 + side)
        if all(
            box[2] + gap <= t[0] or t[2] + gap <= box[0] or box[3] + gap <= t[1] or t[3] + gap <= box[1]
            for t in taken
        ):
            return x0 + side / 2, y0 + side / 2
    return None


def _cell(obj: SceneObject) -> tuple[float, float, float, float]:
    (cx, cy), r = obj.center, max(obj.bbox[2] - obj.bbox[0], obj.bbox[3] - obj.bbox[1]) / 2
    return (cx - r, cy - r, cx + r, cy + r)


def _layout(specs: list[tuple], rng: random.Random) -> list[SceneObject] | None:
    """Place objects one by one, each one size class smaller (and finally below "small") until it fits."""
    order = list(SIZES)
    objects: list[SceneObject] = []
    for cat, colour, weak_kind, wanted, variant in specs:
        classes = order[: order.index(wanted) + 1][::-1]
        for side, cls in [(rng.uniform(*SIZES[c]), c) for c in classes] + [(SIZES["small"][0] * 0.6, "small")]:
            if spot := _place_cell(side, [_cell(o) for o in objects], rng):
                break
        else:
            return None
        objects.append(
            SceneObject(
                category=cat,
                colour=colour,
                size=cls,
                bbox=_tight_box(*spot, side, cat, variant),
                variant=variant,
                low_contrast=weak_kind == "low_contrast",
                occluded=weak_kind == "occluded",
            )
        )
    return objects


def sample_scene(
    rng: random.Random,
    cfg: ShapeWorldConfig,
    *,
    n_objects: int | None = None,
    required: tuple[str, ...] = (),
    pool: tuple[str, ...] = CATEGORIES,
    size: str | None = None,
) -> Scene:
    """A random scene: ``required`` categories (repeats allowed) plus distinct others from ``pool``.

    Each object is, with probability ``cfg.weak_evidence_share``, drawn small, faint or partly hidden.
    An object that does not fit is placed one size class smaller and a stuck layout is redone, so the
    object count is always met.
    """
    n = n_objects if n_objects is not None else rng.randint(cfg.min_objects, cfg.max_objects)
    n = max(n, len(required))
    others = [c for c in pool if c not in required]
    rng.shuffle(others)
    cats = list(required) + others[: n - len(required)]
    rng.shuffle(cats)
    order = list(SIZES)
    specs = []
    for cat in cats:
        weak_kind = rng.choice(("small", "low_contrast", "occluded")) if rng.random() < cfg.weak_evidence_share else ""
        wanted = size or ("small" if weak_kind == "small" else rng.choice(order))
        specs.append((cat, rng.choice(tuple(COLOURS)), weak_kind, wanted, rng.randrange(4)))
    for _ in range(20):  # a fresh layout when one gets stuck
        objects = _layout(specs, rng)
        if objects is not None:
            break
    else:  # pragma: no cover - max_objects is capped so that a layout is always found
        raise RuntimeError(f"could not lay out {len(specs)} objects")
    return Scene(objects=tuple(objects), background=rng.choice(tuple(BACKGROUNDS)), texture_seed=rng.getrandbits(63))


def absent_candidates(scene: Scene) -> tuple[list[str], list[str], list[str]]:
    """Absent categories split into (co-occurrence partners of present ones, look-alikes, the rest)."""
    present = scene.categories
    partners = sorted({b for a, b in COOCCURRENCE if a in present and b not in present})
    looks = sorted({lk for c in present for lk in LOOKALIKES[c] if lk not in present and lk not in partners})
    rest = [c for c in CATEGORIES if c not in present and c not in partners and c not in looks]
    return partners, looks, rest


def pick_hallucination(scene: Scene, rng: random.Random, cooccurrence_prob: float) -> str:
    """The absent category a hallucinating model names: the co-occurrence partner with probability
    ``cooccurrence_prob`` when one exists, else a look-alike of a present object, else any absent one."""
    partners, looks, rest = absent_candidates(scene)
    if partners and rng.random() < cooccurrence_prob:
        return rng.choice(partners)
    return rng.choice(looks or rest or partners)


# --- rendering ----------------------------------------------------------------------------------


def _polygon(unit_pts, box, variant: int):
    """Map points given in the unit square (drawn pointing right / upright) into ``box``, turned by variant×90°."""
    x0, y0, x1, y1 = box
    out = []
    for u, v in unit_pts:
        for _ in range(variant):
            u, v = 1 - v, u
        out.append((x0 + u * (x1 - x0), y0 + v * (y1 - y0)))
    return out


def _regular(box, n: int, inner: float | None = None):
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, min(x1 - x0, y1 - y0) / 2
    k = 2 * n if inner else n
    pts = []
    for i in range(k):
        rad = r * (inner if inner and i % 2 else 1.0)
        ang = -math.pi / 2 + 2 * math.pi * i / k
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts


def _draw_mask(draw: ImageDraw.ImageDraw, obj: SceneObject, box) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cat, v = obj.category, obj.variant
    if cat in ("circle", "ellipse"):
        draw.ellipse(box, fill=255)
    elif cat == "ring":
        t = 0.24 * w
        draw.ellipse(box, fill=255)
        draw.ellipse((x0 + t, y0 + t, x1 - t, y1 - t), fill=0)
    elif cat in ("square", "bar"):
        draw.rectangle(box, fill=255)
    elif cat == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255)
    elif cat == "triangle":
        draw.polygon(_polygon([(0.5, 0), (1, 1), (0, 1)], box, v), fill=255)
    elif cat == "trapezoid":
        draw.polygon(_polygon([(0.22, 0), (0.78, 0), (1, 1), (0, 1)], box, v), fill=255)
    elif cat == "hexagon":
        draw.polygon(_regular(box, 6), fill=255)
    elif cat == "star":
        draw.polygon(_regular(box, 5, inner=0.45), fill=255)
    elif cat == "cross":
        width = max(1, round(0.24 * w))
        draw.line([(x0, y0), (x1, y1)], fill=255, width=width)
        draw.line([(x0, y1), (x1, y0)], fill=255, width=width)
    elif cat == "plus sign":
        t = 0.14 * w
        draw.rectangle((cx - t, y0, cx + t, y1), fill=255)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=255)
    elif cat == "heart":
        r = w / 4
        draw.ellipse((x0, y0, cx + 0.02 * w, y0 + 2 * r), fill=255)
        draw.ellipse((cx - 0.02 * w, y0, x1, y0 + 2 * r), fill=255)
        draw.polygon([(x0 + 0.02 * w, y0 + 1.3 * r), (x1 - 0.02 * w, y0 + 1.3 * r), (cx, y1)], fill=255)
    elif cat == "arrow":
        # Unit arrow pointing right; variants 1-3 turn it. The box already has the turned aspect ratio.
        pts = [(0, 0.38), (0.55, 0.38), (0.55, 0), (1, 0.5), (0.55, 1), (0.55, 0.62), (0, 0.62)]
        draw.polygon(_polygon(pts, box, v), fill=255)
    elif cat == "half moon":
        dx, dy = [(0.38, 0), (0, 0.38), (-0.38, 0), (0, -0.38)][v]
        draw.ellipse(box, fill=255)
        draw.ellipse((x0 + dx * w, y0 + dy * h, x1 + dx * w, y1 + dy * h), fill=0)
    else:  # pragma: no cover - the vocabulary and this switch are kept in step by tests
        raise ValueError(f"no drawing for category {cat!r}")
    if obj.occluded:
        # Hide one side with background: the object is partly covered, not a new object. The margin
        # also hides line caps (cross) that stick out of the box.
        s, m = _OCCLUDED_SHARE, 0.2 * max(w, h)
        hide = [
            (x1 - s * w, y0 - m, x1 + m, y1 + m),
            (x0 - m, y1 - s * h, x1 + m, y1 + m),
            (x0 - m, y0 - m, x0 + s * w, y1 + m),
            (x0 - m, y0 - m, x1 + m, y0 + s * h),
        ]
        draw.rectangle(hide[(v + 1) % 4], fill=0)


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as an RGB image of ``size``×``size``: textured background, anti-aliased shapes, noise."""
    gen = np.random.default_rng(scene.texture_seed)
    big = size * _SUPERSAMPLE
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    # Low-frequency blotches plus a gentle gradient make the background realistic for JPEG.
    blotch = Image.fromarray(gen.normal(0, 10, (5, 5)).astype(np.float32)).resize((big, big), Image.Resampling.BILINEAR)
    ramp = np.linspace(-1, 1, big, dtype=np.float32)
    gx, gy = gen.uniform(-10, 10, 2)
    shade = np.asarray(blotch) + gx * ramp[None, :] + gy * ramp[:, None]
    canvas = Image.fromarray(np.clip(bg + shade[..., None], 0, 255).astype(np.uint8))
    for obj in scene.objects:
        mask = Image.new("L", (big, big), 0)
        box = tuple(c * big for c in obj.bbox)
        _draw_mask(ImageDraw.Draw(mask), obj, box)
        colour = np.array(COLOURS[obj.colour], dtype=np.float32)
        if obj.low_contrast:
            colour = bg + (colour - bg) * _LOW_CONTRAST_KEEP
        canvas.paste(tuple(int(round(c)) for c in colour), (0, 0, big, big), mask)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    noisy = small + gen.normal(0, 4.0, small.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
