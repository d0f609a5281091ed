"""Explanations read from attention weights: attention rollout and TransFG's part selection.

Attention rollout (Abnar and Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL 2020,
sec. 3): a token's output at layer l mixes the layer's input tokens through the attention weights
*and* the residual connection, so the raw attention of layer l is corrected to
A_hat_l = 0.5 * W_att,l + 0.5 * I (rows renormalized to sum to one), and the attention of the
output tokens to the input tokens is propagated through the layers by matrix products,

    A_tilde(l_i) = A_hat(l_i) A_tilde(l_{i-1}),   A_tilde(l_1) = A_hat(l_1),

i.e. rollout = A_hat_L ... A_hat_2 A_hat_1. The paper averages the heads of a layer before the
correction; the "max" and "min" fusions are the options of the widely used reference code
(jacobgil/vit-explain), as is `discard_ratio`, which zeroes the weakest fused weights to remove
noise. The relevance of each patch for the prediction is the class token's row of the rollout
over the patch tokens.

TransFG part selection (He, Chen, Liu, Kortylewski, Yang, Bai, Wang 2022, "TransFG: A Transformer
Architecture for Fine-Grained Recognition", AAAI 2022, sec. 3.2, "Part Selection Module"): the raw
attention weights of the first L-1 layers are multiplied per head, without the identity and
without renormalization, a_final = A_{L-1} ... A_1; the class token's row of a_final over the patch
tokens is taken per head and its argmax is the token that head selects, so K = H parts (one per
head) are passed, with the class token, to the last layer.

Weights are the sown attention probabilities of a stack of layers, [L, B, H, T, T] (layer, batch,
head, query, key; each row sums to one). Token 0 is the class token where a model has one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

HEAD_FUSIONS = ("mean", "max", "min")


def _check_weights(weights: jax.Array, what: str) -> None:
    if weights.ndim != 5 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(
            f"{what} needs attention weights [layers, batch, heads, tokens, tokens], got shape "
            f"{tuple(weights.shape)}; stack the per-layer [B, H, T, T] weights on a leading axis"
        )


def fuse_heads(weights: jax.Array, head_fusion: str = "mean") -> jax.Array:
    """Fuses the head axis of attention weights [..., H, T, T] into [..., T, T].

    Args:
      weights: attention weights with the heads on axis -3.
      head_fusion: "mean" (Abnar and Zuidema), "max" or "min" (vit-explain's options).

    Returns:
      [..., T, T] fused weights; for "max"/"min" rows no longer sum to one.
    """
    if head_fusion == "mean":
        return jnp.mean(weights, axis=-3)
    if head_fusion == "max":
        return jnp.max(weights, axis=-3)
    if head_fusion == "min":
        return jnp.min(weights, axis=-3)
    raise ValueError(f"head_fusion={head_fusion!r} is not one of {list(HEAD_FUSIONS)}")


def discard_lowest(fused: jax.Array, discard_ratio: float) -> jax.Array:
    """Zeroes the lowest `discard_ratio` fraction of each example's off-diagonal weights.

    Each example of the batch gets its own threshold (vit-explain zeroes the indices found for
    batch element 0 in every example). The diagonal is never discarded: the token's own weight is
    the path that the residual connection also carries, and keeping it keeps every row nonzero, so
    the renormalization after adding the identity stays well defined and the class token's weight
    on itself (the entry vit-explain protects) survives. Exactly floor(ratio * T * (T - 1))
    entries are zeroed per example; ties are broken towards the lower flat index.

    Args:
      fused: [B, T, T] head-fused weights of one layer.
      discard_ratio: fraction in [0, 1) of off-diagonal entries to zero.

    Returns:
      [B, T, T] with the discarded entries set to zero.
    """
    b, t, _ = fused.shape
    num_discard = int(discard_ratio * t * (t - 1))
    if num_discard == 0:
        return fused
    eye = jnp.eye(t, dtype=bool)
    # The diagonal sorts last, so it is never among the lowest entries.
    keys = jnp.where(eye, jnp.inf, fused).reshape(b, t * t)
    rank = jnp.argsort(jnp.argsort(keys, axis=-1, stable=True), axis=-1, stable=True)
    keep = (rank >= num_discard).reshape(b, t, t)
    return jnp.where(keep, fused, 0.0)


def attention_rollout(
    weights: jax.Array,
    *,
    head_fusion: str = "mean",
    residual: bool = True,
    discard_ratio: float = 0.0,
) -> jax.Array:
    """Attention rollout A_hat_L ... A_hat_1 of Abnar and Zuidema 2020, sec. 3.

    Per layer: fuse the heads, optionally discard the weakest weights (`discard_lowest`), then
    A_hat = 0.5 * (A + I) with rows renormalized to one (each row by its own sum: vit-explain
    divided by the sums broadcast along the wrong axis, its issue #16). With `residual=False` the
    identity is not added and the rows are only renormalized.

    Args:
      weights: [L, B, H, T, T] attention probabilities, layer 1 first.
      head_fusion: "mean", "max" or "min" over the heads.
      residual: add the identity for the residual connection (the paper's correction).
      discard_ratio: fraction in [0, 1) of each example's off-diagonal fused weights to zero.

    Returns:
      [B, T, T] float32 rollout; each row sums to one. Row i is how much output token i draws
      on each input token.
    """
    _check_weights(weights, "attention_rollout")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion={head_fusion!r} is not one of {list(HEAD_FUSIONS)}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must lie in [0, 1), got {discard_ratio}")
    weights = jnp.asarray(weights, jnp.float32)
    _, b, _, t, _ = weights.shape
    eye = jnp.eye(t, dtype=jnp.float32)

    def corrected(layer_weights: jax.Array) -> jax.Array:  # [B, H, T, T] -> [B, T, T]
        a = discard_lowest(fuse_heads(layer_weights, head_fusion), discard_ratio)
        if residual:
            a = 0.5 * (a + eye)
        # A fused row can only be all zero without the residual ("min" fusion, discarding).
        return a / jnp.maximum(jnp.sum(a, axis=-1, keepdims=True), 1e-12)

    def step(rollout: jax.Array, layer_weights: jax.Array):
        return jnp.einsum("bij,bjk->bik", corrected(layer_weights), rollout), None

    start = jnp.broadcast_to(eye, (b, t, t))
    rollout, _ = jax.lax.scan(step, start, weights)
    return rollout


def _query_row(matrix: jax.Array, class_token: bool) -> jax.Array:
    """[..., T, T] -> [..., N]: the class token's row over the patch tokens, or, without a class
    token, the mean row over all tokens (the flow into a mean-pooled representation)."""
    if class_token:
        return matrix[..., 0, 1:]
    return jnp.mean(matrix, axis=-2)


def _to_grid(values: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
    gh, gw = grid_hw
    if values.shape[-1] != gh * gw:
        raise ValueError(
            f"{values.shape[-1]} patch tokens do not fill a {gh}x{gw} grid; pass the grid of the "
            f"model's patch embedding (image size // patch size) and set class_token to match"
        )
    return values.reshape(*values.shape[:-1], gh, gw)


def class_token_relevance(
    rollout: jax.Array, grid_hw: tuple[int, int], *, class_token: bool = True
) -> jax.Array:
    """Relevance of each patch for the prediction: the class token's rollout row on the grid.

    Args:
      rollout: [B, T, T] from `attention_rollout`.
      grid_hw: (gh, gw) patch grid, gh * gw = number of patch tokens.
      class_token: whether token 0 is a class token. Without one (mean-pooled ViTs) the mean row
        of the rollout is used, which is exactly the flow into the mean of the output tokens.

    Returns:
      [B, gh, gw] relevance, divided by its maximum per example (the largest patch reads 1).
    """
    row = _query_row(jnp.asarray(rollout, jnp.float32), class_token)
    row = row / jnp.maximum(jnp.max(row, axis=-1, keepdims=True), 1e-12)
    return _to_grid(row, grid_hw)


def per_head_maps(
    weights_layer: jax.Array, grid_hw: tuple[int, int], *, class_token: bool = True
) -> jax.Array:
    """Each head's attention from the class token to the patches of one layer, on the grid.

    Args:
      weights_layer: [B, H, T, T] attention probabilities of one layer.
      grid_hw: (gh, gw) patch grid.
      class_token: as in `class_token_relevance`.

    Returns:
      [B, H, gh, gw] raw attention probabilities (not renormalized; the class token's weight on
      itself is left out, so a head's map sums to at most one).
    """
    if weights_layer.ndim != 4:
        raise ValueError(
            f"per_head_maps needs one layer's weights [batch, heads, tokens, tokens], got shape "
            f"{tuple(weights_layer.shape)}; index the layer, e.g. weights[-1]"
        )
    return _to_grid(_query_row(jnp.asarray(weights_layer, jnp.float32), class_token), grid_hw)


def transfg_part_selection(weights: jax.Array) -> jax.Array:
    """The tokens TransFG's part selection module hands to its last layer (sec. 3.2).

    The raw weights of the first L-1 layers are multiplied per head, a_final = A_{L-1} ... A_1
    (no identity, no renormalization); each head selects the argmax of the class token's row of
    a_final over the patch tokens. Ties go to the first patch, as `argmax` does.

    Args:
      weights: [L, B, H, T, T] attention probabilities of all L layers (L >= 2); token 0 is the
        class token.

    Returns:
      [B, H] int32 token indices in [1, T - 1] (patch p is token p + 1).
    """
    _check_weights(weights, "transfg_part_selection")
    if weights.shape[0] < 2:
        raise ValueError(
            "transfg_part_selection multiplies the attention of the first L-1 layers and needs "
            f"L >= 2 layers, got {weights.shape[0]}"
        )
    weights = jnp.asarray(weights, jnp.float32)

    def step(product: jax.Array, layer_weights: jax.Array):
        return jnp.einsum("bhij,bhjk->bhik", layer_weights, product), None

    product, _ = jax.lax.scan(step, weights[0], weights[1:-1])  # [B, H, T, T]
    return (jnp.argmax(product[..., 0, 1:], axis=-1) + 1).astype(jnp.int32)


def top_k_parts(relevance: jax.Array, k: int) -> jax.Array:
    """The k most relevant patches of a relevance map, as token indices (part selection by rollout).

    Args:
      relevance: [B, gh, gw] (e.g. from `class_token_relevance`).
      k: number of parts, 1 <= k <= gh * gw.

    Returns:
      [B, k] int32 token indices in [1, gh * gw], most relevant first (ties: lower patch first).
    """
    n = relevance.shape[-1] * relevance.shape[-2]
    if not 1 <= k <= n:
        raise ValueError(f"top_k_parts k={k} must lie in [1, {n}] (the number of patches)")
    _, idx = jax.lax.top_k(jnp.reshape(relevance, (relevance.shape[0], n)), k)
    return (idx + 1).astype(jnp.int32)


__all__ = [
    "HEAD_FUSIONS",
    "attention_rollout",
    "class_token_relevance",
    "discard_lowest",
    "fuse_heads",
    "per_head_maps",
    "top_k_parts",
    "transfg_part_selection",
]
