"""Boolean attention masks and their additive-bias form.

Convention (as in Flax and `jax.nn.dot_product_attention`): a mask is boolean, True = the query may
attend to the key, and broadcastable to [B, H, Tq, Tk]. PyTorch's `nn.MultiheadAttention` uses the
opposite polarity (True = masked out); convert at the boundary, never inside a model.

The causal mask implements the decoder self-attention restriction of Vaswani et al. 2017,
"Attention Is All You Need", sec. 3.2.3: position i attends to positions j <= i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike


def causal_mask(tq: int, tk: int | None = None) -> jax.Array:
    """Causal mask, query i may attend key j iff j <= i.

    Aligned at the top-left corner (query 0 sees key 0), the same convention as
    `jax.nn.dot_product_attention(is_causal=True)`, so both attention paths agree when tq != tk.

    Args:
      tq: number of query positions.
      tk: number of key positions; defaults to `tq`.

    Returns:
      bool array [1, 1, tq, tk].
    """
    tk = tq if tk is None else tk
    allowed = jnp.arange(tk)[None, :] <= jnp.arange(tq)[:, None]
    return allowed[None, None]


def padding_mask(valid: jax.Array) -> jax.Array:
    """Key-padding mask from per-position validity.

    Args:
      valid: bool [B, T], True where the token is real.

    Returns:
      bool [B, 1, 1, T]: every query (and head) may attend only the real keys.
    """
    valid = jnp.asarray(valid, dtype=bool)
    assert valid.ndim == 2, f"valid must be [B, T], got shape {valid.shape}"
    return valid[:, None, None, :]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the masks that are not None (broadcasting); None if all are None."""
    present = [jnp.asarray(m, dtype=bool) for m in masks if m is not None]
    if not present:
        return None
    combined = present[0]
    for m in present[1:]:
        combined = jnp.logical_and(combined, m)
    return combined


def large_negative(dtype: DTypeLike) -> jax.Array:
    """Half of `finfo(dtype).min`: finite, and two of them still sum to a finite number.

    A true -inf would make a fully-masked softmax row NaN (-inf - (-inf)); finfo.min itself
    overflows to -inf as soon as two masking biases are added together.
    """
    return jnp.asarray(jnp.finfo(dtype).min / 2, dtype=dtype)


def masked_softmax(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """float32 softmax over the last axis with masked entries exactly zero.

    The one masked softmax of the package: dot-product and additive attention both normalise
    their scores with it.

    Args:
      logits: [..., Tk].
      mask: bool broadcastable to `logits`, True = may attend.

    Returns:
      float32 weights; rows sum to 1, or to 0 where every key is masked (never NaN, never the
      uniform average a softmax of equal fill values would give).
    """
    logits = logits.astype(jnp.float32)
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    # The finite fill keeps an all-masked row finite; the second `where` turns exp(-big) into an
    # exact zero and an all-masked row into zeros instead of a uniform row.
    logits = jnp.where(mask, logits, large_negative(jnp.float32))
    return jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)


def mask_to_bias(mask: jax.Array, dtype: DTypeLike = jnp.float32) -> jax.Array:
    """Additive attention bias from a boolean mask: 0 where allowed, a large finite negative else.

    A softmax row whose keys are all masked through this bias becomes uniform (all its logits are
    equal), never NaN. Pass the boolean `mask` instead of a bias where masked keys must get
    exactly zero weight and fully-masked rows must yield zeros.

    Args:
      mask: bool, True = may attend.
      dtype: float dtype of the bias.

    Returns:
      array of `mask.shape` and `dtype`.
    """
    mask = jnp.asarray(mask, dtype=bool)
    return jnp.where(mask, jnp.zeros((), dtype), large_negative(dtype))
