"""Figures of the textbook chapter that are drawn from numbers our code computes (the programs in
attn_jax/programs/ compute them; this module only draws).

- `plot_positional_encoding`: the sinusoidal encoding of Vaswani et al. 2017 (sec. 3.5) as a heat
  map over position and dimension, the matrix of dot products between positions, and the dot
  product against the offset between two positions.
- `plot_normalization_axes` and `plot_normalization_statistics`: layer norm against batch norm on
  a real activation tensor [B, T, D]: which entries share one mean and variance, and the means
  and standard deviations before and after each.

Each function writes one PNG whose title carries the caption and returns its path. Drawing uses
matplotlib's object interface (a `Figure`, no pyplot state), imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig, path: str | Path, caption: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.suptitle(caption, fontsize=9, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_positional_encoding(
    arrays: Mapping[str, np.ndarray], path: str | Path, caption: str
) -> Path:
    """Three panels: PE [positions, dimensions], PE PE^T [positions, positions], and the dot
    product against the offset k = j - i.

    Args:
      arrays: "encoding" [L, D], "dot_products" [L, L], "offsets" [M] and "offset_dot" [M] (the
        dot product of positions 0 and k).
      path: the PNG to write.
      caption: the figure's title.
    """
    pe, dots = np.asarray(arrays["encoding"]), np.asarray(arrays["dot_products"])
    fig = _figure(15, 4.6)
    ax = fig.add_subplot(1, 3, 1)
    image = ax.imshow(pe, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xlabel("dimension (even: sin, odd: cos)")
    ax.set_ylabel("position")
    ax.set_title("PE(pos, i)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax = fig.add_subplot(1, 3, 2)
    image = ax.imshow(dots, cmap="viridis", interpolation="nearest")
    ax.set_xlabel("position j")
    ax.set_ylabel("position i")
    ax.set_title("PE(i) . PE(j): constant along each diagonal", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax = fig.add_subplot(1, 3, 3)
    ax.plot(arrays["offsets"], arrays["offset_dot"], lw=1.2)
    ax.set_xlabel("offset k = j - i")
    ax.set_ylabel("PE(i) . PE(i + k)")
    ax.set_title("the same for every i: a function of k alone", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path, caption)


def plot_normalization_axes(
    activations: np.ndarray, token: tuple[int, int], feature: int, path: str | Path, caption: str
) -> Path:
    """Which activations share one mean and variance: the tensor [B, T, D] drawn as a [B*T, D]
    matrix (one row per token of each example); layer norm uses one row (all features of one
    token), batch norm one column (one feature over every token of every example).

    Args:
      activations: [B, T, D].
      token: (example b, token t) of the row to highlight.
      feature: d, the column to highlight.
      path: the PNG to write.
      caption: the figure's title.
    """
    from matplotlib.patches import Rectangle

    b, t, d = activations.shape
    matrix = np.asarray(activations).reshape(b * t, d)
    row = token[0] * t + token[1]
    fig = _figure(11, 5.2)
    limit = float(np.percentile(np.abs(matrix), 99))
    for k, (title, rect) in enumerate(
        (
            ("layer norm: statistics of one token (a row)", (-0.5, row - 0.5, d, 1)),
            ("batch norm: statistics of one feature (a column)", (feature - 0.5, -0.5, 1, b * t)),
        )
    ):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.add_patch(Rectangle(rect[:2], rect[2], rect[3], fill=False, ec="black", lw=2))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"feature (D = {d})")
        ax.set_ylabel(f"token of an example (B x T = {b} x {t})")
        for boundary in range(t, b * t, t):
            ax.axhline(boundary - 0.5, color="white", lw=0.3)
    return _save(fig, path, caption)


def plot_normalization_statistics(
    arrays: Mapping[str, np.ndarray], path: str | Path, caption: str
) -> Path:
    """Two rows: layer norm (per-token mean and standard deviation, before and after, over the
    B*T tokens) and batch norm (per-feature mean and standard deviation over the batch, before
    and after, over the D features), with the [B*T, D] matrices after each normalization.

    Args:
      arrays: "activations", "layer_norm", "batch_norm" [B, T, D]; "ln_mean_before",
        "ln_std_before", "ln_mean_after", "ln_std_after" [B*T]; "bn_mean_before",
        "bn_std_before", "bn_mean_after", "bn_std_after" [D].
      path: the PNG to write.
      caption: the figure's title.
    """
    fig = _figure(15, 8)
    rows = (
        ("layer_norm", "ln", "token (B x T)", "layer norm output"),
        ("batch_norm", "bn", "feature (D)", "batch norm output"),
    )
    for r, (key, short, axis_name, title) in enumerate(rows):
        out = np.asarray(arrays[key])
        matrix = out.reshape(-1, out.shape[-1])
        ax = fig.add_subplot(2, 3, 3 * r + 1)
        ax.imshow(matrix, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
        ax.set_title(title + " [B*T, D]", fontsize=9)
        ax.set_xlabel("feature")
        ax.set_ylabel("token")
        for c, stat in enumerate(("mean", "std")):
            ax = fig.add_subplot(2, 3, 3 * r + 2 + c)
            before = np.asarray(arrays[f"{short}_{stat}_before"])
            after = np.asarray(arrays[f"{short}_{stat}_after"])
            index = np.arange(before.size)
            ax.plot(index, before, ".", ms=3, label="before")
            ax.plot(index, after, ".", ms=3, label="after")
            ax.set_xlabel(axis_name)
            ax.set_title(f"{stat} per {axis_name.split()[0]}", fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    return _save(fig, path, caption)


__all__ = [
    "plot_normalization_axes",
    "plot_normalization_statistics",
    "plot_positional_encoding",
]
