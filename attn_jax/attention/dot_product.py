"""Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need", eq. 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + B) V,

with d_k the per-head query/key width, B an optional additive bias, a boolean mask (True = may
attend) and dropout on the attention weights (sec. 5.4 applies dropout to sub-layer outputs; the
reference tensor2tensor code, Flax and Keras also drop attention weights, which is what the
`dropout_rate` here does).

The implementation is chosen here, in one place, by `implementation` (a model's
`attention_impl`), and every model's attention arrives here (`multi_head.MultiHeadAttention`,
`windows.WindowAttention`, through the functions of `registry.py`):
  * "xla": `jax.nn.dot_product_attention(implementation="xla")`, fused by XLA;
  * "cudnn": the same call with the cuDNN flash kernel (NVIDIA GPUs, float16/bfloat16, head width
    a multiple of 8 up to 128);
  * "explicit": logits, float32 softmax, weights; the only path that can return or sow the
    weights or drop them out, so it is taken whenever those are needed, whatever was asked;
  * "blockwise": `blockwise.blockwise_dot_product_attention`, tiles of an online softmax whose
    memory grows linearly with the length (no dropout, no weights);
  * "auto" (the default): cudnn on a GPU where it supports the shapes and dtype, otherwise the
    fastest of xla and explicit on this platform (`choose_implementation`).

Masking semantics shared by every path:
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
import numpy as np

from attn_jax.attention.dropout import dropout
from attn_jax.attention.masks import causal_mask, combine_masks, masked_softmax
from attn_jax.errors import UserError

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "explicit", "blockwise")

# What "auto" takes on a CPU, measured: forward + backward of one jitted attention call (as in
# benchmarks/attention_kernels.py, no weights returned), float32, median of 30 interleaved runs on
# the project's 2-core CPU box (shared, so the absolute times are loose; explicit won both runs,
# the other under three times the load):
#   ViT-Ti-like (B 32, T 197, 3 heads of 64):  xla 177 ms, explicit 156 ms
#   M1-like (B 128, T 64, 8 heads of 8):       xla  84 ms, explicit  74 ms
# jax's fused call reshapes to grouped queries and vmaps over the groups; XLA:CPU runs the two
# plain einsums of the explicit path faster.
CPU_DEFAULT = "explicit"


class AttentionConfigError(UserError, ValueError):
    """An attention implementation or function that does not exist or cannot run here."""


def check_implementation(implementation: str | None) -> str:
    """The implementation name, None read as "auto"; raises AttentionConfigError if unknown."""
    name = "auto" if implementation is None else implementation
    if name not in IMPLEMENTATIONS:
        raise AttentionConfigError(
            f"unknown attention implementation {name!r}: set model.attention_impl to one of "
            f"{list(IMPLEMENTATIONS)}"
        )
    return name


def _on_cuda_gpu() -> bool:
    device = jax.devices()[0]
    return device.platform == "gpu" and "rocm" not in device.client.platform_version.lower()


def _cudnn_supports(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
    # jax's check_is_flash_attention for half precision (non-Hopper head limit). Its rule that
    # training with a bias needs even lengths is met by `_cudnn_attention`'s padding.
    half = q.dtype in (jnp.float16, jnp.bfloat16) and q.dtype == k.dtype == v.dtype
    head = q.shape[-1]
    return half and head % 8 == 0 and head <= 128 and v.shape[-1] == head


def choose_implementation(
    implementation: str | None,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    need_weights: bool = False,
) -> str:
    """The path that computes this call: "explicit" whenever the weights are needed (returned,
    sown or dropped out), the requested one otherwise, and for "auto" cudnn where it runs, else
    `CPU_DEFAULT` on a CPU and xla elsewhere.

    Raises:
      AttentionConfigError: an unknown name, or cudnn where it cannot run.
    """
    name = check_implementation(implementation)
    if need_weights:
        return "explicit"
    if name == "auto":
        if jax.default_backend() == "gpu" and _on_cuda_gpu() and _cudnn_supports(q, k, v):
            return "cudnn"
        return CPU_DEFAULT if jax.default_backend() == "cpu" else "xla"
    if name == "cudnn":
        if jax.default_backend() != "gpu" or not _on_cuda_gpu():
            raise AttentionConfigError(
                f"attention_impl='cudnn' needs an NVIDIA GPU, and this process runs on "
                f"{jax.default_backend()}: set model.attention_impl=auto or xla"
            )
        if not _cudnn_supports(q, k, v):
            raise AttentionConfigError(
                f"attention_impl='cudnn' does not take {np.dtype(q.dtype).name} inputs with head "
                f"width {q.shape[-1]} (float16/bfloat16, a multiple of 8 up to 128): set "
                "model.dtype=bfloat16 or model.attention_impl=auto"
            )
    return name


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
    return masked_softmax(logits, mask)


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
    implementation: str | None = "auto",
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
      implementation: one of `IMPLEMENTATIONS` (None = "auto"); see the module docstring.
        Returned weights and weight dropout always take the explicit path.
      is_causal: restrict query i to keys j <= i (top-left aligned); the fused kernels can then
        skip the masked blocks instead of reading a mask.

    Returns:
      output [B, Tq, H, Dv] in v's dtype, or (output, weights [B, H, Tq, Tk]) when
      `return_weights`; weights are in v's dtype.

    Raises:
      ValueError: if dropout is to be applied and no `dropout_rng` is given.
      AttentionConfigError: an unknown implementation, or one that cannot run here.
    """
    _check_qkv(q, k, v)
    apply_dropout = dropout_rate > 0.0 and not deterministic
    if apply_dropout and dropout_rng is None:
        raise ValueError("attention dropout needs a dropout_rng when deterministic=False")
    mask = _as_4d(mask)
    if mask is not None:
        mask = mask.astype(bool)
    bias = _as_4d(bias)
    path = choose_implementation(
        implementation,
        q,
        k,
        v,
        need_weights=return_weights or apply_dropout,
    )

    if path == "blockwise":
        return _blockwise()(q, k, v, mask=mask, bias=bias, is_causal=is_causal)
    if path in ("xla", "cudnn"):
        if path == "cudnn":
            out = _cudnn_attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
        else:
            out = jax.nn.dot_product_attention(
                q, k, v, bias=bias, mask=mask, is_causal=is_causal, implementation="xla"
            )
        if mask is not None:
            # The fused kernel averages the values of a row whose keys are all masked; zero it so
            # that every path agrees. The reduction runs on the unbroadcast mask, so it is cheap.
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
        mixing = dropout(weights, dropout_rate, dropout_rng)
    out = jnp.einsum(
        "bhqk,bkhd->bqhd", mixing.astype(v.dtype), v, preferred_element_type=jnp.float32
    ).astype(v.dtype)
    if return_weights:
        return out, weights.astype(v.dtype)
    return out


