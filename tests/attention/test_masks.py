"""Mask helpers: polarity (True = may attend), shapes, None-tolerant AND, finite additive bias."""

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention import causal_mask, combine_masks, mask_to_bias, padding_mask


def test_causal_mask_is_lower_triangular_top_left_aligned():
    m = causal_mask(3, 5)
    assert m.shape == (1, 1, 3, 5) and m.dtype == jnp.bool_
    expected = np.array(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]],
        dtype=bool,
    )
    np.testing.assert_array_equal(m[0, 0], expected)
    np.testing.assert_array_equal(causal_mask(4), causal_mask(4, 4))


def test_padding_mask_masks_keys_only():
    valid = jnp.array([[True, True, False], [True, False, False]])
    m = padding_mask(valid)
    assert m.shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(m[:, 0, 0], valid)


def test_combine_masks_ignores_none_and_broadcasts():
    assert combine_masks(None, None) is None
    pad = padding_mask(jnp.array([[True, True, False]]))
    np.testing.assert_array_equal(combine_masks(None, pad), pad)
    both = combine_masks(pad, None, causal_mask(3))
    assert both.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(both[0, 0], np.tril(np.ones((3, 3), bool)) & [True, True, False])


def test_mask_to_bias_is_finite_even_when_two_are_summed():
    mask = jnp.array([[True, False, False]])
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        bias = mask_to_bias(mask, dtype)
        assert bias.dtype == dtype
        assert bias[0, 0] == 0
        assert bool(jnp.all(jnp.isfinite(bias + bias)))
    fully_masked = mask_to_bias(jnp.zeros((1, 4), bool)) + jnp.arange(4.0)
    probs = jax.nn.softmax(fully_masked)
    assert not bool(jnp.any(jnp.isnan(probs)))
