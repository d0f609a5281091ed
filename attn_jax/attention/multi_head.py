"""Multi-head attention (Vaswani et al. 2017, "Attention Is All You Need", sec. 3.2.2):

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V),

with Attention the scaled dot-product of eq. 1 (`dot_product.scaled_dot_product_attention`).

The parameter tree is that of `flax.linen.MultiHeadDotProductAttention`: DenseGeneral submodules
`query`, `key`, `value` with kernels [D, H, Dh] (the h matrices W_i stacked on the H axis) and
`out` with kernel [H, Dh, D_out] (W^O with its input split per head), so checkpoints written for
the Flax module, such as the official JAX ViT weights, load unchanged.

Autoregressive decoding (`decode=True`) keeps keys and values in the flax `'cache'` collection,
under the names flax's `MultiHeadDotProductAttention(decode=True)` uses (`cached_key`,
`cached_value`, `cache_index`); the parameter tree does not change. The cache is created by one
call with the full-length input and `mutable=['cache']` (that call computes ordinary attention);
every later call appends its n new positions at `cache_index` and attends to all cached positions
up to its own (the causal mask of sec. 3.2.3, offset by the step). Cross-attention
(`inputs_k` given) caches the projected memory instead: K = memory W^K and V = memory W^V are
computed by the creating call and reused at every step, since the memory does not change while
decoding.

Queries, keys and values may come from three different inputs (`inputs_q`, `inputs_k`,
`inputs_v`, flax's names): DETR adds positions to the query and key inputs only. The attention
itself is the registered function `attention_fn` (registry.py) computed by the path
`implementation` (dot_product.py), so both reach every model built on this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.dot_product import check_implementation
from attn_jax.attention.masks import combine_masks
from attn_jax.attention.registry import DEFAULT_ATTENTION, check_attention_fn, get_attention

Initializer = Callable[..., jax.Array]


def with_logical_axes(init: Initializer, names: tuple[str | None, ...]) -> Initializer:
    """`init`, naming the Flax logical axes of the parameter it creates (one name per dimension
    of the parameter's final shape, e.g. ("embed", "heads", "head_dim")).

    While logical axis rules are set (`nn.logical_axis_rules`, as the trainer sets them to derive
    tensor-parallel shardings) the parameter comes boxed in `nn.LogicallyPartitioned`
    (`nn.with_logical_partitioning`); otherwise it is the plain array, so that the trees of
    `model.init` stay the ones converters, checkpoints and `init_from` know.

    Args:
      init: the initializer.
      names: a logical axis name or None per dimension.

    Returns:
      An initializer of the same signature.
    """
    boxed = nn.with_logical_partitioning(init, names)

    def initialize(*args: Any, **kwargs: Any) -> Any:
        return (boxed if nn.get_logical_axis_rules() else init)(*args, **kwargs)

    return initialize


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention with Flax-compatible parameters.

    Attributes:
      num_heads: h, the number of heads; `qkv_features` must be divisible by it.
      qkv_features: total query/key/value width h * Dh; defaults to the query input width.
      out_features: output width; defaults to the query input width.
      dropout_rate: dropout on the attention weights (active only with `train=True`).
      use_bias: biases in the four projections.
      kernel_init: projection kernel initializer; xavier_uniform as in the official JAX ViT.
      out_kernel_init: initializer of the output projection W^O; None = `kernel_init`.
      bias_init: projection bias initializer.
      dtype: computation dtype (None: inferred from inputs and params).
      param_dtype: parameter dtype.
      attention_fn: a name registered in `attention.registry` (default: scaled dot-product) or a
        function with the signature of `scaled_dot_product_attention`.
      sow_weights: sow the attention weights [B, H, Tq, Tk] as ('intermediates', 'attention');
        this selects the explicit path.
      implementation: "auto", "xla", "cudnn", "explicit" or "blockwise" (dot_product.py).
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.xavier_uniform()
    out_kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    attention_fn: str | Callable[..., Any] | None = DEFAULT_ATTENTION
    sow_weights: bool = False
    implementation: str | None = "auto"

    def __post_init__(self):
        # Names are checked when the module is built, so that a bad config fails before tracing.
        check_attention_fn(self.attention_fn)
        check_implementation(self.implementation)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        train: bool = False,
        causal: bool = False,
        sow_weights: bool | None = None,
        decode: bool = False,
        return_weights: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Attends from `inputs_q` to `inputs_k`/`inputs_v` (self-attention when both are None).

        Args:
          inputs_q: [B, Tq, Dq] query input.
          inputs_k: [B, Tk, Dk] key input; None = `inputs_q`.
          inputs_v: [B, Tk, Dv] value input; None = `inputs_k`.
          mask: bool, broadcastable to [B, H, Tq, Tk], True = may attend.
          bias: additive logit bias, broadcastable to [B, H, Tq, Tk].
          train: apply attention dropout (needs the 'dropout' RNG stream).
          causal: query i attends only keys j <= i.
          sow_weights: overrides the module field for this call.
          decode: use the 'cache' collection (see the module docstring); `causal` is then
            implied for self-attention once the cache exists, and `mask` must broadcast to
            [B, H, Tq, cache length].
          return_weights: also return the attention weights [B, H, Tq, Tk] (explicit path).

        Returns:
          [B, Tq, out_features], or (output, float weights [B, H, Tq, Tk]) with `return_weights`.
        """
        cross = inputs_k is not None
        inputs_k = inputs_q if inputs_k is None else inputs_k
        inputs_v = inputs_k if inputs_v is None else inputs_v
        qkv_features = self.qkv_features or inputs_q.shape[-1]
        out_features = self.out_features or inputs_q.shape[-1]
        if qkv_features % self.num_heads:
            raise ValueError(
                f"qkv_features={qkv_features} is not divisible by num_heads={self.num_heads}"
            )
        head_dim = qkv_features // self.num_heads
        sow = self.sow_weights if sow_weights is None else sow_weights

        projection = functools.partial(
            nn.DenseGeneral,
            features=(self.num_heads, head_dim),
            axis=-1,
            use_bias=self.use_bias,
            # Megatron column split: each tensor-parallel shard computes whole heads.
            kernel_init=with_logical_axes(self.kernel_init, ("embed", "heads", "head_dim")),
            bias_init=with_logical_axes(self.bias_init, ("heads", "head_dim")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        q = projection(name="query")(inputs_q)  # [B, Tq, H, Dh]
        if decode and cross and self.has_variable("cache", "cached_key"):
            # The memory's projections were cached by the creating call.
            k = self.get_variable("cache", "cached_key")
            v = self.get_variable("cache", "cached_value")
        else:
            k = projection(name="key")(inputs_k)  # [B, Tk, H, Dh]
            v = projection(name="value")(inputs_v)  # [B, Tk, H, Dh]
            if decode and cross:
                self.variable("cache", "cached_key", lambda: k)
                self.variable("cache", "cached_value", lambda: v)
            elif decode:
                k, v, mask, causal = self._self_attention_cache(q, k, v, mask, causal)

        apply_dropout = train and self.dropout_rate > 0.0
        result = get_attention(self.attention_fn)(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if apply_dropout else None,
            deterministic=not apply_dropout,
            return_weights=sow or return_weights,
            implementation=self.implementation,
            is_causal=causal,
        )
        if sow or return_weights:
            x, weights = result
            if sow:
                self.sow("intermediates", "attention", weights)
        else:
            x = result

        out = nn.DenseGeneral(
            features=out_features,
            axis=(-2, -1),
            use_bias=self.use_bias,
            # Row split: each shard's heads give a partial sum of the output.
            kernel_init=with_logical_axes(
                self.out_kernel_init or self.kernel_init, ("heads", "head_dim", "embed")
            ),
            bias_init=with_logical_axes(self.bias_init, ("embed",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(x)
        return (out, weights) if return_weights else out

    def _self_attention_cache(self, q, k, v, mask, causal):
        """Writes the new keys/values at `cache_index`; returns what to attend to."""
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:
            # The creating call sees the whole (dummy) sequence: plain attention, cache unwritten.
            return k, v, mask, causal
        n, length = q.shape[1], cached_key.value.shape[1]
        i = cache_index.value
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, (0, i, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, (0, i, 0, 0))
        cache_index.value = i + n
        # New query j sits at position i + j and sees the cached keys 0 .. i + j.
        allowed = jnp.arange(length)[None, :] <= i + jnp.arange(n)[:, None]  # [n, L]
        mask = combine_masks(mask, allowed[None, None])
        return cached_key.value, cached_value.value, mask, False
