"""The grain pipelines on sklearn_digits: the contract the trainer relies on (shapes, shuffling,
epochs, per-host sharding of the batch, padded evaluation, resumable state, augmentation) and the
one-line errors for bad configs."""

from __future__ import annotations

import collections
import itertools
import json
import time

import ml_collections
import numpy as np
import pytest

from attn_jax import data
from attn_jax.data import transforms

MEAN, STD = data.get_entry("sklearn_digits").mean[0], data.get_entry("sklearn_digits").std[0]


def take(ds_or_iter, n):
    it = iter(ds_or_iter)
    return [next(it) for _ in range(n)]


def concat(batches, key="image"):
    return np.concatenate([b[key] for b in batches])


def raw_pixels(images: np.ndarray) -> np.ndarray:
    """Undoes the normalization: back to the stored uint8 0..16 values."""
    raw = np.rint((images * STD + MEAN) * 16)
    assert np.abs((images * STD + MEAN) * 16 - raw).max() < 1e-3
    return raw.astype(np.uint8)


def multiset(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
    return collections.Counter(
        (im.tobytes(), int(lb)) for im, lb in zip(images, labels, strict=True)
    )


@pytest.fixture(scope="module")
def train_split(digits_arrays):
    images, labels = digits_arrays
    keep = np.arange(len(labels)) % 5 != 4
    return images[keep], labels[keep]


@pytest.fixture(scope="module")
def test_split(digits_arrays):
    images, labels = digits_arrays
    keep = np.arange(len(labels)) % 5 == 4
    return images[keep], labels[keep]


def make(cfg, split="train", **kw):
    kw = {"train": True, "global_batch_size": 128, "seed": 0, **kw}
    return data.make_dataset(cfg, split, **kw)


def test_dataset_info_reads_no_data(tmp_path):
    cfg = ml_collections.ConfigDict(
        {"name": "sklearn_digits", "data_dir": str(tmp_path), "augment": True}
    )
    cfg.image_size = ml_collections.config_dict.placeholder(int)
    spec = data.dataset_info(cfg)
    assert spec == data.DatasetSpec(
        name="sklearn_digits",
        num_classes=10,
        image_shape=(8, 8, 1),
        num_examples={"train": 1438, "test": 359},
        mean=spec.mean,
        std=spec.std,
    )
    assert not list(tmp_path.iterdir())  # nothing prepared, nothing read
    sliced = data.dataset_info({"name": "sklearn_digits", "train_split": "train[:90%]"})
    assert sliced.num_examples["train[:90%]"] == 1294
    assert data.dataset_info({"name": "cifar10", "image_size": 24}).image_shape == (24, 24, 3)
    imagenet = {"name": "imagenet2012", "eval_split": "validation"}
    assert data.dataset_info(imagenet).image_shape == (224, 224, 3)
    with pytest.raises(data.DataConfigError, match="cannot read split 'test' of imagenet2012"):
        data.dataset_info({"name": "imagenet2012"})


def test_batches_have_the_contracted_shapes(digits_cfg):
    (b,) = take(make(digits_cfg, global_batch_size=32), 1)
    assert set(b) == {"image", "label", "mask"}
    assert b["image"].shape == (32, 8, 8, 1) and b["image"].dtype == np.float32
    assert b["label"].shape == (32,) and b["label"].dtype == np.int32
    assert b["mask"].dtype == bool and b["mask"].all()


def test_one_epoch_is_a_permutation_of_the_split(digits_cfg, train_split):
    # 1438 = 2 * 719: with B = 719 each epoch is exactly two batches.
    batches = take(make(digits_cfg, global_batch_size=719), 4)
    for epoch in (batches[:2], batches[2:]):
        got = multiset(raw_pixels(concat(epoch)), concat(epoch, "label"))
        assert got == multiset(*train_split)


def test_shuffle_is_seeded_and_reshuffles_each_epoch(digits_cfg):
    a = concat(take(make(digits_cfg, seed=1), 24))  # 3072 examples: two epochs and some
    b = concat(take(make(digits_cfg, seed=1), 24))
    c = concat(take(make(digits_cfg, seed=2), 24))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:128], c[:128])
    first, second = a[:1438], a[1438:2876]
    assert not np.array_equal(first, second)
    # Not merely a rotation or a reversal of the previous epoch.
    assert np.mean(np.all(first == second, axis=(1, 2, 3))) < 0.05


