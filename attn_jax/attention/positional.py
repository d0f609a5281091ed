"""Sinusoidal positional encoding: Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser,
Polosukhin 2017, "Attention Is All You Need" (NeurIPS 2017), sec. 3.5:

    PE(pos, 2i)     = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model))

Channels are INTERLEAVED as in the paper (sin on even channels, cos on odd ones). tensor2tensor,
fairseq and MAE concatenate [sin | cos] instead; the two differ by a fixed permutation of the
channels, which a model learns around, but they are not equal as arrays, so weights trained with
one do not load into the other.

The encoding is a constant, not a parameter: it is added to the (scaled) token embeddings,
X = S + P.

The 2D sine encoding of DETR (Carion, Massa, Synnaeve, Usunier, Kirillov, Zagoruyko 2020,
"End-to-End Object Detection with Transformers", ECCV 2020, sec. 3.2 and appendix A.3),
`sine_position_encoding_2d`, applies the same formula to each image axis separately, with the
position of a pixel counted over the real (non-padded) pixels of its column (y) and row (x):

    y = cumsum of the mask down the column,  x = cumsum of the mask along the row  (1-based)
    normalize:  y <- y / (y_last + 1e-6) * scale,  x <- x / (x_last + 1e-6) * scale
    E_y[2i] = sin(y / T^(2i / F)),  E_y[2i + 1] = cos(y / T^(2i / F))   (F = num_pos_feats)
    output = [E_y | E_x]  (2F channels: the y encoding first, then the x encoding)

with y_last / x_last the count of real pixels in that column / row, so that the last real
row and column sit at `scale` (2 pi) and the encoding does not depend on how much padding the
batch needed. Within each axis the channels are interleaved sin/cos as in DETR's official
PositionEmbeddingSine (which stacks the sines of the even channels with the cosines of the odd
ones and flattens), and the two axes are concatenated y first, so DETR checkpoints' learned
weights see the same channel order.

MAE's fixed 2D sin-cos table (He et al. 2022), `sincos_2d_posemb`, is the third layout: per axis
[sin | cos] concatenated, the column (w) encoding first, positions not normalized.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike


def sinusoidal_position_encoding(
    length: int,
    d_model: int,
    *,
    offset: int | jax.Array = 0,
    max_timescale: float = 10_000.0,
    dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """The table PE[pos, c] of sec. 3.5 for positions offset .. offset + length - 1.

    Args:
      length: number of positions.
      d_model: encoding width; an odd width ends with a sine channel.
      offset: first position (may be traced, e.g. the step of incremental decoding).
      max_timescale: the 10000 of the paper.
      dtype: output dtype; the angles are computed in float32 regardless.

    Returns:
      [length, d_model] array.
    """
    pos = (jnp.arange(length) + offset).astype(jnp.float32)[:, None]  # [T, 1]
    channel = jnp.arange(d_model)
    # Channels 2i and 2i + 1 share the frequency 1 / 10000^(2i / d).
    two_i = (channel - channel % 2).astype(jnp.float32)
    angle = pos / jnp.power(max_timescale, two_i / d_model)[None, :]  # [T, d]
    table = jnp.where(channel % 2 == 0, jnp.sin(angle), jnp.cos(angle))
    return table.astype(dtype)


def sine_position_encoding_2d(
    pixel_mask: jax.Array,
    num_pos_feats: int = 128,
    temperature: float = 10_000.0,
    normalize: bool = True,
    scale: float = 2 * math.pi,
) -> jax.Array:
    """DETR's 2D sine encoding of a (padded) image grid (module docstring).

    Args:
      pixel_mask: bool [B, H, W], True where the pixel (or feature-map cell) is real, False on
        padding. This is the opposite polarity of DETR's `NestedTensor.mask` (True = padding).
      num_pos_feats: F, the channels per axis (even); DETR uses d_model / 2 = 128.
      temperature: T, the 10000 of the sinusoid's wavelengths.
      normalize: divide the positions by the real extent of their row/column and multiply by
        `scale` (DETR's default), so that positions run over (0, scale].
      scale: the extent of the normalized positions (used only with `normalize`).

    Returns:
      float32 [B, H, W, 2F]: channels [0, F) encode y, [F, 2F) encode x, each interleaved
      sin(c0), cos(c0), sin(c1), cos(c1), ... Padded cells get values too (their cumsum stops
      growing); attention masks them out as keys.

    Raises:
      ValueError: a mask that is not [B, H, W], or an odd num_pos_feats.
    """
    if pixel_mask.ndim != 3:
        raise ValueError(
            f"sine_position_encoding_2d expects a pixel mask [B, H, W]; got shape "
            f"{pixel_mask.shape}"
        )
    if num_pos_feats % 2:
        raise ValueError(
            f"sine_position_encoding_2d needs an even num_pos_feats (sin/cos pairs); got "
            f"{num_pos_feats}"
        )
    real = pixel_mask.astype(jnp.float32)
    y = jnp.cumsum(real, axis=1)  # [B, H, W], 1-based row index among the real rows
    x = jnp.cumsum(real, axis=2)
    if normalize:
        eps = 1e-6  # DETR's; keeps an all-padding column finite (0 / eps = 0)
        y = y / (y[:, -1:, :] + eps) * scale
        x = x / (x[:, :, -1:] + eps) * scale
    channel = jnp.arange(num_pos_feats)
    # Channels 2i and 2i + 1 share the wavelength T^(2i / F).
    inv_freq = 1.0 / jnp.power(temperature, (channel - channel % 2) / num_pos_feats)

    def encode(pos: jax.Array) -> jax.Array:
        angle = pos[..., None] * inv_freq  # [B, H, W, F]
        return jnp.where(channel % 2 == 0, jnp.sin(angle), jnp.cos(angle))

    return jnp.concatenate([encode(y), encode(x)], axis=-1)


def sincos_2d_posemb(grid_h: int, grid_w: int, dim: int, class_token: bool) -> np.ndarray:
    """MAE's fixed 2D sin-cos position embedding of a grid_h x grid_w patch grid.

    He, Chen, Xie, Li, Dollar, Girshick 2022, "Masked Autoencoders Are Scalable Vision Learners"
    (CVPR 2022), sec. 3 ("we add positional embeddings (the sine-cosine version)"), as in its
    official code: the first dim / 2 channels encode the patch's column w, the last dim / 2 its
    row h, each as [sin(pos * omega) | cos(pos * omega)] (concatenated, not interleaved) with
    omega_k = 1 / 10000^(k / (dim / 4)), k = 0 .. dim / 4 - 1. Tokens are numbered row-major
    (h * grid_w + w), the order of `attn_jax.models.vit.patchify`. A class token's row is zeros.

    A numpy constant rather than a traced value: it is never trained (MAE registers it with
    requires_grad=False), and XLA folds it into the compiled program.

    Args:
      grid_h: patch rows.
      grid_w: patch columns.
      dim: embedding width, a multiple of 4 (a sin/cos pair per axis).
      class_token: prepend a zero row for the class token.

    Returns:
      float32 [1, grid_h * grid_w (+ 1), dim].

    Raises:
      ValueError: dim not a multiple of 4.
    """
    if dim % 4:
        raise ValueError(
            f"sincos_2d_posemb needs dim divisible by 4 (sin and cos for each of 2 axes); got "
            f"{dim}: pick a hidden size that is a multiple of 4"
        )
    omega = 1.0 / 10_000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))  # [D/4]
    w, h = np.meshgrid(np.arange(grid_w), np.arange(grid_h))  # each [gh, gw]

    def encode(pos: np.ndarray) -> np.ndarray:
        angle = pos.reshape(-1, 1) * omega[None, :]  # [N, D/4]
        return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)

    table = np.concatenate([encode(w), encode(h)], axis=1)  # [N, D]; MAE: "w goes first"
    if class_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return table[None].astype(np.float32)


__all__ = ["sincos_2d_posemb", "sine_position_encoding_2d", "sinusoidal_position_encoding"]
