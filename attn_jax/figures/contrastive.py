"""CLIP's image-caption similarities after training, drawn from the cosine matrix that
attn_jax/tasks/contrastive.py computes in `figure_data`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import displayable, pyplot, save


def plot_similarity(images: np.ndarray, texts: list[str], cosine: np.ndarray, path: Path) -> Path:
    """Draws the [n_img, n_txt] cosine matrix with image thumbnails as row labels and the texts as
    column labels; returns `path`."""
    plt = pyplot()
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    n_img, n_txt = cosine.shape
    fig, ax = plt.subplots(figsize=(2.0 + 1.1 * n_txt, 2.5 + 0.9 * n_img))
    shown = ax.imshow(cosine, cmap="viridis")
    for i in range(n_img):
        for j in range(n_txt):
            ax.text(j, i, f"{cosine[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w")
    ax.set_xticks(range(n_txt))
    ax.set_xticklabels([_wrap(t) for t in texts], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_img))
    ax.set_yticklabels([])
    for i, image in enumerate(images):
        thumb = displayable(image)
        zoom = 28.0 / max(thumb.shape[:2])  # ~28 px thumbnails whatever the image size
        box = OffsetImage(thumb, zoom=zoom, cmap="gray" if thumb.ndim == 2 else None)
        ax.add_artist(
            AnnotationBbox(
                box,
                (-0.5, i),
                xybox=(-22, 0),
                xycoords="data",
                boxcoords="offset points",
                frameon=False,
            )
        )
    ax.set_title("cosine similarity: images (rows) x captions (columns)")
    fig.colorbar(shown, ax=ax, fraction=0.04)
    fig.tight_layout()
    return save(fig, path)


def plot_similarity_figure(data: Mapping[str, Any], path: str | Path) -> Path:
    """`plot_similarity` of a task's figure data: "images" [n, H, W, C], "texts" [m] and
    "cosine" [n, m]."""
    return plot_similarity(data["images"], list(data["texts"]), data["cosine"], Path(path))


def _wrap(text: str, width: int = 24) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)
