"""Small pictures for people: contact sheets of images (Dagster metadata, MLflow artifacts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from mdpo_pipeline.core.io import atomic_path


def contact_sheet(
    images: Sequence[str | Path], out: str | Path, cols: int = 8, cell: int = 128, labels: Sequence[str] | None = None
) -> Path:
    """A PNG grid of ``images`` scaled to ``cell`` px (NEAREST, so tiny synthetic images stay crisp)."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    rows = (len(images) + cols - 1) // cols
    label_h = 14 if labels else 0
    sheet = Image.new("RGB", (cols * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, path in enumerate(images):
        x, y = (i % cols) * cell, (i // cols) * (cell + label_h)
        with Image.open(path) as im:
            sheet.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        if labels:
            draw.text((x + 3, y + cell + 1), labels[i][:20], fill="black")
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
