"""Itti-Koch-Niebur 1998 saliency: pyramid sizes, colour channels, the 42 feature maps, the map
normalization operator N(.), pop-out of an odd blob (alone, and among distractors of another
colour), and jit = eager."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention import saliency as sal

SIZE = 256  # the smallest image the nine scales allow; one shape -> one compilation


def _disc(shape, center, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 < radius**2


def _peak_pixel(saliency) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return int(row) * 16, int(col) * 16  # scale 4 keeps every 16th pixel


def test_pyramid_has_nine_dyadic_scales():
    image = jnp.ones((256, 320))
    levels = jax.jit(sal.gaussian_pyramid)(image)
    shapes = [lv.shape for lv in levels]
    assert shapes == [
        (256, 320), (128, 160), (64, 80), (32, 40), (16, 20), (8, 10), (4, 5), (2, 3), (1, 2),
    ]  # fmt: skip
    assert shapes == [sal.pyramid_shape((256, 320), s) for s in range(9)]
    # The low-pass kernel sums to one and the borders reflect: a constant stays constant.
    for level in levels:
        np.testing.assert_allclose(level, 1.0, rtol=1e-6)


def test_colour_channels_follow_the_paper():
    pixels = jnp.array(
        [[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.02, 0.0, 0.0]]]
    )  # red, green, blue, yellow, a red too dark to count (I < max(I) / 10)
    ch = {k: np.asarray(v)[0] for k, v in sal.color_channels(pixels).items()}
    np.testing.assert_allclose(ch["I"], [1 / 3, 1 / 3, 1 / 3, 2 / 3, 0.02 / 3], rtol=1e-6)
    # r, g, b divided by I: pure red -> r = 3 -> R = 3, Y = (3 + 0)/2 - 3/2 - 0 = 0.
    np.testing.assert_allclose(ch["R"], [3, 0, 0, 0.75, 0], atol=1e-6)
    np.testing.assert_allclose(ch["G"], [0, 3, 0, 0.75, 0], atol=1e-6)
    np.testing.assert_allclose(ch["B"], [0, 0, 3, 0, 0], atol=1e-6)
    # yellow: r = g = 1.5 -> R = G = 0.75, Y = 1.5, B clipped at 0.
    np.testing.assert_allclose(ch["Y"], [0, 0, 0, 1.5, 0], atol=1e-6)


def test_forty_two_feature_maps_at_the_centre_scales():
    image = jnp.asarray(np.random.default_rng(0).uniform(size=(SIZE, SIZE, 3)), jnp.float32)
    maps = jax.eval_shape(sal.feature_maps, image)
    assert sorted(maps) == sorted(
        ["intensity", "rg", "by"] + [f"orientation_{t}" for t in (0, 45, 90, 135)]
    )
    assert sum(len(v) for v in maps.values()) == 42
    centre_sides = [SIZE // 2**c for c in (2, 2, 3, 3, 4, 4)]
    for group in maps.values():
        assert [m.shape[0] for m in group] == centre_sides


def test_gabor_kernels_prefer_their_orientation():
    stripes = np.zeros((9, 9), np.float32)
    stripes[:, ::4] = 1.0  # vertical bars: intensity varies along x (theta = 0)
    responses = {t: float(np.abs((sal.gabor_kernel(t) * stripes).sum())) for t in (0, 45, 90, 135)}
    assert responses[0] > 5 * max(responses[45], responses[90], responses[135])
    assert abs(float(sal.gabor_kernel(30.0).sum())) < 1e-6  # zero-mean: flat regions give 0


def _bumps(centres, heights, shape=(64, 64), width=2.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for (cy, cx), h in zip(centres, heights, strict=True):
        out += h * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return jnp.asarray(out)


def test_normalization_promotes_one_strong_peak_over_many_equal_peaks():
    grid = [(y, x) for y in (10, 32, 54) for x in (10, 32, 54)]
    one_strong = sal.normalize_map(_bumps(grid, [1.0] + [0.2] * 8))
    many_equal = sal.normalize_map(_bumps(grid, [1.0] * 9))
    # (M - m)^2 with M = 1: m = 0.2 -> 0.64; m = 1 -> 0.
    np.testing.assert_allclose(float(one_strong.max()), 0.64, atol=0.02)
    assert float(many_equal.max()) < 1e-3
    # The operator ignores the input's amplitude and offset, and maps a constant to zeros.
    np.testing.assert_allclose(
        sal.normalize_map(5.0 * _bumps(grid, [1.0] + [0.2] * 8) + 2.0), one_strong, atol=1e-5
    )
    np.testing.assert_array_equal(sal.normalize_map(jnp.full((8, 8), 3.0)), 0.0)


def test_a_plateau_counts_as_one_peak():
    flat_top = jnp.zeros((32, 32)).at[10:14, 10:14].set(1.0)
    assert int((sal._local_maxima(flat_top) & (flat_top > 0)).sum()) == 1
    np.testing.assert_allclose(float(sal.normalize_map(flat_top).max()), 1.0)


@pytest.mark.parametrize(
    ("centre", "colour", "background"),
    [
        ((70, 60), (0.9, 0.1, 0.1), (0.5, 0.5, 0.5)),  # red on grey
        ((180, 200), (0.1, 0.2, 0.9), (0.8, 0.8, 0.8)),  # blue on light grey
        ((128, 128), (0.9, 0.9, 0.1), (0.2, 0.3, 0.6)),  # yellow on dark blue
    ],
)
def test_saliency_peaks_on_the_one_odd_blob(centre, colour, background):
    image = np.empty((SIZE, SIZE, 3), np.float32)
    image[:] = background
    image[_disc(image.shape, centre, 14)] = colour
    out = sal.itti_koch_saliency_jit(jnp.asarray(image))
    assert all(v.shape == (16, 16) for v in out.values())
    peak = _peak_pixel(out["saliency"])
    assert abs(peak[0] - centre[0]) <= 16 and abs(peak[1] - centre[1]) <= 16, (peak, centre)


@pytest.mark.parametrize("odd", [(16, 16), (112, 176), (208, 80)])
def test_one_red_blob_pops_out_among_green_ones(odd):
    # An 8x8 field of blobs on a 32-pixel grid fills the image (the reflected borders continue
    # it), so no blob is special by position; only the colour of one differs.
    image = np.full((SIZE, SIZE, 3), 0.5, np.float32)
    for cy in range(16, SIZE, 32):
        for cx in range(16, SIZE, 32):
            red = (cy, cx) == odd
            image[_disc(image.shape, (cy, cx), 12)] = (0.8, 0.1, 0.1) if red else (0.1, 0.8, 0.1)
    out = sal.itti_koch_saliency_jit(jnp.asarray(image))
    peak = _peak_pixel(out["saliency"])
    assert abs(peak[0] - odd[0]) <= 16 and abs(peak[1] - odd[1]) <= 16, (peak, odd)
    # Intensity and orientation are alike at every blob: the colour map carries the pop-out.
    normed = {k: float(sal.normalize_map(v).max()) for k, v in out.items() if k != "saliency"}
    assert normed["color"] > max(normed["intensity"], normed["orientation"]), normed


def _smooth_texture(side: int) -> jax.Array:
    coarse = np.random.default_rng(1).uniform(size=(16, 16, 3)).astype(np.float32)
    return jax.image.resize(jnp.asarray(coarse), (side, side, 3), "linear")


def test_jit_equals_eager_for_the_building_blocks():
    image = _smooth_texture(64)[..., 0]
    for fn in (sal.normalize_map, lambda m: sal.center_surround(m, sal.pyramid_reduce(m))):
        np.testing.assert_allclose(jax.jit(fn)(image), fn(image), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_jit_equals_eager():
    image = _smooth_texture(SIZE)
    jitted = sal.itti_koch_saliency_jit(image)
    eager = sal.itti_koch_saliency(image)  # op by op: ~10 s
    for key in jitted:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((SIZE, SIZE), r"one RGB image \[H, W, 3\]"), ((200, 300, 3), "at least 256 pixels")],
)
def test_bad_images_are_clear_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        sal.itti_koch_saliency(jnp.zeros(shape))
