"""What the attention variants of a ResNet attend to, drawn from the intermediates the model sows
(attn_jax/models/resnet.py collects them in `figure_data`; this module draws).

- `plot_query_attention`: for a few query pixels, the attention weights of non-local blocks (Wang
  et al. 2018) or of an attention-augmented convolution (Bello et al. 2019) over the key grid.
- `plot_se_excitation`: the mean squeeze-and-excitation gate per class and channel in each stage's
  last block, as Hu et al. 2018 draw it (Fig. 6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import pyplot, save


def plot_query_attention(data: Mapping[str, Any], path: str | Path, n_images: int = 4) -> Path:
    """One row per image: the image, then for each map and each of three query pixels (at a
    quarter, half and three quarters of the diagonal) the weights over the keys, query marked.

    Args:
      data: "images" [B, H, W, C], "labels" [B], "maps" a list of (title, weights [B, Nq, Nk]),
        queries on a square gq x gq grid and keys on a gk x gk grid.
      path: the PNG to write.
      n_images: rows drawn (the first images).

    Returns:
      the path written.
    """
    plt = pyplot()
    images, labels, maps = data["images"], data["labels"], data["maps"]
    n_images = min(n_images, len(images))
    h, w = images.shape[1:3]
    queries = [(h // 4, w // 4), (h // 2, w // 2), (3 * h // 4, 3 * w // 4)]
    fig, axes = plt.subplots(
        n_images,
        1 + len(maps) * len(queries),
        figsize=(2 + 2 * len(maps) * 3, 2 * n_images),
        squeeze=False,
    )
    for r in range(n_images):
        axes[r, 0].imshow(images[r, ..., 0], cmap="gray")
        axes[r, 0].set_title(f"label {labels[r]}", fontsize=8)
        col = 1
        for title, weights in maps:
            gq = int(round(math.sqrt(weights.shape[1])))
            gk = int(round(math.sqrt(weights.shape[2])))
            for qy, qx in queries:
                iy, ix = qy * gq // h, qx * gq // w
                m = weights[r, iy * gq + ix].reshape(gk, gk)
                axes[r, col].imshow(m, cmap="viridis")
                axes[r, col].scatter([ix * gk / gq], [iy * gk / gq], c="red", s=12)
                axes[r, col].set_title(f"{title} q=({iy},{ix})", fontsize=7)
                col += 1
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return save(fig, path, dpi=80)


def plot_se_excitation(data: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per block: the mean excitation of each channel, one line per class.

    Args:
      data: "labels" [B], "gates" {block name: [B, C] excitation}, in drawing order.
      path: the PNG to write.

    Returns:
      the path written.
    """
    plt = pyplot()
    labels, gates = np.asarray(data["labels"]), data["gates"]
    fig, axes = plt.subplots(1, len(gates), figsize=(4 * len(gates), 3), squeeze=False)
    classes = np.unique(labels)
    for ax, (name, gate) in zip(axes[0], gates.items(), strict=True):
        for c in classes:
            ax.plot(gate[labels == c].mean(0), lw=0.8, label=str(c))
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("channel")
        ax.set_ylabel("mean excitation")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save(fig, path, dpi=80)