def test_stream_runs_across_epoch_boundaries_without_dropping(digits_cfg, train_split):
    # 12 batches of 128 = 1536 > 1438: batch 11 holds the end of epoch 0 and the start of 1.
    batches = take(make(digits_cfg), 12)
    stream = concat(batches)
    assert multiset(raw_pixels(stream[:1438]), concat(batches, "label")[:1438]) == multiset(
        *train_split
    )


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("processes", [2, 4])
def test_sharding_the_batch_over_processes(digits_cfg, augment, processes):
    cfg = {**digits_cfg, "augment": augment}
    steps = 14  # crosses an epoch boundary at 1438 / 128
    single = take(make(cfg, global_batch_size=128, seed=3), steps)
    parts = [
        take(
            make(cfg, global_batch_size=128, seed=3, process_index=p, process_count=processes),
            steps,
        )
        for p in range(processes)
    ]
    for k in range(steps):
        for key in ("image", "label", "mask"):
            joined = np.concatenate([parts[p][k][key] for p in range(processes)])
            np.testing.assert_array_equal(joined, single[k][key])
        assert parts[0][k]["image"].shape[0] == 128 // processes


def test_eval_covers_every_example_once_with_padding(digits_cfg, test_split):
    batches = list(make(digits_cfg, "test", train=False, global_batch_size=128))
    assert len(batches) == 3  # ceil(359 / 128)
    assert all(b["image"].shape == (128, 8, 8, 1) for b in batches)
    mask = concat(batches, "mask")
    assert mask.sum() == 359 and mask[:359].all() and not mask[359:].any()
    images, labels = concat(batches)[mask], concat(batches, "label")[mask]
    # Stored order, every example once.
    np.testing.assert_array_equal(raw_pixels(images), test_split[0])
    np.testing.assert_array_equal(labels, test_split[1])
    assert (concat(batches)[~mask] == 0).all() and (concat(batches, "label")[~mask] == 0).all()
    again = list(make(digits_cfg, "test", train=False, global_batch_size=128))
    np.testing.assert_array_equal(concat(again), concat(batches))


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("processes", [2, 4])
def test_eval_sharding_matches_one_process(digits_cfg, processes, cache):
    # With 4 processes, process 3's part of the last batch (positions 360..383) is all padding.
    digits_cfg = {**digits_cfg, "cache": cache}
    single = list(make(digits_cfg, "test", train=False, global_batch_size=96))
    parts = [
        list(
            make(
                digits_cfg,
                "test",
                train=False,
                global_batch_size=96,
                process_index=p,
                process_count=processes,
            )
        )
        for p in range(processes)
    ]
    assert all(len(part) == len(single) == 4 for part in parts)  # ceil(359 / 96)
    for k in range(len(single)):
        for key in ("image", "label", "mask"):
            joined = np.concatenate([parts[p][k][key] for p in range(processes)])
            np.testing.assert_array_equal(joined, single[k][key])


def test_iterator_state_round_trip(digits_cfg):
    cfg = {**digits_cfg, "augment": True}
    it = iter(make(cfg, seed=5))
    take(it, 7)
    state = it.get_state()
    expected = take(it, 5)
    for restored_state in (state, json.loads(json.dumps(state))):
        fresh = iter(make(cfg, seed=5))
        fresh.set_state(restored_state)
        for got, want in zip(take(fresh, 5), expected, strict=True):
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
                assert got[key].dtype == want[key].dtype


