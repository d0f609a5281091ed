"""Sinusoidal positional encoding against the formula of Vaswani et al. 2017, sec. 3.5."""

import math

import jax
import numpy as np
import pytest

from attn_jax.attention.positional import sinusoidal_position_encoding


def _formula(length: int, d: int) -> np.ndarray:
    table = np.zeros((length, d), np.float64)
    for pos in range(length):
        for c in range(d):
            i = c // 2
            angle = pos / 10000 ** (2 * i / d)
            table[pos, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("d", [16, 17, 512])
def test_values_equal_the_formula_interleaved(d):
    pe = sinusoidal_position_encoding(50, d)
    assert pe.shape == (50, d) and pe.dtype == np.float32
    np.testing.assert_allclose(pe, _formula(50, d), atol=1e-5)


def test_reference_values():
    pe = sinusoidal_position_encoding(3, 512)
    np.testing.assert_allclose(pe[1, 0], 0.841471, atol=1e-6)  # sin 1
    np.testing.assert_allclose(pe[1, 1], 0.540302, atol=1e-6)  # cos 1
    np.testing.assert_allclose(pe[0, 0::2], 0.0)
    np.testing.assert_allclose(pe[0, 1::2], 1.0)
    # Not the concatenated [sin | cos] layout: channel d/2 is a sine of high frequency.
    np.testing.assert_allclose(pe[1, 256], math.sin(1 / 10000 ** (256 / 512)), atol=1e-6)


def test_offset_equals_slice_and_may_be_traced():
    table = sinusoidal_position_encoding(20, 8)
    np.testing.assert_allclose(sinusoidal_position_encoding(5, 8, offset=7), table[7:12], atol=1e-6)
    step = jax.jit(lambda i: sinusoidal_position_encoding(1, 8, offset=i))
    np.testing.assert_allclose(step(13), table[13:14], atol=1e-6)
