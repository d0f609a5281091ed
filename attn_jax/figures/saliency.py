"""The Itti-Koch saliency of a photograph (attn_jax/programs/saliency_photos.py computes the maps
with attn_jax.attention.saliency; this module draws them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from attn_jax.figures.backend import pyplot, save


def plot_saliency(
    name: str,
    photo: np.ndarray,
    maps: Mapping[str, np.ndarray],
    peak: tuple[int, int],
    out_dir: str | Path,
    alpha: float = 0.5,
) -> list[Path]:
    """Writes `<name>_maps.png` (the photo, the conspicuity maps and S) and `<name>_overlay.png`
    (S over the photo, the first fixation circled).

    Args:
      name: the photo's name, prefix of the files.
      photo: uint8 [H, W, 3].
      maps: "intensity", "color", "orientation" and "saliency", each [h, w] at pyramid scale 4.
      peak: (row, column) of the first fixation in photo pixels.
      out_dir: where the files go.
      alpha: opacity of S over the photo.

    Returns:
      [maps file, overlay file].
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    panels = [
        ("photo", photo, None),
        ("intensity I", maps["intensity"], "gray"),
        ("colour C", maps["color"], "gray"),
        ("orientation O", maps["orientation"], "gray"),
        ("saliency S", maps["saliency"], "inferno"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.6))
    for ax, (title, image, cmap) in zip(axes, panels, strict=True):
        ax.imshow(image, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    maps_path = save(fig, out_dir / f"{name}_maps.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6.4, 6.4 * photo.shape[0] / photo.shape[1]))
    ax.imshow(photo)
    # Stretched over the whole photo: off by at most half a scale-4 cell (8 pixels).
    height, width = photo.shape[:2]
    ax.imshow(
        maps["saliency"],
        cmap="inferno",
        alpha=alpha,
        interpolation="bilinear",
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
    )
    ax.plot(peak[1], peak[0], marker="o", markersize=14, mfc="none", mec="cyan", mew=2)
    ax.set_title(f"{name}: saliency over the photo, first fixation circled", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    overlay_path = save(fig, out_dir / f"{name}_overlay.png", dpi=110)
    return [maps_path, overlay_path]
