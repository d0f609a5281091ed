"""The embedded translated_digits tfds builder: the sklearn_digits split (no test digit in
training), every canvas is its digit upscaled at its recorded offset and nothing else, offsets
spread over the canvas and are reproducible, the registry's sizes and normalization constants
match the data, and the input pipeline serves it."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax import data
from attn_jax.data.translated_digits import translated_digits_dataset_builder as td


@pytest.fixture(scope="module")
def splits(data_dir):
    data.prepare("translated_digits", data_dir)
    sources = td.Builder(data_dir=data_dir).as_data_source()
    out = {}
    for name, src in sources.items():
        examples = src.__getitems__(list(range(len(src))))
        out[name] = {
            key: np.stack([np.asarray(ex[key]) for ex in examples])
            for key in ("image", "label", "id", "copy", "offset")
        }
    return out


def test_sizes_and_the_sklearn_digits_split(splits):
    assert len(splits["train"]["id"]) == 1438 * 4 and len(splits["test"]["id"]) == 359 * 2
    train_ids, test_ids = set(splits["train"]["id"]), set(splits["test"]["id"])
    assert not train_ids & test_ids and len(train_ids | test_ids) == 1797
    assert all(i % 5 == 4 for i in test_ids) and all(i % 5 != 4 for i in train_ids)
    # Each digit appears once per copy, in the order (digit, copy).
    for split, copies in (("train", td.TRAIN_COPIES), ("test", td.TEST_COPIES)):
        ids, copy = splits[split]["id"], splits[split]["copy"]
        np.testing.assert_array_equal(ids, np.repeat(sorted(set(ids)), copies))
        np.testing.assert_array_equal(copy, np.tile(np.arange(copies), len(ids) // copies))


def test_each_canvas_is_its_digit_upscaled_at_its_offset(splits, digits_arrays):
    images, labels = digits_arrays
    for split in ("train", "test"):
        s = splits[split]
        assert s["image"].shape[1:] == (32, 32, 1) and s["image"].dtype == np.uint8
        np.testing.assert_array_equal(s["label"], labels[s["id"]])
        for k in range(0, len(s["id"]), 7):  # a spread-out sample of the examples
            row, col = s["offset"][k]
            assert 0 <= row <= 16 and 0 <= col <= 16
            digit = images[s["id"][k], ..., 0]
            canvas = s["image"][k, ..., 0]
            window = canvas[row : row + 16, col : col + 16]
            # Pixel repetition: every 2x2 block is one pixel of the 8x8 digit.
            np.testing.assert_array_equal(window[::2, ::2], digit)
            np.testing.assert_array_equal(window, np.repeat(np.repeat(digit, 2, 0), 2, 1))
            assert canvas.sum() == window.sum()  # nothing outside the digit


def test_offsets_are_spread_and_reproducible(splits):
    offsets = splits["train"]["offset"]
    assert len({tuple(o) for o in offsets}) > 250  # of the 17 x 17 = 289 positions
    assert abs(offsets.mean() - 8) < 0.3 and offsets.min() == 0 and offsets.max() == 16
    # The copies of one digit sit at different places; the rule is a pure function of (i, c).
    first = splits["train"]["id"][0]
    assert len({td.offset_of(first, c) for c in range(td.TRAIN_COPIES)}) > 1
    for k in (0, 1, 999):
        i, c = splits["train"]["id"][k], splits["train"]["copy"][k]
        assert td.offset_of(int(i), int(c)) == tuple(splits["train"]["offset"][k])


def test_registry_matches_the_data(splits):
    entry = data.get_entry("translated_digits")
    assert entry.splits == {name: len(s["id"]) for name, s in splits.items()}
    assert entry.image_shape == (32, 32, 1) and entry.num_classes == 10
    x = splits["train"]["image"].astype(np.float64) / 16
    np.testing.assert_allclose(entry.mean, [x.mean()], atol=1e-7)
    np.testing.assert_allclose(entry.std, [x.std()], atol=1e-7)


def test_the_pipeline_serves_normalized_canvases(data_dir):
    cfg = {**data.DEFAULT_DATA_CONFIG, "name": "translated_digits", "data_dir": data_dir}
    spec = data.dataset_info(cfg)
    assert spec.image_shape == (32, 32, 1) and spec.num_classes == 10
    ds = data.make_dataset(cfg, "test", train=False, global_batch_size=64, seed=0)
    batch = next(iter(ds))
    assert batch["image"].shape == (64, 32, 32, 1) and batch["image"].dtype == np.float32
    entry = data.get_entry("translated_digits")
    background = -entry.mean[0] / entry.std[0]
    assert np.isclose(np.median(batch["image"]), background, atol=1e-5)
