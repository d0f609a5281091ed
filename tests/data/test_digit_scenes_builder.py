"""The embedded digit_scenes tfds builder: scenes are reproducible from their index alone, hold 1-6
digits of their own split only, every box is the tight box of its instance's pixels, the class map
agrees with the instances, and the registry's sizes and normalization constants match the data."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax import data
from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as ds
from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of


def objects_of(example: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bbox float [n, 4], label [n], area [n], digit_id [n]) of one decoded example."""
    o = example["objects"]
    return (
        np.asarray(o["bbox"], np.float32).reshape(-1, 4),
        np.asarray(o["label"], np.int64),
        np.asarray(o["area"], np.int64),
        np.asarray(o["digit_id"], np.int64),
    )


def test_sizes_and_no_test_digit_in_training(scenes):
    assert {k: len(v) for k, v in scenes.items()} == {"train": 4000, "test": 500}
    for split, examples in scenes.items():
        ids = np.concatenate([objects_of(ex)[3] for ex in examples])
        assert all(split_of(int(i)) == split for i in set(ids.tolist()))
        np.testing.assert_array_equal([ex["id"] for ex in examples], np.arange(len(examples)))
    train_ids = {int(i) for ex in scenes["train"] for i in objects_of(ex)[3]}
    assert len(train_ids) > 1300  # of 1,438: the scenes draw from the whole training pool


@pytest.mark.parametrize("split, indices", [("train", [3999, 0, 1234, 7]), ("test", [499, 0, 42])])
def test_a_scene_is_a_pure_function_of_its_index(scenes, split, indices):
    # Regenerated alone, in another order, with nothing else built before: the same scene.
    digits, labels = ds.load_digits()
    pool = ds.pool_of(split)
    for index in indices:
        again = ds.render(ds.layout_of(split, index, pool), digits, labels)
        stored = scenes[split][index]
        for key in ("image", "segmentation", "instances"):
            np.testing.assert_array_equal(np.asarray(stored[key]), again[key])
        bbox, label, area, digit_id = objects_of(stored)
        np.testing.assert_array_equal(
            bbox, np.stack([np.asarray(b) for b in again["objects"]["bbox"]])
        )
        np.testing.assert_array_equal(label, again["objects"]["label"])
        np.testing.assert_array_equal(area, again["objects"]["area"])
        np.testing.assert_array_equal(digit_id, again["objects"]["digit_id"])


def test_boxes_are_tight_around_each_instance_and_classes_agree(scenes):
    counts = []
    heights = []
    for examples in scenes.values():
        for ex in examples:
            image = np.asarray(ex["image"])[..., 0]
            seg, inst = np.asarray(ex["segmentation"]), np.asarray(ex["instances"])
            bbox, label, area, _ = objects_of(ex)
            n = len(label)
            counts.append(n)
            assert 1 <= n <= 6 and inst.max() == n
            assert ((bbox >= 0) & (bbox <= 1)).all()
            # Class map == 1 + label on each instance's pixels, background elsewhere.
            np.testing.assert_array_equal(seg, np.concatenate([[0], label + 1])[inst])
            assert (image[inst > 0] > 0).all()  # ink is never empty canvas
            for k in range(n):
                rows, cols = np.nonzero(inst == k + 1)
                tight = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
                np.testing.assert_array_equal(bbox[k] * 64, tight)
                assert area[k] == len(rows)
                heights.append(tight[2] - tight[0])
            # Boxes never overlap (the digits' squares keep a margin).
            for a in range(n):
                for b in range(a + 1, n):
                    ya, xa, Ya, Xa = bbox[a]
                    yb, xb, Yb, Xb = bbox[b]
                    assert Ya <= yb or Yb <= ya or Xa <= xb or Xb <= xa
    assert set(counts) == {1, 2, 3, 4, 5, 6}
    assert min(heights) <= 13 and max(heights) >= 26  # digits of side 12..28 pixels


def test_registry_matches_the_data(scenes):
    for name, kind, classes in (
        ("digit_scenes", "segmentation", 11),
        ("digit_detection", "detection", 10),
    ):
        entry = data.get_entry(name)
        assert entry.tfds_name == "digit_scenes" and entry.kind == kind
        assert entry.num_classes == classes and entry.image_shape == (64, 64, 1)
        assert entry.splits == {k: len(v) for k, v in scenes.items()}
        assert not entry.flip_ok  # a mirrored digit is not a digit
    assert data.get_entry("digit_detection").max_boxes == 6
    x = np.stack([np.asarray(ex["image"]) for ex in scenes["train"]]).astype(np.float64) / 255
    entry = data.get_entry("digit_scenes")
    np.testing.assert_allclose(entry.mean, [x.mean()], atol=1e-7)
    np.testing.assert_allclose(entry.std, [x.std()], atol=1e-7)
