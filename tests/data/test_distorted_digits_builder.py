"""The embedded distorted_digits tfds builder: the sklearn_digits split, the RTS parameter ranges,
deterministic generation, the geometry of the distortion, and the registry's constants."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax import data
from attn_jax.data.distorted_digits import distorted_digits_dataset_builder as dd


@pytest.fixture(scope="module")
def splits(data_dir):
    data.prepare("distorted_digits", data_dir)
    sources = dd.Builder(data_dir=data_dir).as_data_source()
    return {name: src.__getitems__(list(range(len(src)))) for name, src in sources.items()}


def test_split_follows_sklearn_digits_with_copies(splits):
    assert len(splits["train"]) == 5752 == 4 * 1438
    assert len(splits["test"]) == 718 == 2 * 359
    for split, copies in (("train", 4), ("test", 2)):
        ids = [int(ex["id"]) for ex in splits[split]]
        assert all((i % 5 == 4) == (split == "test") for i in ids)
        assert ids == sorted(ids) and len(set(ids)) * copies == len(ids)
        assert [int(ex["copy"]) for ex in splits[split][:copies]] == list(range(copies))


def test_examples_regenerate_exactly_from_the_seed(splits, digits_arrays):
    images, labels = digits_arrays
    for ex in splits["train"][:40:7] + splits["test"][-9::4]:
        i, c = int(ex["id"]), int(ex["copy"])
        angle, scale, shift = dd.distortion_of(i, c)
        assert ex["angle"] == np.float32(angle) and ex["scale"] == np.float32(scale)
        np.testing.assert_array_equal(ex["shift"], np.float32(shift))
        np.testing.assert_array_equal(ex["image"], dd.distort(images[i], angle, scale, shift))
        assert int(ex["label"]) == labels[i]


def test_distortion_parameters_cover_the_rts_ranges(splits):
    train = splits["train"]
    angles = np.array([ex["angle"] for ex in train])
    scales = np.array([ex["scale"] for ex in train])
    shifts = np.stack([ex["shift"] for ex in train])
    assert angles.min() >= -45 and angles.max() <= 45 and np.ptp(angles) > 85
    assert scales.min() >= 0.7 and scales.max() <= 1.2 and np.ptp(scales) > 0.45
    assert np.abs(shifts).max() <= 4 and np.ptp(shifts) > 7.5
    # Copies of one digit differ.
    assert not np.array_equal(train[0]["image"], train[1]["image"])
    images = np.stack([ex["image"] for ex in train])
    assert images.dtype == np.uint8 and images.shape[1:] == (24, 24, 1) and images.max() == 255


def test_geometry_of_the_distortion(digits_arrays):
    digit = digits_arrays[0][10, ..., 0].astype(np.float64)
    # Zoom 2 * 0.5 = 1, no turn, no shift: the 8x8 digit sits unchanged at the canvas centre.
    plain = dd.distort(digit, 0.0, 0.5, (0.0, 0.0))[..., 0]
    expected = np.zeros((24, 24), np.uint8)
    expected[8:16, 8:16] = np.round(digit * 255 / 16)
    np.testing.assert_array_equal(plain, expected)
    # Integer shifts move it by (rows, columns).
    moved = dd.distort(digit, 0.0, 0.5, (2.0, -3.0))[..., 0]
    np.testing.assert_array_equal(moved, np.roll(plain, (2, -3), axis=(0, 1)))
    # Positive angles turn counter-clockwise on screen (np.rot90's sense).
    turned = dd.distort(digit, 90.0, 0.5, (0.0, 0.0))[..., 0].astype(int)
    np.testing.assert_allclose(turned, np.rot90(plain).astype(int), atol=1)
    # The ink's area grows with the square of the zoom.
    big = dd.distort(digit, 0.0, 1.0, (0.0, 0.0)).astype(float).sum()
    assert big / plain.astype(float).sum() == pytest.approx(4.0, rel=0.02)


def test_registry_matches_the_data(splits):
    entry = data.get_entry("distorted_digits")
    assert entry.splits == {name: len(examples) for name, examples in splits.items()}
    assert entry.image_shape == (24, 24, 1) and entry.num_classes == 10
    assert entry.max_value == 255.0 and entry.embedded
    x = np.stack([ex["image"] for ex in splits["train"]]).astype(np.float64) / 255
    np.testing.assert_allclose(entry.mean, [x.mean()], atol=1e-7)
    np.testing.assert_allclose(entry.std, [x.std()], atol=1e-7)
