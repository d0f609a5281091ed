"""Sinusoidal positional encoding: Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser,
Polosukhin 2017, "Attention Is All You Need" (NeurIPS 2017), sec. 3.5:

    PE(pos, 2i)     = sin(pos / 10000^(2i / d_model))
    PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model))

Channels are INTERLEAVED as in the paper (sin on even channels, cos on odd ones). tensor2tensor,
fairseq, DETR and MAE concatenate [sin | cos] instead; the two differ by a fixed permutation of the
channels, which a model learns around, but they are not equal as arrays, so weights trained with
one do not load into the other.

The encoding is a constant, not a parameter: it is added to the (scaled) token embeddings,
X = S + P.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


__all__ = ["sinusoidal_position_encoding"]
