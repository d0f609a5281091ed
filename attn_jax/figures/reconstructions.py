"""Masked image modeling after training: inputs, masks and reconstructions, drawn from the arrays
of `MaskedImageModeling.reconstruct` (attn_jax/tasks/masked_image.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from attn_jax.figures.backend import pyplot, save


def _display(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[H, W, C] -> RGB in [0, 1], scaled by the input image's range (shared by its row)."""
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    return x[..., :3]


def plot_reconstructions(arrays: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """One column per example, rows: input | masked input (masked pixels tinted) |
    reconstruction | reconstruction with the visible pixels of the input.

    Args:
      arrays: "image", "reconstruction", "pasted" [n, H, W, C] and "pixel_mask" [n, H, W, 1]
        (1 = masked).
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    rows = ("input", "masked", "reconstruction", "recon. +\nvisible")
    n = arrays["image"].shape[0]
    fig, axes = plt.subplots(4, n, figsize=(1.3 * n + 0.8, 1.3 * 4), squeeze=False)
    tint = np.array([0.35, 0.45, 0.75])  # masked pixels: neither black nor white digit ink
    for i in range(n):
        image = arrays["image"][i]
        lo, hi = float(image.min()), float(image.max())
        masked = arrays["pixel_mask"][i] > 0  # [H, W, 1]
        shown = (
            _display(image, lo, hi),
            np.where(masked, tint, _display(image, lo, hi)),
            _display(arrays["reconstruction"][i], lo, hi),
            _display(arrays["pasted"][i], lo, hi),
        )
        for j, picture in enumerate(shown):
            ax = axes[j, i]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(rows[j], fontsize=8)
    fig.tight_layout()
    return save(fig, path)
