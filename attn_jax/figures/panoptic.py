"""Panoptic examples after training (DETR's mask head, attn_jax/tasks/panoptic.py): each image with
its ground-truth segments and its predicted ones laid over it, one colour per segment and the
segment's class (and score) written at its centre. The task picks the segments in
`figure_data`; this module draws them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import displayable, pyplot, save

# Segment colours, cycled by segment id (matplotlib's "tab20": neighbours stay distinguishable).
_CMAP = "tab20"


def segment_overlay(ids: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGBA [H, W, 4] of an id map: segment k in colour k of `_CMAP`, background transparent."""
    plt = pyplot()
    colors = np.asarray(plt.get_cmap(_CMAP).colors)  # [20, 3]
    ids = np.asarray(ids)
    rgba = np.zeros((*ids.shape, 4), np.float32)
    on = ids > 0
    rgba[on, :3] = colors[(ids[on] - 1) % len(colors)]
    rgba[on, 3] = alpha
    return rgba


def plot_panoptic_overlays(data: Mapping[str, Any], path: str | Path) -> Path:
    """Two rows of panels: the ground truth over each image (top) and the prediction (bottom).

    Args:
      data: "images" a list of [h, w, C] arrays (any range; each is min-max stretched);
        "truth" and "predicted" lists of int [h, w] segment-id maps (0 = background);
        "truth_names" and "predicted_names" lists of {segment id: text}.
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    images = data["images"]
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
    rows = (("truth", "ground truth"), ("predicted", "prediction"))
    for row, (key, title) in enumerate(rows):
        for i in range(n):
            ax = axes[row, i]
            image = displayable(images[i])
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ids = np.asarray(data[key][i])
            ax.imshow(segment_overlay(ids), interpolation="nearest")
            for segment, text in data[f"{key}_names"][i].items():
                rows_, cols = np.nonzero(ids == segment)
                if rows_.size:
                    ax.text(
                        float(cols.mean()),
                        float(rows_.mean()),
                        text,
                        color="white",
                        fontsize=7,
                        ha="center",
                        va="center",
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "edgecolor": "none"},
                    )
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9, loc="left")
    fig.suptitle("segments: ground truth (top) and DETR's panoptic prediction (bottom)")
    fig.tight_layout()
    return save(fig, path)


__all__ = ["plot_panoptic_overlays", "segment_overlay"]
