"""Ingest settings: where the raw preference data lives and how strictly to validate it; the raw release's
file names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mdpo_pipeline.core.errors import shown
from mdpo_pipeline.core.images import DEFAULT_MAX_PIXELS

FORMATS = ("vlfeedback", "mdpo_json", "hub")
IMAGE_CHECKS = ("full", "header", "none")
RAW_FILE = "vlfeedback_80k.jsonl"
SOURCE_FILE = "instruction_source.jsonl"
IMAGES_DIR = "merged_images"
IMAGES_ZIP = "merged_images.zip"


@dataclass
class IngestConfig:
    """Where the raw preference data lives and how strictly to validate it."""

    format: str = "vlfeedback"  # "vlfeedback" (raw release), "mdpo_json" (released mDPO pairs) or "hub"
    path: str | Path | None = None  # data directory or file; for "hub", the directory to download into
    # Image paths resolve under this. Default: the data directory, or for a data file its folder; for the
    # released mDPO json that is where its img_path values ("images/llava-reasoning-3730.jpg") start from.
    image_root: str | Path | None = None
    image_check: str = "full"  # "full": decode every image; "header": format and size only; "none": skip
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # larger images are quarantined before decoding (bomb guard)
    # Source for mdpo_json rows without one: the released mDPO file is the LLaVA-sourced subset of
    # VLFeedback (docs/method.md, "Training setup in the paper") and carries no source field.
    default_source: str = "llava"
    hub_repo_id: str = "MMInstruction/VLFeedback"  # dataset repo holding the raw release files
    hub_revision: str | None = None  # pin a commit for reproducible downloads; None = main
    workers: int = 0  # processes for image checks; 0 = all available cores, 1 = inline (no processes)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"IngestConfig.format must be one of {FORMATS}, got {shown(self.format)}")
        if self.path is None or not str(self.path).strip():
            raise ValueError("IngestConfig.path is required: data directory or file ('hub': where to download)")
        self.path = Path(self.path).expanduser()
        if self.image_root is not None:
            self.image_root = Path(self.image_root).expanduser()
        if self.image_check not in IMAGE_CHECKS:
            raise ValueError(f"IngestConfig.image_check must be in {IMAGE_CHECKS}, got {shown(self.image_check)}")
        for name, lowest in (("max_image_pixels", 1), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ValueError(f"IngestConfig.{name} must be an int >= {lowest}, got {shown(value)}")
        if not isinstance(self.default_source, str) or not self.default_source.strip():
            raise ValueError("IngestConfig.default_source must be a non-empty string")
        self.default_source = self.default_source.strip().lower()
        if not self.hub_repo_id or "/" not in self.hub_repo_id:
            raise ValueError(f"IngestConfig.hub_repo_id must be 'owner/name', got {shown(self.hub_repo_id)}")
