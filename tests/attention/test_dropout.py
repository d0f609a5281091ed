"""Dropout masks from both 16-bit halves of each random word (attn_jax/attention/dropout.py)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.9, 0.999])
def test_keep_probability_is_the_requested_one(keep_prob):
    n = 1_000_001  # odd: the last word's second half is unused
    mask = np.asarray(keep_mask(jax.random.key(0), keep_prob, (n,)))
    sigma = np.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(mask.mean() - keep_prob) < 5 * sigma


def test_the_two_halves_of_a_word_are_independent_masks():
    n = 400_000
    mask = np.asarray(keep_mask(jax.random.key(1), 0.5, (n,)), dtype=np.float64)
    first, second = mask[: n // 2], mask[n // 2 :]  # element i and i + n/2 share a word
    assert abs(np.corrcoef(first, second)[0, 1]) < 5 / np.sqrt(n // 2)
    # Different keys give different masks; the same key the same.
    again = np.asarray(keep_mask(jax.random.key(1), 0.5, (n,)))
    other = np.asarray(keep_mask(jax.random.key(2), 0.5, (n,)))
    assert (again == mask).all() and (other != mask).mean() > 0.4


def test_inverted_scaling_keeps_the_expectation_and_shares_masks_along_unit_axes():
    x = jnp.ones((512, 3, 7))
    y = dropout(x, 0.25, jax.random.key(3))
    np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.03
    per_sample = dropout(x, 0.5, jax.random.key(4), shape=(512, 1, 1))
    assert (per_sample == per_sample[:, :1, :1]).all()  # one decision per sample
    assert dropout(x, 0.5, None) is x


def test_module_drops_only_in_training_with_the_dropout_stream():
    layer = Dropout(0.5)
    x = jnp.ones((64, 32))
    assert (layer.apply({}, x, deterministic=True) == x).all()
    a = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    b = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert 0.4 < float((a == 0).mean()) < 0.6 and not (a == b).all()
    assert (Dropout(1.0).apply({}, x, deterministic=False) == 0).all()


def test_traced_rate_of_a_scanned_stack():
    rates = jnp.array([0.0, 0.5])

    def body(carry, rate):
        return carry, dropout(jnp.ones((4096,)), rate, jax.random.key(5)).mean()

    _, means = jax.lax.scan(body, None, rates)
    assert float(means[0]) == 1.0 and abs(float(means[1]) - 1.0) < 0.1
    assert isinstance(Dropout(0.1), nn.Module)