def test_iterator_state_with_read_threads(digits_cfg):
    cfg = {**digits_cfg, "augment": True, "read_threads": 2, "prefetch": 3}
    want = take(make({**cfg, "read_threads": 0}, seed=5), 12)
    it = iter(make(cfg, seed=5))
    take(it, 7)
    state = json.loads(json.dumps(it.get_state()))
    fresh = iter(make(cfg, seed=5))
    fresh.set_state(state)
    for got, expected in zip(take(fresh, 5), want[7:], strict=True):
        np.testing.assert_array_equal(got["image"], expected["image"])


def test_augmentation_is_deterministic_and_a_small_translation(digits_cfg):
    plain = take(make(digits_cfg, seed=7), 4)
    aug_a = take(make({**digits_cfg, "augment": True}, seed=7), 4)
    aug_b = take(make({**digits_cfg, "augment": True}, seed=7), 4)
    np.testing.assert_array_equal(concat(aug_a), concat(aug_b))
    np.testing.assert_array_equal(concat(aug_a, "label"), concat(plain, "label"))  # same order
    x, y = raw_pixels(concat(plain)), raw_pixels(concat(aug_a))
    changed = np.any(x != y, axis=(1, 2, 3))
    assert changed.mean() > 0.5  # 8 of 9 shifts move the image; some digits touch no border
    shifts = [(dy, dx) for dy, dx in itertools.product((-1, 0, 1), repeat=2)]
    candidates = np.stack(
        [transforms.translate(x, np.tile([s], (len(x), 1))) for s in shifts]
    )  # [9, N, 8, 8, 1]
    matches = np.all(candidates == y[None], axis=(2, 3, 4))
    assert matches.any(axis=0).all()
    # Eval never augments.
    ev = take(make({**digits_cfg, "augment": True}, "test", train=False), 1)[0]
    ev_plain = take(make(digits_cfg, "test", train=False), 1)[0]
    np.testing.assert_array_equal(ev["image"], ev_plain["image"])


def test_image_size_resizes(digits_cfg):
    (b,) = take(make({**digits_cfg, "image_size": 16, "augment": True}), 1)
    assert b["image"].shape == (128, 16, 16, 1)


def test_tfds_reading_equals_the_in_memory_cache(digits_cfg):
    cached = take(make({**digits_cfg, "augment": True}), 3)
    direct = take(make({**digits_cfg, "augment": True, "cache": False}), 3)
    for a, b in zip(cached, direct, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_split_slices(digits_cfg, train_split):
    batches = list(make(digits_cfg, "train[90%:]", train=False, global_batch_size=64))
    mask = concat(batches, "mask")
    assert mask.sum() == 1438 - 1294
    np.testing.assert_array_equal(raw_pixels(concat(batches)[mask]), train_split[0][1294:])


def test_a_batch_takes_well_under_five_milliseconds(digits_cfg):
    it = iter(make({**digits_cfg, "augment": True}))
    take(it, 5)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 5e-3, np.median(times)


@pytest.mark.parametrize(
    "cfg_update, kwargs, match",
    [
        (
            {"name": "mnist"},
            {},
            "known datasets: cifar10, .*imagenet2012, sklearn_digits, translated_",
        ),
        ({"augmnt": True}, {}, r"unknown data config keys \['augmnt'\]"),
        ({}, {"split": "validation"}, "cannot read split 'validation' of sklearn_digits"),
        ({}, {"global_batch_size": 130, "process_count": 4}, "multiple of the 4 processes"),
        ({"image_size": 0}, {}, "image_size must be a positive int"),
    ],
)
def test_config_errors_are_one_line_value_errors(digits_cfg, cfg_update, kwargs, match):
    kwargs = {"split": "train", "train": True, "global_batch_size": 128, "seed": 0, **kwargs}
    with pytest.raises(data.DataConfigError, match=match) as info:
        data.make_dataset({**digits_cfg, **cfg_update}, **kwargs)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
