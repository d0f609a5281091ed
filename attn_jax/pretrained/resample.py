"""Resampling of position grids between resolutions, for fine-tuning at another image or window
size than the checkpoint was trained at (`config.init_from`, attn_jax/train/checkpoint.py).

A ViT's absolute position embedding holds a grid of h x w patch positions (after its class token);
a Swin block's relative-position bias table holds a (2M-1) x (2M-1) grid of offsets per head. At
another resolution the grid is resized bicubically, as timm's `resample_abs_pos_embed` and the
Swin repository's fine-tuning do, with PyTorch's bicubic: `F.interpolate(mode="bicubic",
align_corners=False, antialias=False)`. `jax.image.resize` is not that function (its cubic is
Keys' a = -0.5 and it antialiases when shrinking), so the weights are built here: a = -0.75, pixel
centres at half-integers, taps beyond the border clamped to the edge. Pure numpy, float64.
"""

from __future__ import annotations

import math

import numpy as np

# PyTorch's cubic convolution coefficient (upsample_bicubic2d); Keys' -0.5 gives other values.
_A = -0.75


def _cubic(t: np.ndarray) -> np.ndarray:
    """The cubic convolution kernel at distances |t| < 2 (zero beyond)."""
    t = np.abs(t)
    near = ((_A + 2) * t - (_A + 3)) * t * t + 1
    far = ((_A * t - 5 * _A) * t + 8 * _A) * t - 4 * _A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of PyTorch's bicubic resize along one axis (align_corners=False).

    Output sample i reads the input at (i + 0.5) * n_in / n_out - 0.5 (not clamped, as PyTorch
    leaves it for cubic modes); its four taps floor(x) - 1 .. floor(x) + 2 are clamped into
    [0, n_in - 1], so that weights of taps beyond the border add to the edge sample.
    """
    assert n_in > 0 and n_out > 0, (n_in, n_out)
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(x)
    weights = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    for k in range(-1, 3):
        tap = base + k
        np.add.at(weights, (rows, np.clip(tap, 0, n_in - 1).astype(np.int64)), _cubic(x - tap))
    return weights


def resize_bicubic(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`grid` [..., h, w] resized to [..., *size] as PyTorch's bicubic interpolate does.

    The same size returns the grid unchanged; the result keeps the input's dtype (computed in
    float64).
    """
    h, w = grid.shape[-2:]
    if (h, w) == tuple(size):
        return grid
    rows, cols = bicubic_weights(h, size[0]), bicubic_weights(w, size[1])
    out = np.einsum("ih,...hw,jw->...ij", rows, np.asarray(grid, np.float64), cols)
    return out.astype(grid.dtype)


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side and side * side == n else None


def position_embedding_grids(there: int, here: int) -> tuple[int, int, int] | None:
    """(prefix tokens, side there, side here) when `there` and `here` position-embedding lengths
    are the same number of prefix tokens (a class token: 1; none: 0) before a square grid of
    patches; None when no single reading fits both."""
    fits = []
    for prefix in (0, 1):
        a, b = _square_side(there - prefix), _square_side(here - prefix)
        if a and b:
            fits.append((prefix, a, b))
    return fits[0] if len(fits) == 1 else None


def resample_position_embedding(embedding: np.ndarray, length: int) -> np.ndarray:
    """A ViT position embedding [..., T, C] (prefix tokens, then a square grid of patches in
    row-major order) resampled to `length` tokens: the prefix kept, the grid resized bicubically.

    Raises:
      ValueError: lengths that are not prefix + square grids with the same prefix.
    """
    t, c = embedding.shape[-2:]
    plan = position_embedding_grids(t, length)
    if plan is None:
        raise ValueError(f"position embeddings of {t} and {length} tokens are not square grids")
    prefix, a, b = plan
    lead = embedding.shape[:-2]
    grid = np.moveaxis(embedding[..., prefix:, :].reshape(*lead, a, a, c), -1, -3)
    grid = np.moveaxis(resize_bicubic(grid, (b, b)), -3, -1).reshape(*lead, b * b, c)
    return np.concatenate([embedding[..., :prefix, :], grid], axis=-2)


def relative_table_sides(there: int, here: int) -> tuple[int, int] | None:
    """(side there, side here) when both are relative-position table lengths (2M-1)^2."""
    a, b = _square_side(there), _square_side(here)
    return (a, b) if a and b and a % 2 and b % 2 else None


def resample_relative_table(table: np.ndarray, rows: int) -> np.ndarray:
    """A relative-position bias table [(2M-1)^2, heads] resampled to `rows` = (2M'-1)^2 rows:
    each head's (2M-1) x (2M-1) grid of offsets resized bicubically.

    Raises:
      ValueError: row counts that are not squares of odd sides.
    """
    sides = relative_table_sides(table.shape[0], rows)
    if sides is None:
        raise ValueError(f"tables of {table.shape[0]} and {rows} rows are not (2M-1)^2 grids")
    a, b = sides
    heads = table.shape[1]
    grid = table.T.reshape(heads, a, a)
    return resize_bicubic(grid, (b, b)).reshape(heads, b * b).T


def grid_resampler(name: str, there: tuple, here: tuple):
    """How a checkpoint leaf of shape `there` becomes this model's leaf `name` of shape `here`
    when the two differ only in a position grid: (a note such as "14x14->24x24", a function of
    the array) or None.

    Recognised by the leaf's name: a ViT's or CLIP's absolute position embedding
    (`pos_embedding`, `positional_embedding` outside a `text` tower: [..., T, C]) and a Swin
    block's `relative_position_bias_table` ([(2M-1)^2, heads]).
    """
    parts = name.split("/")
    leaf = parts[-1]
    # A text tower's positions (CLIP's "text/positional_embedding") are a sequence, not a grid.
    if len(there) != len(here) or there == here or "text" in parts:
        return None
    if leaf in ("pos_embedding", "positional_embedding") and len(here) >= 2:
        if there[:-2] != here[:-2] or there[-1] != here[-1]:
            return None
        plan = position_embedding_grids(there[-2], here[-2])
        if plan is None:
            return None
        _, a, b = plan
        return f"{a}x{a}->{b}x{b}", lambda x: resample_position_embedding(x, here[-2])
    if leaf == "relative_position_bias_table" and len(here) == 2 and there[1] == here[1]:
        sides = relative_table_sides(there[0], here[0])
        if sides is None:
            return None
        a, b = sides
        return f"{a}x{a}->{b}x{b}", lambda x: resample_relative_table(x, here[0])
    return None
