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


#: What a person looks at first in a preference run: the loss, then the rewards that explain it.
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss", "loss/dpo", "loss/conditional", "loss/anchor")),
    ("rewards", ("rewards/chosen", "rewards/rejected", "rewards/chosen_corrupted")),
    ("margins", ("rewards/margins", "rewards/conditional_margins")),
    ("accuracies", ("rewards/accuracies", "rewards/conditional_accuracies")),
)


def training_curves(log_history: Sequence[dict], out: str | Path, title: str = "") -> Path:
    """A PNG with loss, rewards, margins and accuracies against the step, from a Trainer's log history."""
    import matplotlib  # heavy: imported only when drawing, with the headless backend set before pyplot

    matplotlib.use("Agg")  # headless: training runs in containers and CI
    import matplotlib.pyplot as plt  # after the backend is set (above)

    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4 * len(CURVE_PANELS), 3.2))
    for ax, (panel, keys) in zip(axes, CURVE_PANELS):
        for key in keys:
            points = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
            if points:
                ax.plot(*zip(*points), label=key.split("/")[-1], linewidth=1.2)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
