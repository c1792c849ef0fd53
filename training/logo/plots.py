"""The evaluation's figures: ROC and PR curves, reliability diagram, contact sheets of the hardest items.

Kept small for committing: 4x4-inch curves at 80 dpi, and a palette PNG contact sheet.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

THUMB = 112
# PNG metadata would otherwise name the matplotlib version, changing the bytes on upgrade.
_PNG_METADATA = {"Software": None}


Range = tuple[float, float]


def curve(path: Path, x: np.ndarray, y: np.ndarray, *, title: str, xlabel: str, ylabel: str,
          point: Range, point_label: str, zoom: tuple[Range, Range]) -> None:
    """The full curve on the left; on the right the corner ``zoom`` = (xlim, ylim) where they differ."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=80)
    for ax, (xlim, ylim) in zip(axes, (((-0.01, 1.01), (-0.01, 1.01)), zoom)):
        ax.plot(x, y, drawstyle="steps-post", linewidth=1.5)
        ax.plot(*point, "o", color="C3", label=point_label)
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=xlim, ylim=ylim)
        ax.grid(alpha=0.3)
    axes[1].set_title("zoomed", fontsize=10)
    axes[1].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, metadata=_PNG_METADATA)
    plt.close(fig)


def reliability(path: Path, calibration: dict[str, dict]) -> None:
    """Reliability diagram: mean P(logo) against the share of logos per score bin, one line
    per split, with the bins' item counts below (log scale: most items sit near 0 or 1)."""
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), dpi=80, gridspec_kw={"height_ratios": [3, 1]},
                                     sharex=True)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for n, (split, table) in enumerate(calibration.items()):
        rows = [row for row in table["bins"] if row["count"]]
        ax.plot([row["mean_score"] for row in rows], [row["share_logo"] for row in rows], "o-",
                color=f"C{n}", label=f"{split} (ECE {table['ece']:.4f})")
        centres = [sum(row["bin"]) / 2 + (n - 0.5) * 0.03 for row in rows]
        counts.bar(centres, [row["count"] for row in rows], width=0.03, color=f"C{n}", label=split)
    ax.set(ylabel="share of logos in the bin", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title="Reliability of P(logo), 10 equal-width bins")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="predicted P(logo) (bin mean)", ylabel="items", yscale="log")
    counts.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=_PNG_METADATA)
    plt.close(fig)


def contact_sheet(path: Path, rows: list[tuple[str, list[tuple[np.ndarray, str]]]],
                  per_row: int = 8) -> None:
    """Rows of titled thumbnails, each captioned; ``rows`` is (title, [(image, caption), ...])."""
    font = ImageFont.load_default(11)
    caption_h, title_h = 28, 20
    lines = [(title, items[i : i + per_row])
             for title, items in rows for i in range(0, max(1, len(items)), per_row)]
    sheet = Image.new("RGB", (per_row * (THUMB + 4) + 4, len(lines) * (title_h + THUMB + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for n, (title, items) in enumerate(lines):
        if n == 0 or title != lines[n - 1][0]:
            draw.text((4, y + 4), title, fill="black", font=font)
        y += title_h
        for i, (image, caption) in enumerate(items):
            x = 4 + i * (THUMB + 4)
            sheet.paste(Image.fromarray(image).resize((THUMB, THUMB), Image.Resampling.BILINEAR), (x, y))
            for j, text in enumerate(caption.split("\n")[:2]):
                draw.text((x, y + THUMB + 2 + j * 12), text[:18], fill="black", font=font)
        y += THUMB + caption_h
    # 256 colours keep the sheet far below the size of a full-colour PNG.
    sheet.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
