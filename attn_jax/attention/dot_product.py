"""Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need", eq. 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + B) V,

with d_k the per-head query/key width, B an optional additive bias, a boolean mask (True = may
attend) and dropout on the attention weights (sec. 5.4 applies dropout to sub-layer outputs; the
reference tensor2tensor code, Flax and Keras also drop attention weights, which is what the
`dropout_rate` here does).

Two paths compute the same function:
  * fused: `jax.nn.dot_product_attention`, used whenever neither the weights nor weight dropout are
    needed, so that GPUs get the cuDNN flash kernel (`implementation="cudnn"`) and XLA may fuse the
    rest;
  * explicit: logits, float32 softmax, weights, used to return/sow weights or to drop them out.

Masking semantics shared by both paths:
  * a key masked out by `mask` gets exactly zero weight (not exp(-big));
  * a query row whose keys are all masked out by `mask` gets all-zero weights and a zero output
    (never NaN, never the uniform average of the values);
  * `bias` is added to the logits as given; a row fully masked *through a bias* (see
    `masks.mask_to_bias`) gets uniform weights, since it cannot be told apart from a real bias.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from attn_jax.attention.masks import causal_mask, combine_masks, large_negative


def _as_4d(x: jax.Array | None) -> jax.Array | None:
    if x is None:
        return None
    x = jnp.asarray(x)
    assert x.ndim <= 4, f"masks/biases broadcast to [B, H, Tq, Tk]; got shape {x.shape}"
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def _check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    assert q.ndim == k.ndim == v.ndim == 4, "q, k, v must be [B, T, H, Dh]"
    assert q.shape[0] == k.shape[0] == v.shape[0], "q, k, v batch sizes differ"
    assert q.shape[2] == k.shape[2] == v.shape[2], "q, k, v head counts differ"
    assert q.shape[3] == k.shape[3], "q and k head widths differ"
    assert k.shape[1] == v.shape[1], "k and v lengths differ"


def dot_product_attention_weights(
    q: jax.Array,
    k: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    is_causal: bool = False,
) -> jax.Array:
    """softmax(QK^T / sqrt(Dh) + bias) with masked entries set to exactly zero.

    The logits and the softmax are computed in float32 whatever the input dtype, because bf16
    logits lose the small differences that decide the weights.

    Args:
      q: [B, Tq, H, Dh] queries.
      k: [B, Tk, H, Dh] keys.
      mask: bool, broadcastable to [B, H, Tq, Tk], True = may attend.
      bias: additive, broadcastable to [B, H, Tq, Tk].
      is_causal: also restrict query i to keys j <= i.

    Returns:
      float32 weights [B, H, Tq, Tk]; rows sum to 1, or to 0 where every key is masked.
    """
    tq, tk = q.shape[1], k.shape[1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits * (1.0 / math.sqrt(q.shape[-1]))
    if bias is not None:
        logits = logits + _as_4d(bias).astype(jnp.float32)
    mask = combine_masks(_as_4d(mask), causal_mask(tq, tk) if is_causal else None)
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    # Finite fill keeps a fully-masked row finite; the `where` after the softmax turns exp(-big)
    # into an exact zero and makes such a row all zeros instead of uniform.
    logits = jnp.where(mask, logits, large_negative(jnp.float32))
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.where(mask, weights, 0.0)


def scaled_dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    return_weights: bool = False,
    implementation: str | None = None,
    is_causal: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Multi-head scaled dot-product attention, eq. 1 of Vaswani et al. 2017.

    Args:
      q: [B, Tq, H, Dh] queries.
      k: [B, Tk, H, Dh] keys.
      v: [B, Tk, H, Dv] values (same dtype as q and k).
      mask: bool, broadcastable to [B, H, Tq, Tk], True = may attend.
      bias: additive logit bias, broadcastable to [B, H, Tq, Tk].
      dropout_rate: probability of dropping each attention weight (independently per batch
        element, head, query and key); kept weights are scaled by 1 / (1 - rate).
      dropout_rng: PRNG key for the dropout; required when dropout is applied.
      deterministic: if True no dropout is applied.
      return_weights: also return the attention weights (before dropout).
      implementation: passed to `jax.nn.dot_product_attention` on the fused path ("xla",
        "cudnn", or None to let JAX choose); ignored on the explicit path.
      is_causal: restrict query i to keys j <= i (top-left aligned); on the fused path the kernel
        can then skip the masked blocks instead of reading a mask.

    Returns:
      output [B, Tq, H, Dv] in v's dtype, or (output, weights [B, H, Tq, Tk]) when
      `return_weights`; weights are in v's dtype.

    Raises:
      ValueError: if dropout is to be applied and no `dropout_rng` is given.
    """
    _check_qkv(q, k, v)
    apply_dropout = dropout_rate > 0.0 and not deterministic
    if apply_dropout and dropout_rng is None:
        raise ValueError("attention dropout needs a dropout_rng when deterministic=False")
    mask = _as_4d(mask)
    if mask is not None:
        mask = mask.astype(bool)
    bias = _as_4d(bias)

    if not return_weights and not apply_dropout:
        out = jax.nn.dot_product_attention(
            q, k, v, bias=bias, mask=mask, is_causal=is_causal, implementation=implementation
        )
        if mask is not None:
            # The fused kernel averages the values of a row whose keys are all masked; zero it so
            # that both paths agree. The reduction runs on the unbroadcast mask, so it is cheap.
            allowed = combine_masks(
                mask, causal_mask(q.shape[1], k.shape[1]) if is_causal else None
            )
            row_ok = jnp.any(allowed, axis=-1)  # [b|1, h|1, Tq]
            row_ok = jnp.broadcast_to(row_ok, (q.shape[0], q.shape[2], q.shape[1]))
            out = jnp.where(jnp.transpose(row_ok, (0, 2, 1))[..., None], out, 0)
        return out

    weights = dot_product_attention_weights(q, k, mask=mask, bias=bias, is_causal=is_causal)
    mixing = weights
    if apply_dropout:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        mixing = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    out = jnp.einsum(
        "bhqk,bkhd->bqhd", mixing.astype(v.dtype), v, preferred_element_type=jnp.float32
    ).astype(v.dtype)
    if return_weights:
        return out, weights.astype(v.dtype)
    return out
