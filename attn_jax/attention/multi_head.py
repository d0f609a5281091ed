"""Multi-head attention (Vaswani et al. 2017, "Attention Is All You Need", sec. 3.2.2):

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V),

with Attention the scaled dot-product of eq. 1 (`dot_product.scaled_dot_product_attention`).

The parameter tree is that of `flax.linen.MultiHeadDotProductAttention`: DenseGeneral submodules
`query`, `key`, `value` with kernels [D, H, Dh] (the h matrices W_i stacked on the H axis) and
`out` with kernel [H, Dh, D_out] (W^O with its input split per head), so checkpoints written for
the Flax module, such as the official JAX ViT weights, load unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.dot_product import scaled_dot_product_attention

Initializer = Callable[..., jax.Array]


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention with Flax-compatible parameters.

    Attributes:
      num_heads: h, the number of heads; `qkv_features` must be divisible by it.
      qkv_features: total query/key/value width h * Dh; defaults to the query input width.
      out_features: output width; defaults to the query input width.
      dropout_rate: dropout on the attention weights (active only with `train=True`).
      use_bias: biases in the four projections.
      kernel_init: projection kernel initializer; xavier_uniform as in the official JAX ViT.
      bias_init: projection bias initializer.
      dtype: computation dtype (None: inferred from inputs and params).
      param_dtype: parameter dtype.
      attention_fn: replaces `scaled_dot_product_attention`; must accept its signature.
      sow_weights: sow the attention weights [B, H, Tq, Tk] as ('intermediates', 'attention');
        this selects the explicit path, otherwise the fused `jax.nn.dot_product_attention` runs.
      implementation: fused-kernel choice passed to `jax.nn.dot_product_attention`.
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.xavier_uniform()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    attention_fn: Callable[..., Any] | None = None
    sow_weights: bool = False
    implementation: str | None = None

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        train: bool = False,
        causal: bool = False,
        sow_weights: bool | None = None,
    ) -> jax.Array:
        """Attends from `inputs_q` to `inputs_kv` (self-attention when it is None).

        Args:
          inputs_q: [B, Tq, Dq] queries.
          inputs_kv: [B, Tk, Dkv] keys and values; None for self-attention.
          mask: bool, broadcastable to [B, H, Tq, Tk], True = may attend.
          bias: additive logit bias, broadcastable to [B, H, Tq, Tk].
          train: apply attention dropout (needs the 'dropout' RNG stream).
          causal: query i attends only keys j <= i.
          sow_weights: overrides the module field for this call.

        Returns:
          [B, Tq, out_features].
        """
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
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
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        q = projection(name="query")(inputs_q)  # [B, Tq, H, Dh]
        k = projection(name="key")(inputs_kv)  # [B, Tk, H, Dh]
        v = projection(name="value")(inputs_kv)  # [B, Tk, H, Dh]

        apply_dropout = train and self.dropout_rate > 0.0
        attention_fn = self.attention_fn or scaled_dot_product_attention
        result = attention_fn(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if apply_dropout else None,
            deterministic=not apply_dropout,
            return_weights=sow,
            implementation=self.implementation,
            is_causal=causal,
        )
        if sow:
            x, weights = result
            self.sow("intermediates", "attention", weights)
        else:
            x = result

        return nn.DenseGeneral(
            features=out_features,
            axis=(-2, -1),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(x)