def _cudnn_attention(q, k, v, *, bias, mask, is_causal: bool) -> jax.Array:
    """`jax.nn.dot_product_attention(implementation="cudnn")` for any lengths and any
    broadcastable mask or bias.

    Two limits of jax's cuDNN wrapper are met here rather than sent to the slower xla path:
    its training rule asks for even query and key lengths (it counts the empty placeholder as a
    bias, so ViT's 197 tokens fail in the backward), and a bias, which a mask becomes, must
    have full [.., Tq, Tk] extent (DETR's key-padding mask is [B, 1, 1, Tk]). An odd length gets
    one padded token; with no mask or bias the sequence lengths keep it out of the softmax,
    otherwise the mask does. The padded query rows are sliced off, so gradients are unchanged.
    """
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    pad_q, pad_k = tq % 2, tk % 2
    if pad_q or pad_k:
        q = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0)))
        k, v = (jnp.pad(x, ((0, 0), (0, pad_k), (0, 0), (0, 0))) for x in (k, v))
    lengths = {}
    if mask is None and bias is None:
        if pad_q or pad_k:
            lengths = dict(
                query_seq_lengths=jnp.full((b,), tq, jnp.int32),
                key_value_seq_lengths=jnp.full((b,), tk, jnp.int32),
            )
    else:

        def full(x, fill):
            x = jnp.broadcast_to(x, (*x.shape[:2], tq, tk))
            return jnp.pad(x, ((0, 0), (0, 0), (0, pad_q), (0, pad_k)), constant_values=fill)

        if mask is None and pad_k:
            mask = jnp.ones((1, 1, 1, 1), bool)
        if mask is not None:
            mask = full(mask, False)
            if pad_q:  # the padded query attends somewhere, so its (discarded) row is finite
                mask = mask.at[:, :, tq:, 0].set(True)
        if bias is not None:
            bias = full(bias, 0)
    out = jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, is_causal=is_causal, implementation="cudnn", **lengths
    )
    return out[:, :tq]


def _blockwise():
    # Imported on use: the tiled kernel is a module of its own, written alongside this one.
    try:
        from attn_jax.attention.blockwise import blockwise_dot_product_attention
    except ImportError:
        raise AttentionConfigError(
            "attention_impl='blockwise' needs attn_jax/attention/blockwise.py, which this "
            "checkout lacks: set model.attention_impl=auto, xla or explicit"
        ) from None
    return blockwise_dot_product_attention
