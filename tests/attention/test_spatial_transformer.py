"""Grid generator and bilinear sampler of Jaderberg et al. 2015 (eqs. 1, 3, 5-7): exact identity,
exact integer translation with zero fill, agreement with the literal kernel sum of eq. 3, and
gradients against finite differences in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention import spatial_transformer as st
from attn_jax.attention.spatial_transformer import IDENTITY_THETA, normalized_grid

# Jitted: one compilation per shape instead of one dispatch per primitive (several times faster).
spatial_transform = jax.jit(st.spatial_transform, static_argnums=2)
affine_pixel_coords = jax.jit(st.affine_pixel_coords, static_argnums=(1, 2))
affine_grid = jax.jit(st.affine_grid, static_argnums=1)
bilinear_sample = jax.jit(st.bilinear_sample)


def _identity(batch: int) -> jax.Array:
    return jnp.tile(jnp.asarray(IDENTITY_THETA, jnp.float32), (batch, 1))


def _kernel_sum(images: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Eq. 3 with the bilinear kernel of eq. 5, summed literally over every source pixel."""
    b, h, w, _ = images.shape
    n = np.arange(h)[None, None, None, :, None]
    m = np.arange(w)[None, None, None, None, :]
    x = coords[..., 0][..., None, None]  # [B, Ho, Wo, 1, 1]
    y = coords[..., 1][..., None, None]
    weight = np.maximum(0, 1 - np.abs(x - m)) * np.maximum(0, 1 - np.abs(y - n))
    return np.einsum("bijnm,bnmc->bijc", weight, images)


@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (3, 9, 7, 3), (1, 1, 5, 2), (2, 24, 24, 1)])
def test_identity_transform_is_exact(shape):
    images = jax.random.normal(jax.random.key(0), shape)
    out = spatial_transform(images, _identity(shape[0]))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images))
    # The 2x3-matrix form of theta is accepted too.
    out = spatial_transform(images, _identity(shape[0]).reshape(-1, 2, 3))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images))


@pytest.mark.parametrize("shift", [(2, 0), (0, -3), (1, 2), (-4, -1), (9, 0)])
def test_integer_translation_is_the_shifted_image_with_zeros_shifted_in(shift):
    # Side 9: pixel centres at -1 + j / 4, so a shift of k pixels is t = k / 4, exact in floats.
    kx, ky = shift
    images = jax.random.uniform(jax.random.key(1), (2, 9, 9, 2)) + 1.0  # no zeros of its own
    theta = jnp.asarray([[1.0, 0.0, kx / 4, 0.0, 1.0, ky / 4]] * 2)
    out = np.asarray(spatial_transform(images, theta))
    # Inverse warping: target pixel (i, j) reads source pixel (i + ky, j + kx).
    expected = np.zeros_like(np.asarray(images))
    src = np.asarray(images)
    for i in range(9):
        for j in range(9):
            if 0 <= i + ky < 9 and 0 <= j + kx < 9:
                expected[:, i, j] = src[:, i + ky, j + kx]
    np.testing.assert_array_equal(out, expected)
    assert (out == 0).sum() == 2 * 2 * (81 - max(0, 9 - abs(kx)) * max(0, 9 - abs(ky)))


