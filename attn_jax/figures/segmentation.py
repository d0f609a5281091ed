"""Segmentation examples after training: the image, the ground truth over it and the prediction
over it, in the fixed class colours of attn_jax/eval/segmentation.py (the task predicts the masks in
`figure_data`; this module draws them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.eval.segmentation import class_colors, colorize_mask
from attn_jax.figures.backend import pyplot, save


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    # Images arrive normalized (mean/std); a per-image min-max stretch shows them whatever the
    # normalization was.
    image = np.asarray(image, np.float32)
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    if image.shape[-1] == 1:
        return image[..., 0], "gray"
    return image[..., :3], None


def plot_segmentation_overlays(
    images: np.ndarray,
    truths: np.ndarray,
    preds: np.ndarray,
    path: str | Path,
    *,
    num_classes: int,
    ignore_label: int | None = 255,
    background: int | None = 0,
    class_names: Sequence[str] | None = None,
    panel_inches: float = 2.5,
    dpi: int = 100,
) -> Path:
    """Writes a PNG with one row per example: the image, the ground truth over the image and the
    prediction over the image (colors of `class_colors`, background transparent, ignore grey).

    The figure is `3 * panel_inches` by `n * panel_inches` inches at `dpi`, so the file is
    (n * panel_inches * dpi) x (3 * panel_inches * dpi) pixels.

    Args:
      images: [n, H, W, C] (any value range; each is min-max stretched).
      truths: [n, H, W] int class ids (ignore_label for pixels that do not count).
      preds: [n, H, W] int predicted ids.
      path: the PNG to write (parent folders are created).
      num_classes: K.
      ignore_label: id drawn grey.
      background: id drawn transparent (None: every class is colored).
      class_names: names for the legend; default the ids.
      panel_inches: side of one panel.
      dpi: resolution.

    Returns:
      the path written.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    images, truths, preds = np.asarray(images), np.asarray(truths), np.asarray(preds)
    n = images.shape[0]
    if not (truths.shape[0] == preds.shape[0] == n) or truths.shape != preds.shape:
        raise ValueError(
            f"images {images.shape}, truths {truths.shape} and preds {preds.shape} must hold the "
            "same examples"
        )
    names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
    fig, axes = plt.subplots(
        n, 3, figsize=(3 * panel_inches, n * panel_inches), dpi=dpi, squeeze=False
    )
    for i in range(n):
        shown, cmap = _displayable(images[i])
        for j, (title, mask) in enumerate(
            (("image", None), ("ground truth", truths[i]), ("prediction", preds[i]))
        ):
            ax = axes[i][j]
            ax.imshow(shown, cmap=cmap, interpolation="nearest")
            if mask is not None:
                overlay = colorize_mask(
                    mask, num_classes, ignore_label=ignore_label, background=background
                )
                ax.imshow(overlay, interpolation="nearest")
            ax.set_title(f"{title} #{i}" if j == 0 else title, fontsize=8)
            ax.axis("off")
    present = np.unique(np.concatenate([truths.ravel(), preds.ravel()]))
    colors = class_colors(num_classes)
    handles = [
        Patch(color=colors[k], label=names[k])
        for k in present
        if 0 <= k < num_classes and k != background
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return save(fig, path, dpi=dpi)


def plot_segmentation_figure(data: Mapping[str, Any], path: str | Path) -> Path:
    """`plot_segmentation_overlays` of a task's figure data: "images", "truths", "preds" and the
    keyword arguments "num_classes", "ignore_label", "background" (and optionally
    "class_names")."""
    options = ("num_classes", "ignore_label", "background", "class_names")
    return plot_segmentation_overlays(
        data["images"],
        data["truths"],
        data["preds"],
        path,
        **{k: data[k] for k in options if k in data},
    )
