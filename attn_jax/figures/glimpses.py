"""Where a vision model of the early attention papers looks, drawn from what its `figure_data`
returns (attn_jax/models/feature_select.py, ram.py, stn.py compute the arrays; this module draws).

- `plot_kept_pixels`: the k-of-D pixel gate of feature selection and a few images with the dropped
  pixels coloured, titled with label and prediction.
- `plot_glimpse_paths`: RAM's glimpses (Mnih et al. 2014) over each image, one colour per time step,
  the coarser scales of the first glimpse dashed, the path through the centres.
- `plot_stn_transforms`: spatial transformer inputs above the images the transformer produced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import pyplot, save


def plot_kept_pixels(data: Mapping[str, Any], path: str | Path) -> Path:
    """The gate's mask, then each image with its dropped pixels in a colour no digit has.

    Args:
      data: "mask" bool [H, W] (True = kept), "images" [n, H, W, C], "labels" [n],
        "predictions" [n].
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    mask = np.asarray(data["mask"], bool)
    images, labels, preds = data["images"], data["labels"], data["predictions"]
    fig, axes = plt.subplots(1, 1 + len(images), figsize=(1.6 * (1 + len(images)), 2.0))
    axes[0].imshow(mask, cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_title(f"kept {int(mask.sum())}/{mask.size}", fontsize=8)
    cmap = plt.get_cmap("gray_r").with_extremes(bad="#f4a582")
    for ax, image, label, pred in zip(axes[1:], images, labels, preds, strict=True):
        ax.imshow(np.ma.masked_array(image[..., 0], mask=~mask), cmap=cmap)
        ax.set_title(f"y={label} pred={pred}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save(fig, path, dpi=120)


def plot_glimpse_paths(data: Mapping[str, Any], path: str | Path) -> Path:
    """RAM's glimpses over each image: the finest patch of every glimpse as a square (one colour
    per time step, numbered from 1), the coarser patches of the first glimpse dashed, the path
    through the centres, and the true and predicted labels.

    Args:
      data: "images" [n, H, W, C], "labels" [n], "predictions" [n], "locations" [n, T, 2] in
        [-1, 1] (row, column), "corners" [n, T, K, 2] top-left pixel of each scale's patch,
        "sides" [K] patch side per scale in pixels.
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    images, labels, predictions = data["images"], data["labels"], data["predictions"]
    locations, corners, sides = data["locations"], data["corners"], data["sides"]
    num_glimpses = locations.shape[1]
    height, width = images.shape[1:3]
    colours = plt.get_cmap("cool")(np.linspace(0.0, 1.0, num_glimpses))

    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(images)]):
        ax.imshow(images[i, ..., 0] if images.shape[-1] == 1 else images[i], cmap="gray")
        centres = (locations[i] + 1.0) / 2.0 * np.array([height, width]) - 0.5
        ax.plot(centres[:, 1], centres[:, 0], "-", color="white", lw=1, alpha=0.7)
        for t in range(num_glimpses):
            for k, side in enumerate(sides if t == 0 else sides[:1]):
                row, col = corners[i, t, k]
                ax.add_patch(
                    Rectangle(
                        (col - 0.5, row - 0.5),
                        side,
                        side,
                        fill=False,
                        edgecolor=colours[t],
                        lw=1.5 if k == 0 else 0.8,
                        ls="-" if k == 0 else "--",
                    )
                )
            ax.text(centres[t, 1], centres[t, 0], str(t + 1), color=colours[t], fontsize=8)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        ax.set_title(f"label {labels[i]}, predicted {predictions[i]}", fontsize=9)
    fig.suptitle(f"RAM glimpse paths ({num_glimpses} glimpses, 1 = first)", fontsize=10)
    fig.tight_layout()
    return save(fig, path, dpi=110)


def plot_stn_transforms(data: Mapping[str, Any], path: str | Path) -> Path:
    """Inputs (top row) above the spatial transformer's outputs (bottom row), titled with the
    true and the predicted labels.

    Args:
      data: "images" [n, H, W, C], "labels" [n], "transformed" [n, h, w, C], "predictions" [n].
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    images, labels = data["images"], data["labels"]
    transformed, predicted = data["transformed"], data["predictions"]
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.8), squeeze=False, layout="constrained")
    for k in range(n):
        for row, (picture, title) in enumerate(
            [(images[k], f"input: {labels[k]}"), (transformed[k], f"ST out: {predicted[k]}")]
        ):
            ax = axes[row, k]
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("spatial transformer: inputs (top), transformed inputs (bottom)", fontsize=9)
    return save(fig, path)
