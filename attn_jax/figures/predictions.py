"""Figures of `launch.py predict` on several images: what a pretrained model says of each.

- `plot_classifications`: a grid of the images, each titled with its top label and probability
  (as the textbook's practice section shows a pretrained ViT on three photographs).
- `plot_detections`: a grid of the images with their kept boxes, labels and scores.
- `plot_caption_probabilities`: the images down the left of a matrix of caption probabilities, one
  row per image (its softmax over the captions), one column per caption.

Each function takes the images as uint8 [H, W, 3] arrays (the originals, not the model's inputs:
detection boxes are in their pixels) and the per-image results of attn_jax.pretrained.predict, and
writes one file whose format its suffix names. Drawing uses matplotlib's object interface (a
`Figure` with no pyplot state), so no backend has to be chosen and no window can open.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Box colours by class id (the same ten as matplotlib's "tab10").
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _grid(count: int, max_cols: int = 4, panel: float = 3.2) -> tuple[Any, list[Any]]:
    """A Figure with `count` image panels in rows of at most `max_cols`, and the used axes."""
    from matplotlib.figure import Figure

    cols = min(count, max_cols)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(panel * cols, (panel + 0.6) * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, list(axes[:count])


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(np.asarray(image))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _wrap(text: str, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _save(fig: Any, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


def plot_classifications(
    images: Sequence[np.ndarray],
    results: Sequence[Mapping[str, Any]],
    out: str | Path,
    names: Sequence[str] | None = None,
) -> Path:
    """Writes each image titled with its best class and probability.

    Args:
      images: uint8 [H, W, 3] arrays.
      results: per image, {"predictions": [{"label", "probability"}, ...]} best first.
      out: the file to write (.png, .pdf, .svg, .jpg).
      names: a caption under each title (e.g. the file name); None for none.

    Returns:
      `out` as a Path.
    """
    fig, axes = _grid(len(images))
    for i, (ax, image, result) in enumerate(zip(axes, images, results, strict=True)):
        best = result["predictions"][0]
        title = _wrap(f"{best['label']} ({best['probability']:.1%})")
        if names is not None:
            title += f"\n{names[i]}"
        _show(ax, image, title)
    return _save(fig, out)


def plot_detections(
    images: Sequence[np.ndarray],
    results: Sequence[Mapping[str, Any]],
    out: str | Path,
    names: Sequence[str] | None = None,
) -> Path:
    """Writes each image with its detections: a box, label and score per kept query.

    Args:
      images: uint8 [H, W, 3] arrays, the images the boxes' pixels refer to.
      results: per image, {"detections": [{"label", "label_id", "score", "box": [x0, y0, x1,
        y1]}]}.
      out: the file to write.
      names: a title per image (e.g. the file name); None titles each with its detection count.

    Returns:
      `out` as a Path.
    """
    from matplotlib.patches import Rectangle

    fig, axes = _grid(len(images))
    for i, (ax, image, result) in enumerate(zip(axes, images, results, strict=True)):
        detections = result["detections"]
        count = f"{len(detections)} detection{'s' if len(detections) != 1 else ''}"
        _show(ax, image, f"{names[i]}: {count}" if names is not None else count)
        for det in detections:
            color = _COLORS[int(det.get("label_id", 0)) % len(_COLORS)]
            x0, y0, x1, y1 = (float(v) for v in det["box"])
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=2))
            ax.text(
                x0,
                y0,
                f"{det['label']} {det['score']:.2f}",
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"},
                clip_on=True,
            )
    return _save(fig, out)


def plot_caption_probabilities(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    probabilities: np.ndarray | Sequence[Sequence[float]],
    out: str | Path,
    names: Sequence[str] | None = None,
) -> Path:
    """Writes the images beside the matrix of their caption probabilities.

    Args:
      images: uint8 [H, W, 3] arrays, one per row.
      captions: the column labels.
      probabilities: [images, captions], each row a softmax over the captions.
      out: the file to write.
      names: a label per image row; None for none.

    Returns:
      `out` as a Path.
    """
    from matplotlib.figure import Figure

    probabilities = np.asarray(probabilities, np.float64)
    rows, cols = probabilities.shape
    assert rows == len(images) and cols == len(captions), (probabilities.shape, len(captions))
    width = 2.0 + max(3.0, 1.1 * cols)
    fig = Figure(figsize=(width, 0.4 + 1.6 * rows + 1.2))
    grid = fig.add_gridspec(rows, 2, width_ratios=(1.6, width - 2.0))
    for i, image in enumerate(images):
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, image, "")
        if names is not None:
            ax.set_ylabel(_wrap(names[i], 18), fontsize=8, rotation=0, ha="right", va="center")
    matrix = fig.add_subplot(grid[:, 1])
    matrix.imshow(probabilities, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), p in np.ndenumerate(probabilities):
        matrix.text(
            j, i, f"{p:.2f}", ha="center", va="center", color="white" if p > 0.6 else "black"
        )
    matrix.set_xticks(range(cols), [_wrap(c, 16) for c in captions], fontsize=8)
    matrix.set_yticks(range(rows), [str(i + 1) for i in range(rows)])
    matrix.set_title("probability of each caption (rows sum to 1)", fontsize=9)
    return _save(fig, out)


__all__ = ["plot_caption_probabilities", "plot_classifications", "plot_detections"]
