"""The glimpse sensor rho(x, l) of Mnih et al. (2014): the expected crops at each scale on known
images, in the middle and at the borders (zero padding), clipping of the location, batching,
and use inside jit and lax.scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention import glimpse_boxes, glimpse_sensor, patch_sides


def _ramp(h: int, w: int, c: int = 1) -> np.ndarray:
    """[1, H, W, C] with distinct values 1, 2, ... (no zeros, so padding is recognisable)."""
    return np.arange(1, h * w * c + 1, dtype=np.float32).reshape(1, h, w, c)


def _sense(image, location, size, num_scales, scale=2) -> np.ndarray:
    out = glimpse_sensor(
        jnp.asarray(image), jnp.asarray([location], jnp.float32), size, num_scales, scale
    )
    return np.asarray(out[0])  # [K, size, size, C]


def test_patch_sides_double():
    assert patch_sides(8, 3) == (8, 16, 32)
    assert patch_sides(6, 2, scale=3) == (6, 18)


def test_centre_glimpse_is_the_central_crop_at_every_scale():
    image = _ramp(8, 8)
    out = _sense(image, (0.0, 0.0), size=2, num_scales=3)
    x = image[0, ..., 0]
    np.testing.assert_array_equal(out[0, ..., 0], x[3:5, 3:5])
    # 4x4 centre averaged over 2x2 blocks, then the whole 8x8 image over 4x4 blocks.
    np.testing.assert_allclose(out[1, ..., 0], x[2:6, 2:6].reshape(2, 2, 2, 2).mean((1, 3)))
    np.testing.assert_allclose(out[2, ..., 0], x.reshape(2, 4, 2, 4).mean((1, 3)))


def test_top_left_corner_reads_zeros_outside():
    image = _ramp(4, 4)
    x = image[0, ..., 0]
    out = _sense(image, (-1.0, -1.0), size=2, num_scales=2)
    # The 2x2 patch is centred on the image's corner: one pixel inside.
    np.testing.assert_array_equal(out[0, ..., 0], [[0, 0], [0, x[0, 0]]])
    # The 4x4 patch spans rows/cols -2..1: only its bottom-right 2x2 block lies in the image.
    np.testing.assert_allclose(out[1, ..., 0], [[0, 0], [0, x[:2, :2].mean()]])


def test_bottom_right_corner_and_edges():
    image = _ramp(4, 4)
    x = image[0, ..., 0]
    out = _sense(image, (1.0, 1.0), size=2, num_scales=1)
    np.testing.assert_array_equal(out[0, ..., 0], [[x[3, 3], 0], [0, 0]])
    # Middle of the left edge: column -1 is padding, column 0 the image's first column.
    out = _sense(image, (0.0, -1.0), size=2, num_scales=1)
    np.testing.assert_array_equal(out[0, ..., 0], [[0, x[1, 0]], [0, x[2, 0]]])
    # Middle of the bottom edge.
    out = _sense(image, (1.0, 0.0), size=2, num_scales=1)
    np.testing.assert_array_equal(out[0, ..., 0], [[x[3, 1], x[3, 2]], [0, 0]])


def test_rows_come_first_and_non_square_images():
    image = _ramp(4, 6)
    x = image[0, ..., 0]
    # l = (row, column): at the top edge, horizontally centred.
    out = _sense(image, (-1.0, 0.0), size=2, num_scales=1)
    np.testing.assert_array_equal(out[0, ..., 0], [[0, 0], [x[0, 2], x[0, 3]]])
    # Every pixel-aligned position is an exact crop: c = (l + 1) / 2 * W with start c - 1.
    for col in range(1, 6):
        loc = 2 * col / 6 - 1
        out = _sense(image, (0.0, loc), size=2, num_scales=1)
        np.testing.assert_array_equal(out[0, ..., 0], x[1:3, col - 1 : col + 1])


def test_image_covering_glimpse_with_more_zeros_than_image():
    image = _ramp(4, 4)
    # 3 scales of 2: the 8x8 patch at the centre holds the 4x4 image in its middle.
    out = _sense(image, (0.0, 0.0), size=2, num_scales=3)
    padded = np.pad(image[0, ..., 0], 2)
    np.testing.assert_allclose(out[2, ..., 0], padded.reshape(2, 4, 2, 4).mean((1, 3)))
    np.testing.assert_allclose(out[2, ..., 0].sum() * 16, image.sum())


def test_locations_outside_are_clipped_to_the_border():
    image = _ramp(6, 6)
    np.testing.assert_array_equal(
        _sense(image, (3.0, -7.0), 2, 2), _sense(image, (1.0, -1.0), 2, 2)
    )


def test_channels_are_kept_apart():
    image = _ramp(4, 4, 3)
    out = _sense(image, (0.0, 0.0), size=2, num_scales=1)
    np.testing.assert_array_equal(out[0], image[0, 1:3, 1:3, :])


def test_batch_matches_one_at_a_time_and_jit_and_scan():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((5, 12, 12, 2)).astype(np.float32)
    locations = rng.uniform(-1.2, 1.2, (5, 2)).astype(np.float32)
    batched = np.asarray(glimpse_sensor(jnp.asarray(images), jnp.asarray(locations), 4, 2))
    assert batched.shape == (5, 2, 4, 4, 2)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], _sense(images[i : i + 1], locations[i], 4, 2))
    jitted = jax.jit(glimpse_sensor, static_argnums=(2, 3))(images, locations, 4, 2)
    np.testing.assert_allclose(jitted, batched, atol=1e-6)

    def body(carry, loc):  # the sensor inside a scanned recurrence, as RAM uses it
        return carry, glimpse_sensor(jnp.asarray(images), loc, 4, 2)

    _, scanned = jax.lax.scan(body, 0, jnp.stack([locations, -locations]))
    np.testing.assert_allclose(scanned[0], batched, atol=1e-6)


def test_boxes_give_the_top_left_pixels():
    boxes = glimpse_boxes(np.array([[0.0, -1.0]]), (8, 8), size=2, num_scales=3)
    np.testing.assert_array_equal(boxes[0], [[3, -1], [2, -2], [0, -4]])
    jax_boxes = glimpse_boxes(jnp.array([[0.0, -1.0]]), (8, 8), size=2, num_scales=3)
    np.testing.assert_array_equal(np.asarray(jax_boxes), boxes)


@pytest.mark.parametrize(
    "images, locations, match",
    [
        (np.zeros((8, 8, 1)), np.zeros((1, 2)), r"images \[B, H, W, C\]"),
        (np.zeros((2, 8, 8, 1)), np.zeros((2, 3)), r"locations \[B, 2\]"),
        (np.zeros((2, 8, 8, 1)), np.zeros((1, 2)), r"locations \[B, 2\]"),
    ],
)
def test_bad_shapes_name_the_problem(images, locations, match):
    with pytest.raises(ValueError, match=match):
        glimpse_sensor(jnp.asarray(images), jnp.asarray(locations), 2, 1)


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match="num_scales must be an int >= 1"):
        glimpse_sensor(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 2)), 2, 0)
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        patch_sides(2.5, 1)
