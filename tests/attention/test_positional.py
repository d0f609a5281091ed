"""Sinusoidal positional encoding against the formula of Vaswani et al. 2017, sec. 3.5,
DETR's 2D sine encoding (Carion et al. 2020) against its definition, and MAE's 2D sin-cos table
(He et al. 2022)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.positional import (
    sincos_2d_posemb,
    sine_position_encoding_2d,
    sinusoidal_position_encoding,
)

# One compiled function per call signature instead of a dispatch per operation.
sine_2d = jax.jit(sine_position_encoding_2d, static_argnames=("num_pos_feats", "normalize"))


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


def _sine_2d_formula(real_h: int, real_w: int, feats: int, normalize: bool) -> np.ndarray:
    """DETR's encoding of an unpadded real_h x real_w grid, one channel at a time."""
    out = np.zeros((real_h, real_w, 2 * feats))
    for r in range(real_h):
        for c in range(real_w):
            y, x = r + 1.0, c + 1.0  # cumulative counts of real cells
            if normalize:
                y, x = y / (real_h + 1e-6) * 2 * math.pi, x / (real_w + 1e-6) * 2 * math.pi
            for axis, p in enumerate((y, x)):  # y channels first
                for ch in range(feats):
                    angle = p / 10000 ** (2 * (ch // 2) / feats)
                    value = math.sin(angle) if ch % 2 == 0 else math.cos(angle)
                    out[r, c, axis * feats + ch] = value
    return out


@pytest.mark.parametrize("normalize", [False, True])
def test_sine_2d_equals_its_definition_y_first_interleaved(normalize):
    mask = jnp.ones((2, 3, 5), bool)
    pe = sine_2d(mask, num_pos_feats=8, normalize=normalize)
    assert pe.shape == (2, 3, 5, 16) and pe.dtype == jnp.float32
    np.testing.assert_allclose(pe[1], _sine_2d_formula(3, 5, 8, normalize), atol=1e-5)
    if not normalize:  # known values: cell (row 2, col 0) has y = 3, x = 1
        np.testing.assert_allclose(pe[0, 2, 0, :2], [math.sin(3), math.cos(3)], atol=1e-6)
        np.testing.assert_allclose(pe[0, 2, 0, 8:10], [math.sin(1), math.cos(1)], atol=1e-6)
        np.testing.assert_allclose(pe[0, 2, 0, 2], math.sin(3 / 10000 ** (2 / 8)), atol=1e-6)


def test_sine_2d_normalized_positions_end_at_2pi_on_the_real_pixels_whatever_the_padding():
    mask = np.zeros((1, 6, 7), bool)
    mask[0, :4, :5] = True  # a 4 x 5 image padded to 6 x 7
    pe = np.asarray(sine_2d(jnp.asarray(mask), num_pos_feats=4))
    # Channels 0, 1 (y) and 4, 5 (x) have frequency 1: atan2(sin, cos) recovers the position.
    y = np.mod(np.arctan2(pe[0, :, 0, 0], pe[0, :, 0, 1]), 2 * math.pi)
    x = np.mod(np.arctan2(pe[0, 0, :, 4], pe[0, 0, :, 5]), 2 * math.pi)
    np.testing.assert_allclose(y[:3], 2 * math.pi * np.arange(1, 4) / 4, atol=1e-5)
    np.testing.assert_allclose(x[:4], 2 * math.pi * np.arange(1, 5) / 5, atol=1e-5)
    assert min(y[3], 2 * math.pi - y[3]) < 1e-4 and min(x[4], 2 * math.pi - x[4]) < 1e-4
    # The real pixels are encoded as if there were no padding.
    unpadded = sine_2d(jnp.ones((1, 4, 5), bool), num_pos_feats=4)
    np.testing.assert_allclose(pe[:, :4, :5], unpadded, atol=1e-6)


@pytest.mark.parametrize(
    "shape, feats, message", [((3, 4), 8, "pixel mask"), ((1, 3, 4), 7, "even num_pos_feats")]
)
def test_sine_2d_bad_arguments_are_one_line_errors(shape, feats, message):
    with pytest.raises(ValueError, match=message) as err:
        sine_position_encoding_2d(jnp.ones(shape, bool), num_pos_feats=feats)
    assert "\n" not in str(err.value)


# -- MAE's fixed 2D sin-cos table (He et al. 2022) ------------------------------------------------
@pytest.mark.parametrize("class_token", [False, True])
def test_sincos_2d_shape_and_zero_class_row(class_token):
    table = sincos_2d_posemb(3, 4, 16, class_token)
    assert table.shape == (1, 12 + class_token, 16) and table.dtype == np.float32
    if class_token:
        assert not np.any(table[0, 0])
        np.testing.assert_array_equal(table[:, 1:], sincos_2d_posemb(3, 4, 16, False))


def test_sincos_2d_values_at_a_known_position_column_encoding_first():
    # dim 8: two frequencies per axis, omega = (1, 1 / 10000^(1/2)) = (1, 0.01); the patch at row
    # h=1, column w=2 of a 3x4 grid is token 1 * 4 + 2 = 6 (row-major), +1 after the class token.
    table = sincos_2d_posemb(3, 4, 8, class_token=True)
    w, h = 2.0, 1.0
    expected = [
        *(math.sin(w), math.sin(w * 0.01), math.cos(w), math.cos(w * 0.01)),
        *(math.sin(h), math.sin(h * 0.01), math.cos(h), math.cos(h * 0.01)),
    ]
    np.testing.assert_allclose(table[0, 7], expected, rtol=1e-6)
    # Token 0 sits at (0, 0): sin 0 = 0 and cos 0 = 1 in both halves.
    np.testing.assert_array_equal(table[0, 1], [0, 0, 1, 1, 0, 0, 1, 1])


def test_sincos_2d_dim_not_divisible_by_4_is_a_one_line_error():
    with pytest.raises(ValueError, match="divisible by 4") as err:
        sincos_2d_posemb(2, 2, 6, class_token=False)
    assert "\n" not in str(err.value)
