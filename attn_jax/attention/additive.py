"""Content-based attention over a set of encoder states: query-key-value and additive scores.

Query-key-value attention, unscaled (the "dot" score of Luong, Pham & Manning 2015, "Effective
Approaches to Attention-based Neural Machine Translation"):

    c = softmax(q K^T) V

Additive attention: Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning
to Align and Translate" (ICLR 2015), eqs. 5-6 and appendix A.1.2:

    e_ij = v_a^T tanh(W_a s_(i-1) + U_a h_j),   a_ij = softmax_j(e_ij),   c_i = sum_j a_ij h_j

U_a h_j does not depend on the decoder step, so `AdditiveAttention.project_keys` computes it once
per source sequence (the paper's appendix makes the same remark) and the decoder reuses it.
No biases, as in the appendix. Initialization is flax's default (LeCun normal) rather than the
appendix's N(0, 0.001^2) for W_a, U_a and zeros for v_a, which trains slowly on small problems.

Masks are boolean, True = may attend. A masked key gets exactly zero weight; a query whose keys
are all masked gets all-zero weights and a zero context (never NaN), as in `dot_product.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.masks import masked_softmax


def _key_mask(mask: jax.Array | None, ndim: int) -> jax.Array | None:
    # A [B, Tk] key mask applies to every query: [B, 1, Tk].
    if mask is None:
        return None
    mask = jnp.asarray(mask, bool)
    if mask.ndim == 2 and ndim == 3:
        mask = mask[:, None, :]
    return mask


def qkv_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """c = softmax(q K^T) V, without the 1/sqrt(d) scale.

    Args:
      q: [B, Tq, D] queries.
      k: [B, Tk, D] keys.
      v: [B, Tk, Dv] values.
      mask: bool [B, Tk] (per key) or broadcastable to [B, Tq, Tk]; True = may attend.

    Returns:
      (context [B, Tq, Dv], float32 weights [B, Tq, Tk]).
    """
    logits = jnp.einsum("bqd,bkd->bqk", q, k, preferred_element_type=jnp.float32)
    weights = masked_softmax(logits, _key_mask(mask, 3))
    return jnp.einsum("bqk,bkd->bqd", weights, v.astype(jnp.float32)), weights


def additive_scores(query_proj: jax.Array, key_proj: jax.Array, v_a: jax.Array) -> jax.Array:
    """e_qk = v_a^T tanh(query_proj_q + key_proj_k).

    Args:
      query_proj: [B, Tq, A], W_a s.
      key_proj: [B, Tk, A], U_a h.
      v_a: [A].

    Returns:
      float32 scores [B, Tq, Tk].
    """
    hidden = jnp.tanh(query_proj[:, :, None, :] + key_proj[:, None, :, :])  # [B, Tq, Tk, A]
    return jnp.einsum("bqka,a->bqk", hidden, v_a, preferred_element_type=jnp.float32)


def additive_attention(
    query_proj: jax.Array,
    key_proj: jax.Array,
    values: jax.Array,
    v_a: jax.Array,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Bahdanau attention from projected queries and keys: c = sum_k softmax_k(e_qk) values_k.

    Args:
      query_proj: [B, Tq, A].
      key_proj: [B, Tk, A].
      values: [B, Tk, Dv] (the annotations h_j in the paper).
      v_a: [A].
      mask: bool [B, Tk] or broadcastable to [B, Tq, Tk]; True = may attend.

    Returns:
      (context [B, Tq, Dv], float32 weights [B, Tq, Tk]).
    """
    weights = masked_softmax(additive_scores(query_proj, key_proj, v_a), _key_mask(mask, 3))
    return jnp.einsum("bqk,bkd->bqd", weights, values.astype(jnp.float32)), weights


class AdditiveAttention(nn.Module):
    """Bahdanau additive attention with learned W_a ('query'), U_a ('key') and v_a ('v').

    Attributes:
      features: width A of the alignment model's hidden layer (n' in the paper).
    """

    features: int

    def setup(self):
        self.query = nn.Dense(self.features, use_bias=False)  # W_a
        self.key = nn.Dense(self.features, use_bias=False)  # U_a
        # v_a; the scale of a LeCun-normal Dense(A -> 1) kernel.
        self.v = self.param("v", nn.initializers.normal(self.features**-0.5), (self.features,))

    def project_keys(self, keys: jax.Array) -> jax.Array:
        """U_a h_j for all keys, [B, Tk, D] -> [B, Tk, A]; compute once per source sequence."""
        return self.key(keys)

    def __call__(
        self,
        query: jax.Array,
        keys: jax.Array,
        mask: jax.Array | None = None,
        *,
        projected_keys: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Attends from `query` over `keys`, which are also the values (h_j in the paper).

        Args:
          query: [B, Dq] (one decoder step, s_(i-1)) or [B, Tq, Dq].
          keys: [B, Tk, D].
          mask: bool [B, Tk] or broadcastable to [B, Tq, Tk]; True = may attend.
          projected_keys: `project_keys(keys)` if already computed.

        Returns:
          (context [B, D] or [B, Tq, D], float32 weights [B, Tk] or [B, Tq, Tk]).
        """
        single = query.ndim == 2
        if single:
            query = query[:, None, :]
        if projected_keys is None:
            projected_keys = self.project_keys(keys)
        context, weights = additive_attention(
            self.query(query), projected_keys, keys, self.v, _key_mask(mask, 3)
        )
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights


__all__ = [
    "AdditiveAttention",
    "additive_attention",
    "additive_scores",
    "masked_softmax",
    "qkv_attention",
]
