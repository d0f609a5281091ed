"""The embedded color_digits builder: the colour images' lightness is the affine map of their
grayscale source that the builder documents (so the colorization input equals the grayscale
digit), the ink's hue follows its class only in the class-coloured configs, examples are pure
functions of their index, and the registry's numbers (sizes, the colorization experiments'
lightness statistics) match the data. The sRGB <-> L*a*b* conversion matches reference values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attn_jax import data
from attn_jax.config import load_config
from attn_jax.data import colorspace
from attn_jax.data.color_digits import color_digits_dataset_builder as cd
from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as scenes_builder
from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of

ROOT = Path(__file__).resolve().parents[2]


def test_lab_conversion_matches_reference_values_and_inverts():
    # White, sRGB red, black and mid grey (CIE 1976 with D65: red is L 53.24, a 80.09, b 67.20).
    rgb = np.asarray([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    expected = [[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [0.0, 0.0, 0.0], [53.39, 0.0, 0.0]]
    np.testing.assert_allclose(colorspace.srgb_to_lab(rgb), expected, atol=0.01)
    x = np.random.default_rng(0).random((500, 3))
    np.testing.assert_allclose(colorspace.lab_to_srgb(colorspace.srgb_to_lab(x)), x, atol=1e-9)
    assert not colorspace.in_srgb_gamut(np.asarray([90.0, -100.0, -100.0]))


@pytest.fixture(scope="module")
def colour(data_dir):
    """Both splits of the "digits" and "digits_random" configs as (images, labels), prepared in
    the session's data dir."""
    out = {}
    for name in ("color_digits", "color_digits_random"):
        data.prepare(name, data_dir)
        out[name] = {
            split: data.sources.load_split_arrays(name, split, data_dir)
            for split in ("train", "test")
        }
    return out


def _lightness(images: np.ndarray) -> np.ndarray:
    return colorspace.srgb_to_lab(images.astype(np.float64) / 255.0)[..., 0]


@pytest.mark.parametrize("name", ["color_digits", "color_digits_random"])
def test_lightness_is_the_grayscale_digit_and_labels_and_sizes_match(colour, digits_arrays, name):
    gray, labels = digits_arrays
    for split, (images, stored_labels) in colour[name].items():
        idx = np.asarray([i for i in range(len(labels)) if split_of(i) == split])
        idx = np.repeat(idx, cd.TRAIN_COPIES[name.replace("color_", "")] if split == "train" else 1)
        assert images.shape == (len(idx), 8, 8, 3) == (data.get_entry(name).splits[split], 8, 8, 3)
        np.testing.assert_array_equal(stored_labels, labels[idx])
        source = gray[idx, ..., 0].astype(np.float64) / 16.0
        # uint8 rounding of sRGB moves L* by at most ~0.2 on these colours
        np.testing.assert_allclose(_lightness(images), cd.lightness(source), atol=0.3)


def test_the_colorization_experiments_lightness_statistics_are_the_datas(colour, data_dir):
    images, _ = colour["color_digits"]["train"]
    lightness = _lightness(images)
    config = load_config(ROOT / "experiments" / "colorization_digits.py")
    assert abs(lightness.mean() - config.task.lightness_mean) < 0.05
    assert abs(lightness.std() - config.task.lightness_std) < 0.05
    # Standardized, the lightness is the standardized grayscale digit sklearn_digits feeds.
    entry = data.get_entry("sklearn_digits")
    gray, _ = data.sources.load_split_arrays("sklearn_digits", "train", data_dir)
    gray = np.repeat(gray, cd.TRAIN_COPIES["digits"], axis=0)  # the colourings follow each other
    digits_input = (gray[..., 0] / 16.0 - entry.mean[0]) / entry.std[0]
    ours = (lightness - config.task.lightness_mean) / config.task.lightness_std
    np.testing.assert_allclose(ours, digits_input, atol=0.02)


def _ink_hues(images: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Hue (degrees) of each image's fully inked pixels (g = 16); NaN where it has none."""
    lab = colorspace.srgb_to_lab(images.astype(np.float64) / 255.0)
    hues = []
    for one, g in zip(lab, gray, strict=True):
        if not (g == 16).any():
            hues.append(np.nan)
            continue
        ab = one[g == 16][:, 1:].mean(0)
        hues.append(np.rad2deg(np.arctan2(ab[1], ab[0])) % 360)
    return np.asarray(hues)


def test_ink_hue_follows_the_class_only_in_the_class_coloured_config(colour, digits_arrays):
    gray, labels = digits_arrays
    idx = np.asarray([i for i in range(len(labels)) if split_of(i) == "train"])
    idx = np.repeat(idx, cd.TRAIN_COPIES["digits"])
    g, y = gray[idx, ..., 0], labels[idx]
    expected = np.asarray(cd.CLASS_HUES)[y]

    def off(name):
        hue = _ink_hues(colour[name]["train"][0], g)
        return np.abs((hue - expected + 180) % 360 - 180)

    inked = ~np.isnan(off("color_digits"))
    assert inked.mean() > 0.9
    assert np.all(off("color_digits")[inked] <= cd.HUE_JITTER + 2.0)  # + rounding
    assert np.mean(off("color_digits_random")[inked] > cd.HUE_JITTER + 2.0) > 0.8


@pytest.mark.parametrize(
    "name, config", [("color_digits", "digits"), ("color_digits_random", "digits_random")]
)
def test_an_example_is_a_pure_function_of_its_index(colour, name, config):
    # Regenerated alone, out of order, with nothing else built before: the stored image.
    digits, labels = scenes_builder.load_digits()
    test_ids = [i for i in range(len(labels)) if split_of(i) == "test"]
    for position in (358, 0, 17):
        index = test_ids[position]
        square = [(int(labels[index]), 8, 0, 0)]
        rng = cd.example_rng(config, "test", index)
        again = cd.colorize(digits[index] / 16.0, square, config, rng)
        np.testing.assert_array_equal(again, colour[name]["test"][0][position])
    # Training copy c of the digit at position p is example 10 p + c, in colours of its own.
    train_ids = [i for i in range(len(labels)) if split_of(i) == "train"]
    stored = colour[name]["train"][0]
    for position, copy in ((0, 0), (7, 3), (1437, 9)):
        index = train_ids[position]
        rng = cd.example_rng(config, "train", index, copy)
        again = cd.colorize(digits[index] / 16.0, [(int(labels[index]), 8, 0, 0)], config, rng)
        np.testing.assert_array_equal(again, stored[10 * position + copy])
    assert not np.array_equal(stored[0], stored[1])


def test_scenes_lightness_is_the_grayscale_scene():
    digits, labels = scenes_builder.load_digits()
    pool = scenes_builder.pool_of("test")
    for index, example in zip(range(12), cd.generate("scenes", "test"), strict=False):
        i, ex = example
        assert i == index and ex["image"].shape == (64, 64, 3)
        layout = scenes_builder.layout_of("test", index, pool)
        gray = scenes_builder.render(layout, digits, labels)["image"][..., 0] / 255.0
        np.testing.assert_allclose(_lightness(ex["image"]), cd.lightness(gray), atol=0.3)
        assert ex["label"] == len(layout) - 1
