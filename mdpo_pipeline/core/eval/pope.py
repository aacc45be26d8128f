"""POPE (Li et al. 2023): object-existence yes/no questions ("Is there a {object} in the image?") in three
splits that differ in how the absent objects are drawn — random, popular (most frequent objects), adversarial
(objects that co-occur most with those present).

Scoring follows the official evaluation (AoiDragon/POPE ``evaluate.py``, also LLaVA's ``eval_pope.py``): keep
the answer's first sentence (up to the first "."), drop commas, split on spaces; the answer is "no" when a word is
exactly ``No``, ``no`` or ``not``, else "yes". "yes" is the positive class. Accuracy, precision, recall, F1 and
the yes ratio, per split and over all splits; fractions in [0, 1] (the official script prints them as such).

Files: the official layout, one JSON object per line ``{"question_id", "image", "text", "label"}`` in
``{dataset}_pope_{split}.json`` (e.g. ``coco_pope_random.json``); answers ``{"question_id", "text"}`` per line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
SOURCE = "the POPE repository (github.com/AoiDragon/POPE, output/coco/coco_pope_{split}.json)"
_NEGATIVE_WORDS = frozenset({"No", "not", "no"})


class PopeFileError(FileNotFoundError):
    """A POPE question or answer file that is missing or not in the official layout."""


@dataclass(frozen=True)
class PopeItem:
    """One yes/no question about one image."""

    id: str  #: "{split}-{question_id}": question ids restart in every split file
    split: str
    question_id: int
    image: str
    question: str
    label: str  #: "yes" or "no"


@dataclass(frozen=True)
class PopeMetrics:
    """The official POPE numbers of one split (or all splits pooled)."""

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float

    def as_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def _split_file(root: Path, split: str) -> Path:
    matches = sorted(root.glob(f"*_pope_{split}.json"))
    if not matches:
        raise PopeFileError(f"{root} has no *_pope_{split}.json: POPE's question files come from {SOURCE}")
    if len(matches) > 1:
        raise PopeFileError(f"{root} has several {split} files {[m.name for m in matches]}: keep one dataset per folder")
    return matches[0]


def load_pope(root: str | os.PathLike, splits: Iterable[str] = SPLITS) -> list[PopeItem]:
    """Every question of the given splits from a folder of official POPE files, split by split, in file order."""
    root = Path(root)
    if not root.is_dir():
        raise PopeFileError(f"POPE folder {root} does not exist: its question files come from {SOURCE}")
    items = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown POPE split {split!r}; known: {SPLITS}")
        path = _split_file(root, split)
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                label = str(row["label"]).strip().lower()
                item = PopeItem(f"{split}-{row['question_id']}", split, int(row["question_id"]), str(row["image"]),
                                str(row["text"]), label)
            except (ValueError, KeyError, TypeError) as e:
                raise PopeFileError(f"{path}:{n}: not a POPE question ({{question_id, image, text, label}}): {e}") from e
            if label not in ("yes", "no"):
                raise PopeFileError(f"{path}:{n}: label must be yes or no, got {row['label']!r}")
            items.append(item)
    return items


def parse_answer(text: str) -> str:
    """The official reading of an answer: "no" when its first sentence has the word No, no or not; else "yes"."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if _NEGATIVE_WORDS.intersection(words) else "yes"


def _metrics(pairs: list[tuple[str, str]]) -> PopeMetrics:
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    n = len(pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeMetrics(n, (tp + tn) / n if n else 0.0, precision, recall, f1,
                       sum(p == "yes" for p, _ in pairs) / n if n else 0.0)


def pope_scores(answers: Mapping[str, str], items: list[PopeItem]) -> dict[str, PopeMetrics]:
    """{split: metrics} for the splits present, plus "all" (every answered question pooled).

    Every item needs an answer: a missing one is an error naming it, since the official script would misalign
    answers with labels silently."""
    missing = [it.id for it in items if it.id not in answers]
    if missing:
        raise KeyError(f"{len(missing)} POPE questions have no answer, e.g. {missing[:5]}")
    pairs = {split: [(parse_answer(answers[it.id]), it.label) for it in items if it.split == split] for split in SPLITS}
    out = {split: _metrics(p) for split, p in pairs.items() if p}
    out["all"] = _metrics([pair for p in pairs.values() for pair in p])
    return out


def read_pope_answers(path: str | os.PathLike, split: str) -> dict[str, str]:
    """Answers in the official layout (one ``{"question_id", "text"}`` per line; "answer" also accepted), keyed
    like ``PopeItem.id`` for ``split``."""
    path = Path(path)
    if not path.is_file():
        raise PopeFileError(f"POPE answer file {path} does not exist")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        text = row.get("text", row.get("answer"))
        if text is None or "question_id" not in row:
            raise PopeFileError(f"{path}:{n}: an answer needs question_id and text (or answer)")
        out[f"{split}-{row['question_id']}"] = str(text)
    return out