def test_grid_convention_corner_centres_at_plus_minus_one():
    grid = normalized_grid(3, 5)
    np.testing.assert_allclose(grid[0, :, 0], [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(grid[:, 0, 1], [-1.0, 0.0, 1.0])
    # A 90-degree turn (x_s = -y_t, y_s = x_t) sends the target's top-left corner to the source's
    # bottom-left: eq. 1 maps target to source.
    theta = jnp.asarray([[0.0, -1.0, 0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(affine_grid(theta, (3, 3))[0, 0, 0], [1.0, -1.0])


def test_pixel_coords_equal_the_normalised_grid_in_pixels():
    theta = jax.random.normal(jax.random.key(2), (3, 6))
    for in_size, out_size in [((9, 7), (5, 6)), ((8, 8), (8, 8)), ((4, 11), (1, 3))]:
        grid = affine_grid(theta, out_size)
        half = jnp.asarray([(in_size[1] - 1) / 2, (in_size[0] - 1) / 2])
        np.testing.assert_allclose(
            affine_pixel_coords(theta, in_size, out_size), (grid + 1) * half, atol=1e-5
        )


def test_sampler_equals_the_literal_kernel_sum_of_eq_3():
    key_img, key_theta = jax.random.split(jax.random.key(3))
    images = jax.random.normal(key_img, (2, 6, 7, 3))
    theta = jnp.asarray(IDENTITY_THETA) + 0.4 * jax.random.normal(key_theta, (2, 6))
    coords = affine_pixel_coords(theta, (6, 7), (5, 9))
    assert (coords < -0.5).any() and (coords > 6).any()  # some samples straddle or leave the image
    out = bilinear_sample(images, coords)
    assert out.shape == (2, 5, 9, 3)
    expected = _kernel_sum(np.asarray(images, np.float64), np.asarray(coords, np.float64))
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


def test_output_size_is_independent_of_input_size():
    theta = _identity(2)
    for side in (5, 12, 31):
        out = spatial_transform(jnp.ones((2, side, side + 1, 1)), theta, (7, 4))
        assert out.shape == (2, 7, 4, 1)
    # Down-sampling a constant image (inside the borders) keeps it constant.
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_gradients_match_finite_differences_in_float64():
    with jax.enable_x64(True):
        key_img, key_theta = jax.random.split(jax.random.key(4))
        images = jax.random.normal(key_img, (1, 5, 6, 2), jnp.float64)
        theta = jnp.asarray(IDENTITY_THETA, jnp.float64)[None] + 0.3 * jax.random.normal(
            key_theta, (1, 6), jnp.float64
        )
        weights = jax.random.normal(jax.random.key(5), (1, 4, 4, 2), jnp.float64)

        def loss(u, th):
            return jnp.sum(weights * st.spatial_transform(u, th, out_size=(4, 4)))

        grad_u, grad_theta = jax.jit(jax.grad(loss, argnums=(0, 1)))(images, theta)
        loss = jax.jit(loss)
        assert grad_u.dtype == jnp.float64
        eps = 1e-6
        # dV/dU (eq. 6): V is linear in U, so central differences are exact up to rounding.
        for idx in [(0, 0, 0, 0), (0, 2, 3, 1), (0, 4, 5, 0), (0, 1, 4, 1)]:
            bump = jnp.zeros_like(images).at[idx].set(eps)
            fd = (loss(images + bump, theta) - loss(images - bump, theta)) / (2 * eps)
            np.testing.assert_allclose(grad_u[idx], fd, rtol=1e-7, atol=1e-9)
        # dV/dtheta through dV/dx_s, dV/dy_s (eq. 7): theta is generic, so no sample sits within
        # eps of a kink (an integer coordinate) and the loss is smooth there.
        assert not np.any(np.abs(np.asarray(affine_pixel_coords(theta, (5, 6), (4, 4))) % 1) < 1e-4)
        for k in range(6):
            bump = jnp.zeros_like(theta).at[0, k].set(eps)
            fd = (loss(images, theta + bump) - loss(images, theta - bump)) / (2 * eps)
            np.testing.assert_allclose(grad_theta[0, k], fd, rtol=1e-6, atol=1e-8)
        assert np.abs(np.asarray(grad_theta)).max() > 1e-2  # the check compared real numbers


def test_coordinate_gradient_is_the_neighbour_difference():
    # Eq. 7 between pixel centres: dV/dx_s = U[n, m0 + 1] - U[n, m0] for a sample on row n.
    images = jnp.asarray([[4.0, 2.0, 7.0, 3.0]]).reshape(1, 1, 4, 1)

    def value(x):
        coords = jnp.stack([x, jnp.zeros_like(x)], -1).reshape(1, 1, 1, 2)
        return bilinear_sample(images, coords)[0, 0, 0, 0]

    for x, slope in [(0.3, -2.0), (1.5, 5.0), (2.9, -4.0), (-0.5, 4.0), (3.25, -3.0)]:
        assert jax.grad(value)(jnp.float32(x)) == pytest.approx(slope)
    # Half a pixel outside the image: halfway between the border pixel and the zero padding.
    assert value(jnp.float32(-0.5)) == pytest.approx(2.0)
    assert value(jnp.float32(3.5)) == pytest.approx(1.5)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"theta must be \[B, 2, 3\] or \[B, 6\]"):
        spatial_transform(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"images must be \[B, H, W, C\]"):
        spatial_transform(jnp.zeros((4, 4)), _identity(1))
