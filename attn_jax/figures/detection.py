"""Detection examples after training: predicted boxes over ground truth on a few evaluation images
(attn_jax/tasks/detection.py picks the boxes in `figure_data`; this module draws them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import pyplot, save


def plot_detection_examples(data: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per image: the ground truth dashed in green, the predictions in red, each box
    tagged with its text.

    Args:
      data: "images" a list of [h, w, C] arrays (any range; each is min-max stretched),
        "truth_boxes" and "pred_boxes" lists (one per image) of [m, 4] pixel boxes (x0, y0, x1,
        y1) in that image's frame, "truth_names" and "pred_names" lists of their tags.
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    images = data["images"]
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image = np.asarray(images[i], np.float32)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        for box, name in zip(data["truth_boxes"][i], data["truth_names"][i], strict=True):
            _draw_box(ax, box, name, "lime", "--")
        for box, name in zip(data["pred_boxes"][i], data["pred_names"][i], strict=True):
            _draw_box(ax, box, name, "red", "-")
        ax.set_axis_off()
    fig.suptitle("predictions (red) and ground truth (green)")
    fig.tight_layout()
    return save(fig, path)


def _draw_box(ax, box, text: str, color: str, style: str) -> None:
    import matplotlib.patches as patches

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(
        patches.Rectangle(
            (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style, lw=1.5
        )
    )
    ax.text(
        x0,
        y0,
        text,
        color="white",
        fontsize=7,
        va="bottom",
        bbox={"facecolor": color, "alpha": 0.6, "pad": 1, "edgecolor": "none"},
    )
