"""Heatmaps that explain a ViT's predictions from its attention weights: rollout, per-head maps and
part selection over the input images. attn_jax/programs/explain.py computes the maps (and
upsamples them to pixels); this module draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import pyplot, save


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(ax, heat: np.ndarray, alpha: float = 0.5):
    # Drawn over the pixels the patches cover, in the image's pixel coordinates; the scale starts
    # at 0 so that a nearly flat map (an untrained model) looks flat.
    h, w = heat.shape
    return ax.imshow(
        heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0, extent=(-0.5, w - 0.5, h - 0.5, -0.5)
    )


def _mark_patches(
    ax, tokens: Sequence[int], tags: Sequence[str], grid_w, patch_hw, color, stride_hw=None
) -> None:
    import matplotlib.patches as mpatches

    # Overlapping patches (TransFG) start every stride, not every patch size.
    ph, pw = patch_hw
    sh, sw = stride_hw or patch_hw
    for token, tag in zip(tokens, tags, strict=True):
        row, col = divmod(int(token) - 1, grid_w)
        ax.add_patch(
            mpatches.Rectangle(
                (col * sw - 0.5, row * sh - 0.5), pw, ph, fill=False, edgecolor=color, linewidth=2
            )
        )
        ax.text(
            col * sw,
            row * sh,
            tag,
            color="black",
            fontsize=7,
            va="bottom",
            ha="left",
            bbox=dict(facecolor=color, edgecolor="none", pad=0.5, alpha=0.8),
        )


def _figure(rows: int, cols: int, aspect: float, scale: float = 2.2):
    """`aspect` = image height / width; panels are `scale` inches wide plus room for a title."""
    size = (scale * cols, (scale * aspect + 0.35) * rows)
    return pyplot().subplots(rows, cols, figsize=size, squeeze=False)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save(fig, path)


def plot_explanations(
    maps: Mapping[str, Any], display_images: np.ndarray, out_dir: str | Path
) -> list[Path]:
    """Writes rollout.png, heads.png and (when there are parts to show) parts.png.

    Args:
      maps: "titles" [B] (the predicted label of each image), "relevance_px" [B, H, W] rollout
        relevance and "heads_px" [B, heads, H, W] per-head maps, both upsampled to the pixels;
        "parts" [B, heads] or None, "top_parts" [B, k] or None (token indices, patch p is token
        p + 1), "grid_hw" the patch grid and "patch_hw" the patch size in pixels.
      display_images: [B, H, W] or [B, H, W, C] images in [0, 1] to draw under the heatmaps.
      out_dir: created if missing.

    Returns:
      the written paths.
    """
    out_dir = Path(out_dir)
    titles, relevance_px, heads_px = maps["titles"], maps["relevance_px"], maps["heads_px"]
    parts, top_parts = maps["parts"], maps["top_parts"]
    grid_w, patch_hw = maps["grid_hw"][1], maps["patch_hw"]
    batch, heads = heads_px.shape[:2]
    written = []

    aspect = display_images.shape[1] / display_images.shape[2]
    fig, axes = _figure(batch, 2, aspect, scale=3.0)
    for i in range(batch):
        _show(axes[i, 0], display_images[i], f"input: {titles[i]}")
        _show(axes[i, 1], display_images[i], "attention rollout (max = 1)")
        fig.colorbar(_overlay(axes[i, 1], relevance_px[i]), ax=axes[i, 1], fraction=0.046)
    written.append(_save(fig, out_dir / "rollout.png"))

    cols = min(heads, 6)
    per_image = math.ceil(heads / cols)
    fig, axes = _figure(batch * per_image, cols, aspect)
    for i in range(batch):
        for h in range(per_image * cols):
            ax = axes[i * per_image + h // cols, h % cols]
            if h >= heads:
                ax.set_axis_off()
                continue
            # Each head on its own scale: the heads differ in how much goes to the class token.
            heat = heads_px[i, h] / max(float(heads_px[i, h].max()), 1e-12)
            _show(ax, display_images[i], f"{titles[i]}: head {h}" if h == 0 else f"head {h}")
            _overlay(ax, heat)
    written.append(_save(fig, out_dir / "heads.png"))

    panels = [p for p in (parts, top_parts) if p is not None]
    if panels:
        fig, axes = _figure(batch, len(panels), aspect, scale=3.0)
        for i in range(batch):
            col = 0
            if parts is not None:
                # Several heads may pick one patch: one box, tagged with all of them.
                picked: dict[int, list[str]] = {}
                for h, token in enumerate(parts[i]):
                    picked.setdefault(int(token), []).append(str(h))
                _show(axes[i, col], display_images[i], "TransFG parts (head numbers)")
                tags = [",".join(v) for v in picked.values()]
                _mark_patches(axes[i, col], list(picked), tags, grid_w, patch_hw, "red")
                col += 1
            if top_parts is not None:
                k = top_parts.shape[1]
                _show(axes[i, col], display_images[i], f"top {k} rollout parts (rank)")
                tags = [str(r + 1) for r in range(k)]
                _mark_patches(axes[i, col], top_parts[i], tags, grid_w, patch_hw, "cyan")
        written.append(_save(fig, out_dir / "parts.png"))
    return written


def plot_transfg_parts(data: Mapping[str, Any], path: str | Path) -> Path:
    """The patches TransFG's part selection hands to its last layer, boxed on each input and
    tagged with the heads that picked them, titled with the true and predicted labels.

    Args:
      data: "images" [n, H, W, C], "labels" [n], "predictions" [n], "parts" [n, K] token
        indices (patch p of the row-major grid is token p + 1), "grid_hw" the patch grid,
        "patch_hw" the patch size and "stride_hw" the stride of the patch embedding in pixels.
      path: the PNG to write.

    Returns:
      the path written.
    """
    images = np.asarray(data["images"], np.float32)
    images = images[..., 0] if images.shape[-1] == 1 else images
    # Display in [0, 1] whatever the normalisation of the model's inputs.
    low, high = float(images.min()), float(images.max())
    images = (images - low) / max(high - low, 1e-12)
    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = _figure(rows, cols, images.shape[1] / images.shape[2])
    for ax in axes.flat[len(images) :]:
        ax.set_axis_off()
    for i, ax in enumerate(axes.flat[: len(images)]):
        _show(ax, images[i], f"y={data['labels'][i]} pred={data['predictions'][i]}")
        # Several heads may pick one patch: one box, tagged with all of them.
        picked: dict[int, list[str]] = {}
        for h, token in enumerate(data["parts"][i]):
            picked.setdefault(int(token), []).append(str(h))
        tags = [",".join(v) for v in picked.values()]
        grid_w = data["grid_hw"][1]
        _mark_patches(ax, list(picked), tags, grid_w, data["patch_hw"], "red", data["stride_hw"])
    return _save(fig, Path(path))
