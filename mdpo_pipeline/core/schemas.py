"""Data contracts shared by every stage: normalized Silkie rows, preference pairs, quarantine records.

Plain dataclasses plus the pyarrow schemas used on disk. No Dagster, no torch.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, field

import pyarrow as pa

#: VLFeedback's three rated aspects, spelled exactly as in the release.
ASPECTS: tuple[str, ...] = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")


class QuarantineReason(str, enum.Enum):
    """Why an input row could not be used. Values are stable strings (they land in parquet)."""

    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    BAD_FIELD_TYPE = "bad_field_type"
    EMPTY_PROMPT = "empty_prompt"
    DUPLICATE_ID = "duplicate_id"
    PATH_ESCAPE = "path_escape"
    MISSING_IMAGE = "missing_image"
    NOT_AN_IMAGE = "not_an_image"
    UNDECODABLE_IMAGE = "undecodable_image"
    IMAGE_TOO_LARGE = "image_too_large"
    NON_NUMERIC_RATING = "non_numeric_rating"
    MISSING_RATING = "missing_rating"
    EMPTY_RESPONSE = "empty_response"
    TOO_FEW_COMPLETIONS = "too_few_completions"
    RATINGS_TIED = "ratings_tied"
    IDENTICAL_PAIR = "identical_pair"  # a fixed pair whose two answers are the same text (spacing, Unicode form aside)
    RATING_OUT_OF_RANGE = "rating_out_of_range"  # a number outside VLFeedback's 1-5 scale
    # A pixel format with no fixed 8-bit RGB meaning (e.g. float "F": its value range is not stored).
    UNSUPPORTED_IMAGE_MODE = "unsupported_image_mode"
    # Corruption only: no crop of the image keeps a share of its area within the strategy's bounds
    # (the image is too small or too elongated for the crop range).
    CROP_OUT_OF_BOUNDS = "crop_out_of_bounds"
    # A prompt or answer that holds an image placeholder ("<image>", "[IMG]", ... core/placeholders.py) as text: the
    # processor would expand it into image tokens with no image behind them and stop the training batch.
    IMAGE_PLACEHOLDER_IN_TEXT = "image_placeholder_in_text"
    # Corruption only (strategy counterfactual, SymMPO arXiv 2506.11712): the instruction has no contrasting image and
    # answer (no contrast record, no row in counterfactual_path, or a chosen answer that does not name the object
    # swapped).
    NO_COUNTERFACTUAL = "no_counterfactual"


@dataclass(frozen=True)
class Completion:
    """One model's answer with its parsed ratings (None where the rating was unusable)."""

    model: str
    response: str
    ratings: dict[str, float | None]

    @property
    def usable(self) -> bool:
        """True when the response is non-empty and all three aspect ratings are numbers."""
        return bool(self.response.strip()) and all(
            self.ratings.get(a) is not None for a in ASPECTS
        )

    @property
    def score(self) -> float | None:
        """Silkie's pair score: the mean of the three aspect ratings."""
        if not self.usable:
            return None
        return sum(self.ratings[a] for a in ASPECTS) / len(ASPECTS)  # type: ignore[misc]


@dataclass(frozen=True)
class Instruction:
    """A normalized VLFeedback instruction: one image, one question, several rated completions.

    ``preferred`` is set only for sources that already fix the pair (the released mDPO json):
    (index of chosen, index of rejected) into ``completions``.
    """

    id: str
    source: str
    prompt: str
    image: str  # path relative to the image root, POSIX separators
    completions: tuple[Completion, ...]
    preferred: tuple[int, int] | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class QuarantineRecord:
    """A row that was read but cannot be used, with where it came from and why."""

    file: str
    line: int  # 1-based line (jsonl) or record index (json/parquet)
    id: str | None
    reason: QuarantineReason
    detail: str
    raw: str = ""  # the offending input, truncated


@dataclass(frozen=True)
class PreferencePair:
    """One (chosen, rejected) pair for one image and question."""

    pair_id: str
    instruction_id: str
    source: str
    prompt: str
    image: str
    chosen: str
    rejected: str
    chosen_model: str
    rejected_model: str
    chosen_score: float | None
    rejected_score: float | None
    extra: dict = field(default_factory=dict)


def normalised_answer(text: str) -> str:
    """``text`` in Unicode NFC with every run of whitespace one space and none at the ends."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def same_answer(a: str, b: str) -> bool:
    """Whether two answers are one text once normalised ("A cat." and "A  cat. ", "café" in NFC and NFD)."""
    return a == b or normalised_answer(a) == normalised_answer(b)


COMPLETION_TYPE = pa.struct(
    [
        ("model", pa.string()),
        ("response", pa.string()),
        ("helpfulness", pa.float64()),
        ("ethical", pa.float64()),
        ("faithfulness", pa.float64()),
    ]
)

INSTRUCTIONS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("prompt", pa.string()),
        ("image", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("completions", pa.list_(COMPLETION_TYPE)),
        ("preferred", pa.list_(pa.int32())),  # null, or [chosen_idx, rejected_idx]
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)

PAIRS_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("instruction_id", pa.string()),
        ("source", pa.string()),
        ("prompt", pa.string()),
        ("image", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_model", pa.string()),
        ("rejected_model", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
    ]
)

_ASPECT_COLUMNS = {
    "Helpfulness": "helpfulness",
    "Ethical Considerations": "ethical",
    "Visual Faithfulness": "faithfulness",
}


def instruction_to_row(ins: Instruction) -> dict:
    """Flatten an Instruction into a dict matching INSTRUCTIONS_SCHEMA."""
    return {
        "id": ins.id,
        "source": ins.source,
        "prompt": ins.prompt,
        "image": ins.image,
        "width": ins.width,
        "height": ins.height,
        "completions": [
            {"model": c.model, "response": c.response}
            | {col: c.ratings.get(a) for a, col in _ASPECT_COLUMNS.items()}
            for c in ins.completions
        ],
        "preferred": list(ins.preferred) if ins.preferred is not None else None,
    }


def instruction_from_row(row: dict) -> Instruction:
    """Inverse of instruction_to_row."""
    comps = tuple(
        Completion(
            model=c["model"],
            response=c["response"],
            ratings={a: c[col] for a, col in _ASPECT_COLUMNS.items()},
        )
        for c in row["completions"]
    )
    pref = row.get("preferred")
    return Instruction(
        id=row["id"],
        source=row["source"],
        prompt=row["prompt"],
        image=row["image"],
        completions=comps,
        preferred=tuple(pref) if pref is not None else None,  # type: ignore[arg-type]
        width=row.get("width"),
        height=row.get("height"),
    )


def pair_to_row(p: PreferencePair) -> dict:
    """Flatten a PreferencePair into a dict matching PAIRS_SCHEMA."""
    return {name: getattr(p, name) for name in PAIRS_SCHEMA.names}
