"""Blockwise scaled dot-product attention whose memory grows linearly with the sequence length.

The function of `dot_product.scaled_dot_product_attention` (Vaswani et al. 2017, eq. 1),

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + B) V,

computed one [block_q, block_k] tile of logits at a time, so that the [Tq, Tk] weights never
exist in memory:

- forward: the online softmax of Rabe & Staats 2021 ("Self-attention Does Not Need O(n^2)
  Memory") and Dao et al. 2022 ("FlashAttention: Fast and Memory-Efficient Exact Attention with
  IO-Awareness", Algorithm 1). For each query block a running row maximum m, normaliser l and
  un-normalised output acc are updated key block by key block:

      m' = max(m, rowmax(S_j)),  P_j = exp(S_j - m'),
      l' = exp(m - m') l + rowsum(P_j),  acc' = exp(m - m') acc + P_j V_j,

  and out = acc / l at the end; only out and the log-sum-exp L = m + log l are kept.
- backward (a `jax.custom_vjp`, Dao et al. 2022 Algorithm 4 in the loop order of FlashAttention-2):
  the tiles are recomputed from Q, K and L, P = exp(S - L), and with D = rowsum(dO * O),

      dV = P^T dO,  dP = dO V^T,  dS = P * (dP - D),  dQ = scale dS K,  dK = scale dS^T Q,

  dBias = dS summed over the axes the bias broadcasts along. Differentiating the loops with plain
  autodiff would save every tile for the backward pass: quadratic memory again.

All logits, softmax statistics and accumulators are float32, whatever the input dtype.

Layout and masking are those of `dot_product.py`: q, k, v are [B, T, H, Dh]; a boolean `mask`
(True = may attend) and an additive `bias` broadcast to [B, H, Tq, Tk]; a key masked out gets
exactly zero weight and a query row with no allowed key gives a zero output (never NaN).
`is_causal` (query i sees keys j <= i, top-left aligned) and a key-padding mask [B, 1, 1, Tk]
(`masks.padding_mask`) are applied per tile from positions, so they cost no [Tq, Tk] array; a mask
or bias with full [Tq, Tk] axes is sliced tile by tile (it is quadratic itself, but nothing
quadratic is added to it). Lengths that are not a multiple of the block are padded, and the padded
keys are masked out. No attention dropout: a caller that needs it takes the explicit path.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class _Tiling(NamedTuple):
    """Static facts the kernels close over (hashable: it is a `nondiff_argnums` argument)."""

    tq: int  # true query length (before padding)
    tk: int  # true key length
    block_q: int
    block_k: int
    is_causal: bool
    scale: float


def _balanced_block(length: int, max_block: int) -> int:
    """The smallest block that cuts `length` into as few blocks as `max_block` would.

    Equal blocks pad the sequence by less than one block in total, e.g. 1000 tokens with
    max_block 512 become two blocks of 500 instead of two of 512 with 24 wasted rows.
    """
    num_blocks = -(-length // max_block)
    return -(-length // num_blocks)


def _as_4d(x: jax.Array | None, dtype) -> jax.Array | None:
    if x is None:
        return None
    x = jnp.asarray(x, dtype)
    assert x.ndim <= 4, f"masks/biases broadcast to [B, H, Tq, Tk]; got shape {x.shape}"
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def _pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    """Pads axis `axis` of x at the end to `size`, unless it is a broadcast axis of length 1."""
    if x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _tile_starts(x: jax.Array, q_start, k_start) -> tuple:
    """Start indices of tile (q_start, k_start) of a [B|1, H|1, Tq|1, Tk|1] mask or bias."""
    zero = jnp.zeros((), jnp.int32)
    return (
        zero,
        zero,
        q_start if x.shape[2] > 1 else zero,
        k_start if x.shape[3] > 1 else zero,
    )


def _tile(x: jax.Array | None, q_start, k_start, t: _Tiling) -> jax.Array | None:
    """The [.., block_q|1, block_k|1] tile of a mask or bias; broadcast axes stay length 1."""
    if x is None:
        return None
    sizes = (
        x.shape[0],
        x.shape[1],
        t.block_q if x.shape[2] > 1 else 1,
        t.block_k if x.shape[3] > 1 else 1,
    )
    return lax.dynamic_slice(x, _tile_starts(x, q_start, k_start), sizes)


def _tile_logits(q_i, k_j, mask, bias, q_start, k_start, t: _Tiling) -> jax.Array:
    """Scaled, biased float32 logits [B, H, bq, bk] of one tile; disallowed entries are -inf.

    -inf (not a large finite number) is what makes a disallowed key's weight exactly zero below:
    exp(-inf - m) = 0 for every finite m, and the row statistics treat an all -inf row apart.
    """
    s = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j, preferred_element_type=jnp.float32) * t.scale
    if bias is not None:
        s = s + _tile(bias, q_start, k_start, t).astype(jnp.float32)
    allowed = None
    if mask is not None:
        allowed = _tile(mask, q_start, k_start, t)
    k_pos = k_start + jnp.arange(t.block_k)
    if t.tk % t.block_k:  # padded keys exist
        valid = (k_pos < t.tk)[None, None, None, :]
        allowed = valid if allowed is None else allowed & valid
    if t.is_causal:
        q_pos = q_start + jnp.arange(t.block_q)
        causal = (k_pos[None, :] <= q_pos[:, None])[None, None]
        allowed = causal if allowed is None else allowed & causal
    if allowed is not None:
        s = jnp.where(allowed, s, -jnp.inf)
    return s


def _num_key_blocks(q_start, t: _Tiling, num_k: int):
    """Key blocks query block at `q_start` must visit: all, or up to its diagonal if causal."""
    if not t.is_causal:
        return num_k
    last_query = q_start + t.block_q - 1
    return jnp.minimum(num_k, last_query // t.block_k + 1)


def _forward(t: _Tiling, q, k, v, mask, bias):
    """out [B, H, Tq', Dv] and log-sum-exp [B, H, Tq'] (0 for rows with no allowed key)."""
    b, h, tq_pad, _ = q.shape
    dv = v.shape[-1]
    num_q, num_k = tq_pad // t.block_q, k.shape[2] // t.block_k

    def query_block(i, carry):
        out, lse = carry
        q_start = i * t.block_q
        q_i = lax.dynamic_slice_in_dim(q, q_start, t.block_q, axis=2)

        def key_block(j, stats):
            m, norm, acc = (
                stats  # max, normaliser l, output: [B, H, bq], [B, H, bq], [B, H, bq, Dv]
            )
            k_start = j * t.block_k
            k_j = lax.dynamic_slice_in_dim(k, k_start, t.block_k, axis=2)
            v_j = lax.dynamic_slice_in_dim(v, k_start, t.block_k, axis=2)
            s = _tile_logits(q_i, k_j, mask, bias, q_start, k_start, t)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            # A row with no allowed key so far keeps m = -inf; shifting it by 0 keeps its
            # exponentials exactly 0 instead of NaN (-inf - -inf).
            shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p = jnp.exp(s - shift[..., None])
            rescale = jnp.exp(m - shift)
            norm = norm * rescale + jnp.sum(p, axis=-1)
            pv = jnp.einsum(
                "bhqk,bhkd->bhqd", p.astype(v.dtype), v_j, preferred_element_type=jnp.float32
            )
            return m_new, norm, acc * rescale[..., None] + pv

        init = (
            jnp.full((b, h, t.block_q), -jnp.inf, jnp.float32),
            jnp.zeros((b, h, t.block_q), jnp.float32),
            jnp.zeros((b, h, t.block_q, dv), jnp.float32),
        )
        m, norm, acc = lax.fori_loop(0, _num_key_blocks(q_start, t, num_k), key_block, init)
        seen = norm > 0
        o_i = jnp.where(seen[..., None], acc / jnp.where(seen, norm, 1.0)[..., None], 0.0)
        lse_i = jnp.where(seen, m + jnp.log(jnp.where(seen, norm, 1.0)), 0.0)
        out = lax.dynamic_update_slice_in_dim(out, o_i.astype(out.dtype), q_start, axis=2)
        lse = lax.dynamic_update_slice_in_dim(lse, lse_i, q_start, axis=2)
        return out, lse

    out = jnp.zeros((b, h, tq_pad, dv), v.dtype)
    lse = jnp.zeros((b, h, tq_pad), jnp.float32)
    return lax.fori_loop(0, num_q, query_block, (out, lse))


def _reduce_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums x over the axes along which an array of `shape` was broadcast to x's shape."""
    axes = tuple(a for a, (n, m) in enumerate(zip(shape, x.shape, strict=True)) if n == 1 and m > 1)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _backward(t: _Tiling, residuals, d_out):
    q, k, v, mask, bias, out, lse = residuals
    num_q, num_k = q.shape[2] // t.block_q, k.shape[2] // t.block_k
    # D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the softmax's correction term.
    delta = jnp.einsum(
        "bhqd,bhqd->bhq", d_out, out, preferred_element_type=jnp.float32
    )  # [B, H, Tq']

    def key_block(j, carry):
        dq, dk, dv, dbias = carry
        k_start = j * t.block_k
        k_j = lax.dynamic_slice_in_dim(k, k_start, t.block_k, axis=2)
        v_j = lax.dynamic_slice_in_dim(v, k_start, t.block_k, axis=2)

        def query_block(i, inner):
            dq, dk_j, dv_j, dbias = inner
            q_start = i * t.block_q
            q_i = lax.dynamic_slice_in_dim(q, q_start, t.block_q, axis=2)
            do_i = lax.dynamic_slice_in_dim(d_out, q_start, t.block_q, axis=2)
            lse_i = lax.dynamic_slice_in_dim(lse, q_start, t.block_q, axis=2)
            delta_i = lax.dynamic_slice_in_dim(delta, q_start, t.block_q, axis=2)
            s = _tile_logits(q_i, k_j, mask, bias, q_start, k_start, t)
            p = jnp.exp(s - lse_i[..., None])  # the forward's weights; disallowed: exactly 0
            dv_j = dv_j + jnp.einsum(
                "bhqk,bhqd->bhkd", p.astype(do_i.dtype), do_i, preferred_element_type=jnp.float32
            )
            dp = jnp.einsum("bhqd,bhkd->bhqk", do_i, v_j, preferred_element_type=jnp.float32)
            ds = p * (dp - delta_i[..., None])  # d(loss)/d(logits), [B, H, bq, bk]
            if dbias is not None:
                starts = _tile_starts(dbias, q_start, k_start)
                tile = _tile(dbias, q_start, k_start, t)
                dbias = lax.dynamic_update_slice(dbias, tile + _reduce_to(ds, tile.shape), starts)
            ds = ds.astype(q.dtype)
            dq_i = lax.dynamic_slice_in_dim(dq, q_start, t.block_q, axis=2)
            dq_i = dq_i + t.scale * jnp.einsum(
                "bhqk,bhkd->bhqd", ds, k_j, preferred_element_type=jnp.float32
            )
            dq = lax.dynamic_update_slice_in_dim(dq, dq_i, q_start, axis=2)
            dk_j = dk_j + t.scale * jnp.einsum(
                "bhqk,bhqd->bhkd", ds, q_i, preferred_element_type=jnp.float32
            )
            return dq, dk_j, dv_j, dbias

        # Causal: query blocks that end before this key block starts see none of its keys.
        first_q = k_start // t.block_q if t.is_causal else 0
        zeros_k = jnp.zeros(k_j.shape, jnp.float32)
        zeros_v = jnp.zeros(v_j.shape, jnp.float32)
        dq, dk_j, dv_j, dbias = lax.fori_loop(
            first_q, num_q, query_block, (dq, zeros_k, zeros_v, dbias)
        )
        dk = lax.dynamic_update_slice_in_dim(dk, dk_j, k_start, axis=2)
        dv = lax.dynamic_update_slice_in_dim(dv, dv_j, k_start, axis=2)
        return dq, dk, dv, dbias

    init = (
        jnp.zeros(q.shape, jnp.float32),
        jnp.zeros(k.shape, jnp.float32),
        jnp.zeros(v.shape, jnp.float32),
        None if bias is None else jnp.zeros(bias.shape, jnp.float32),
    )
    dq, dk, dv, dbias = lax.fori_loop(0, num_k, key_block, init)
    return (
        dq.astype(q.dtype),
        dk.astype(k.dtype),
        dv.astype(v.dtype),
        None,  # the boolean mask has no cotangent
        None if bias is None else dbias.astype(bias.dtype),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(t: _Tiling, q, k, v, mask, bias):
    return _forward(t, q, k, v, mask, bias)[0]


def _attention_fwd(t: _Tiling, q, k, v, mask, bias):
    out, lse = _forward(t, q, k, v, mask, bias)
    return out, (q, k, v, mask, bias, out, lse)


_attention.defvjp(_attention_fwd, _backward)


def blockwise_dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    is_causal: bool = False,
    block_q: int = 256,
    block_k: int = 256,
    scale: float | None = None,
) -> jax.Array:
    """Scaled dot-product attention in tiles, memory linear in the length (forward and backward).

    Equal, up to float rounding, to `scaled_dot_product_attention(q, k, v, mask=mask, bias=bias,
    is_causal=is_causal)` without dropout, in value and in its gradients with respect to q, k, v
    and bias; neither pass materialises the [B, H, Tq, Tk] logits or weights.

    Args:
      q: [B, Tq, H, Dh] queries.
      k: [B, Tk, H, Dh] keys.
      v: [B, Tk, H, Dv] values.
      mask: bool, broadcastable to [B, H, Tq, Tk], True = may attend. A key-padding mask
        [B, 1, 1, Tk] (`masks.padding_mask`) costs O(B Tk); a full [.., Tq, Tk] mask is read tile
        by tile.
      bias: additive logit bias, broadcastable to [B, H, Tq, Tk] (e.g. a relative position bias
        [1, H, Tq, Tk]); its gradient has the bias's own shape.
      is_causal: restrict query i to keys j <= i (top-left aligned, as `masks.causal_mask`); key
        blocks above the diagonal are skipped, halving the work.
      block_q: largest query tile; the query length is cut into ceil(Tq / block_q) equal blocks
        (the last one padded). 256 was the fastest of 128-1024 for forward + backward at 4,096
        tokens, 8 heads of 64, on 2 CPU cores (benchmarks/README.md).
      block_k: largest key tile, likewise.
      scale: logit scale; defaults to 1 / sqrt(Dh).

    Returns:
      [B, Tq, H, Dv] in v's dtype; rows whose keys are all masked out are zero.
    """
    assert q.ndim == k.ndim == v.ndim == 4, "q, k, v must be [B, T, H, Dh]"
    assert q.shape[0] == k.shape[0] == v.shape[0], "q, k, v batch sizes differ"
    assert q.shape[2] == k.shape[2] == v.shape[2], "q, k, v head counts differ"
    assert q.shape[3] == k.shape[3], "q and k head widths differ"
    assert k.shape[1] == v.shape[1], "k and v lengths differ"
    assert block_q > 0 and block_k > 0, "block sizes must be positive"
    b, tq, h, dh = q.shape
    tk = k.shape[1]
    full = (b, h, tq, tk)
    mask = _as_4d(mask, bool)
    bias = _as_4d(bias, None)
    for name, x in (("mask", mask), ("bias", bias)):
        assert x is None or all(n in (1, m) for n, m in zip(x.shape, full, strict=True)), (
            f"{name} of shape {x.shape} does not broadcast to [B, H, Tq, Tk] = {full}"
        )

    bq, bk = _balanced_block(tq, block_q), _balanced_block(tk, block_k)
    tq_pad, tk_pad = -(-tq // bq) * bq, -(-tk // bk) * bk
    tiling = _Tiling(
        tq, tk, bq, bk, bool(is_causal), float(1.0 / math.sqrt(dh) if scale is None else scale)
    )
    # Head-major inside: every tile product is then a plain batched matmul over [B, H], and the
    # layout changes once per call instead of once per tile. The pads' and transposes' own VJPs
    # crop and turn the gradients back.
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [B, T, H, D] -> [B, H, T, D]
    q = _pad_axis(q, 2, tq_pad)
    k, v = _pad_axis(k, 2, tk_pad), _pad_axis(v, 2, tk_pad)
    if mask is not None:
        mask = _pad_axis(_pad_axis(mask, 2, tq_pad, True), 3, tk_pad, False)
    if bias is not None:
        bias = _pad_axis(_pad_axis(bias, 2, tq_pad), 3, tk_pad)
    out = _attention(tiling, q, k, v, mask, bias)
    return jnp.swapaxes(out[:, :, :tq], 1, 2)
