"""What an ingest returns: kept instructions, quarantined rows, and the counts written as summary.json."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mdpo_pipeline.core.ingest.validation import _REASON_ORDER
from mdpo_pipeline.core.schemas import Instruction, QuarantineReason, QuarantineRecord


@dataclass
class IngestResult:
    """Kept instructions, quarantined rows, and what was read."""

    instructions: list[Instruction]
    quarantine: list[QuarantineRecord]
    n_read: int  # rows read; every one is either kept or quarantined
    files: dict  # format, and the data and instruction-source files actually read (absolute paths)
    image_root: Path  # where Instruction.image paths resolve
    completions_dropped: Counter = field(default_factory=Counter)  # reason -> dropped completions, kept rows

    def __post_init__(self):
        if len(self.instructions) + len(self.quarantine) != self.n_read:
            raise AssertionError(
                f"ingest lost rows: {len(self.instructions)} kept + {len(self.quarantine)} quarantined "
                f"!= {self.n_read} read"
            )

    def counts_by_reason(self) -> dict[str, int]:
        """Quarantined rows per reason value."""
        counts = Counter(q.reason for q in self.quarantine)
        return {r.value: n for r, n in sorted(counts.items(), key=_reason_key)}

    def counts_by_source(self) -> dict[str, int]:
        """Kept instructions per source ("unknown" where the source file had no entry)."""
        return dict(sorted(Counter(i.source for i in self.instructions).items()))

    def summary(self, image_root: str | None = None) -> dict:
        """The summary written as summary.json; ``image_root`` overrides how the root is recorded."""
        # File names only (their directory is the configured path): a checkout elsewhere gives the same bytes.
        source = self.files["instruction_source"]
        files = self.files | {
            "data": [Path(p).name for p in self.files["data"]],
            "instruction_source": Path(source).name if source else None,
        }
        return {
            "n_read": self.n_read,
            "n_kept": len(self.instructions),
            "n_quarantined": len(self.quarantine),
            "quarantined_by_reason": self.counts_by_reason(),
            "kept_by_source": self.counts_by_source(),
            "completions_dropped": {
                r.value: n for r, n in sorted(self.completions_dropped.items(), key=_reason_key)
            },
            "files": files,
            "image_root": image_root if image_root is not None else str(self.image_root),
        }


def _reason_key(item: tuple[QuarantineReason, int]) -> int:
    return _REASON_ORDER[item[0]]
