"""Straight-through top-k feature selection: exactly k kept, one mask for every sample, gradients
through the surrogate, Gumbel exploration that still keeps k."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.feature_selection import FeatureGate, straight_through_top_k, top_k_mask


def test_top_k_mask_keeps_exactly_the_k_largest():
    logits = jnp.array([0.3, -1.0, 2.0, 0.9, 0.1, 5.0])
    np.testing.assert_array_equal(top_k_mask(logits, 3), [0, 0, 1, 1, 0, 1])
    # Ties resolve to the lower index, so the count stays k.
    np.testing.assert_array_equal(top_k_mask(jnp.zeros(5), 2), [1, 1, 0, 0, 0])


def test_straight_through_value_is_hard_and_gradient_is_the_surrogate():
    logits = jnp.array([0.5, -1.0, 2.0, 1.5, 0.0])
    k = 2
    mask = straight_through_top_k(logits, k, temperature=0.5)
    np.testing.assert_array_equal(mask, top_k_mask(logits, k))
    weights = jnp.arange(1.0, 6.0)
    grad = jax.grad(lambda z: jnp.sum(weights * straight_through_top_k(z, k, 0.5)))(logits)
    # Threshold halfway between the 2nd (1.5) and 3rd (0.5) logits: 1.0.
    s = jax.nn.sigmoid((logits - 1.0) / 0.5)
    np.testing.assert_allclose(grad, weights * s * (1 - s) / 0.5, rtol=1e-6)
    # Shifting every logit changes neither the mask nor the gradient.
    shifted = jax.grad(lambda z: jnp.sum(weights * straight_through_top_k(z, k, 0.5)))(logits + 7)
    np.testing.assert_allclose(shifted, grad, rtol=1e-5)


def test_keeping_every_feature_is_the_identity():
    logits = jnp.array([0.2, -0.4, 1.0])
    np.testing.assert_array_equal(straight_through_top_k(logits, 3), jnp.ones(3))


@pytest.mark.parametrize("train", [False, True])
def test_gate_mask_is_k_hot_and_shared_by_every_sample(train):
    gate = FeatureGate(k=5, gumbel_scale=1.0)
    x = jax.random.normal(jax.random.key(0), (7, 20)) + 3.0  # no zero inputs
    params = gate.init({"params": jax.random.key(1)}, x)
    out, mask = gate.apply(params, x, train=train, rngs={"dropout": jax.random.key(2)})
    assert mask.shape == (20,) and float(mask.sum()) == 5.0
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0.0, 1.0}
    kept = (np.asarray(out) != 0).astype(np.float32)
    np.testing.assert_array_equal(kept, np.broadcast_to(np.asarray(mask), kept.shape))
    np.testing.assert_array_equal(out, x * mask)


def test_gumbel_noise_explores_only_in_training():
    gate = FeatureGate(k=3, gumbel_scale=2.0)
    x = jnp.ones((1, 12))
    params = gate.init({"params": jax.random.key(0)}, x)
    eval_masks = {
        tuple(np.asarray(gate.apply(params, x, train=False)[1]).tolist()) for _ in range(3)
    }
    train_masks = {
        tuple(
            np.asarray(
                gate.apply(params, x, train=True, rngs={"dropout": jax.random.key(i)})[1]
            ).tolist()
        )
        for i in range(8)
    }
    assert len(eval_masks) == 1  # deterministic top-k at evaluation
    assert len(train_masks) > 1  # Gumbel-top-k samples other subsets
    assert all(sum(m) == 3 for m in train_masks)


def test_k_outside_the_feature_count_is_a_clear_error():
    with pytest.raises(ValueError, match="set k between 1 and 4"):
        FeatureGate(k=5).init({"params": jax.random.key(0)}, jnp.ones((2, 4)))
