"""Catalog datasets (cifar10, imagenet2012) read through `tfds.data_source`, without TensorFlow:
the one-line error for a dataset that is not prepared, cifar10 through `tfds.testing.mock_data`,
and imagenet2012's encoded-JPEG path through mock_data with a data source of our own."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.data_sources import array_record as tfds_array_record

from attn_jax import data
from attn_jax.data import transforms
from attn_jax.errors import UserError

CIFAR = data.get_entry("cifar10")
IMAGENET = data.get_entry("imagenet2012")


def make(cfg, split="train", **kw):
    kw = {"train": True, "global_batch_size": 16, "seed": 0, **kw}
    return data.make_dataset(cfg, split, **kw)


# -- not prepared ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_missing_catalog_dataset_is_one_clear_line(tmp_path, name):
    cfg = {"name": name, "data_dir": str(tmp_path), "eval_split": "train"}
    with pytest.raises(data.DatasetNotFoundError) as info:
        make(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"dataset {name} is not prepared in data dir {tmp_path}" in msg
    assert f"tfds build {name} --data_dir={tmp_path} --file_format=array_record" in msg
    assert isinstance(info.value, UserError)  # the launcher prints it as one line
    if name == "imagenet2012":
        assert "ILSVRC2012_img_train.tar" in msg and f"{tmp_path}/downloads/manual" in msg
    assert not (tmp_path / name).exists()  # nothing was created or downloaded
    with pytest.raises(data.DatasetNotFoundError):
        data.prepare(name, tmp_path)


def test_dataset_prepared_as_tfrecord_names_the_format(tmp_path):
    version_dir = tmp_path / "cifar10" / "3.0.2"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    (version_dir / "cifar10-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(data.DatasetNotFoundError, match="not as array_record") as info:
        make({"name": "cifar10", "data_dir": str(tmp_path)})
    assert "--file_format=array_record" in str(info.value)


def test_data_dir_defaults_to_tfds_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir(None) == str(tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match=f"in data dir {tmp_path};"):
        make({"name": "cifar10"})


# -- cifar10 through tfds.testing.mock_data -----------------------------------------------------
@contextlib.contextmanager
def mocked_tfds(**kwargs):
    """tfds.testing.mock_data, with its batched read repaired.

    mock_data installs `__getitems__` on the ArrayRecord mock as a plain attribute, so tfds'
    `ArrayRecordDataSource.__getitems__` calls it without `self` and fails (tfds 4.9.10); reading
    the same examples one by one is what the repaired method does.
    """

    def getitems(self, keys):
        return [self[k] for k in keys]

    with (
        tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, **kwargs),
        mock.patch.object(tfds_array_record.ArrayRecordDataSource, "__getitems__", getitems),
    ):
        yield


def test_cifar10_via_mock_data(tmp_path):
    cfg = {"name": "cifar10", "data_dir": str(tmp_path)}
    with mocked_tfds(num_examples=40):
        source = tfds.data_source("cifar10", split="test", data_dir=str(tmp_path))
        raw = np.stack([source[i]["image"] for i in range(len(source))])
        labels = np.asarray([source[i]["label"] for i in range(len(source))])
        evals = list(make(cfg, "test", train=False, global_batch_size=16))
        train = [b for b, _ in zip(make({**cfg, "augment": True}), range(5), strict=False)]
        cached = list(make({**cfg, "cache": True}, "test", train=False, global_batch_size=16))
    assert raw.shape == (40, 32, 32, 3) and raw.dtype == np.uint8
    assert len(evals) == 3  # ceil(40 / 16)
    image = np.concatenate([b["image"] for b in evals])
    mask = np.concatenate([b["mask"] for b in evals])
    assert image.shape == (48, 32, 32, 3) and image.dtype == np.float32 and mask.sum() == 40
    want = (raw / 255.0 - np.asarray(CIFAR.mean)) / np.asarray(CIFAR.std)
    np.testing.assert_allclose(image[:40], want, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in evals])[:40], labels)
    for a, b in zip(cached, evals, strict=True):  # the in-memory copy reads the same
        np.testing.assert_array_equal(a["image"], b["image"])
    for b in train:
        assert b["image"].shape == (16, 32, 32, 3) and b["mask"].all()
        assert np.isfinite(b["image"]).all() and b["label"].dtype == np.int32
    # Random crop with 4-pixel padding: zero padding shows up as the normalized zero pixel.
    zero = (0.0 - np.asarray(CIFAR.mean)) / np.asarray(CIFAR.std)
    stream = np.concatenate([b["image"] for b in train])
    assert np.isclose(stream, zero.astype(np.float32), atol=1e-5).all(-1).any()


# -- imagenet2012: encoded JPEGs, decoded and cropped by us -----------------------------------
def _jpeg(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


SIZES = [(60, 40), (45, 70), (64, 64), (100, 30), (33, 47)]
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128), (250, 250, 10)]


def fake_imagenet_source(self, split, decoders=None, deserialize_method=None, **kwargs):
    """Stands for `builder.as_data_source`: encoded JPEGs, as SkipDecoding returns them."""
    del self, deserialize_method, kwargs
    assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
    return [
        {"image": _jpeg(*SIZES[i % 5], COLORS[i % 5]), "label": i % 7, "file_name": f"{i}.JPEG"}
        for i in range(11 if split == "validation" else 23)
    ]


def test_imagenet_decodes_crops_and_normalizes(tmp_path):
    cfg = {"name": "imagenet2012", "data_dir": str(tmp_path), "eval_split": "validation"}
    cfg["image_size"] = 32
    with mocked_tfds(as_data_source_fn=fake_imagenet_source):
        evals = list(make(cfg, "validation", train=False, global_batch_size=8))
        train_a = [b for b, _ in zip(make({**cfg, "augment": True}), range(4), strict=False)]
        train_b = [b for b, _ in zip(make({**cfg, "augment": True}), range(4), strict=False)]
        sharded = [
            next(iter(make({**cfg, "augment": True}, process_index=p, process_count=2)))
            for p in range(2)
        ]
    assert data.dataset_info(cfg).image_shape == (32, 32, 3)
    assert len(evals) == 2 and evals[0]["image"].shape == (8, 32, 32, 3)
    mask = np.concatenate([b["mask"] for b in evals])
    assert mask.sum() == 11
    image = np.concatenate([b["image"] for b in evals])[mask]
    mean, std = np.asarray(IMAGENET.mean), np.asarray(IMAGENET.std)
    for i in range(11):  # one flat color per image survives decode, crop and resize
        want = (np.asarray(COLORS[i % 5]) / 255.0 - mean) / std
        np.testing.assert_allclose(image[i].mean((0, 1)), want, atol=0.05)
    for a, b in zip(train_a, train_b, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert a["image"].shape == (16, 32, 32, 3) and a["mask"].all()
    joined = np.concatenate([s["image"] for s in sharded])
    np.testing.assert_array_equal(joined, train_a[0]["image"])


def test_imagenet_cache_is_refused(tmp_path):
    cfg = {"name": "imagenet2012", "data_dir": str(tmp_path), "cache": True}
    with pytest.raises(data.DataConfigError, match="vary in size"):
        make(cfg)


def test_crop_boxes_stay_inside_the_image():
    u = transforms.random_uniform(transforms.fold_key(0, 1), np.arange(200), 40)
    for i, (w, h) in enumerate([(500, 375), (80, 600), (1000, 40)] * 60):
        left, top, right, bottom = transforms.inception_crop_box(w, h, u[i])
        assert 0 <= left < right <= w + 1e-9 and 0 <= top < bottom <= h + 1e-9
        ratio = (right - left) / (bottom - top)
        assert 3 / 4 - 1e-6 <= ratio <= 4 / 3 + 1e-6
    assert transforms.center_crop_box(400, 300) == (
        200 - 131.25,
        150 - 131.25,
        200 + 131.25,
        150 + 131.25,
    )


# -- imagenet2012 with the DeiT recipe ------------------------------------------------------------
def photo_jpegs(count: int) -> list[bytes]:
    """Crops of scikit-learn's china.jpg of several sizes, as JPEGs: textured, so that every
    RandAugment op changes them (flat colors survive many ops unchanged)."""
    import sklearn.datasets

    path = io.BytesIO(
        (Path(sklearn.datasets.__file__).parent / "images" / "china.jpg").read_bytes()
    )
    photo = Image.open(path).convert("RGB")
    out = []
    for i in range(count):
        w, h = SIZES[i % 5]
        buf = io.BytesIO()
        photo.crop((7 * i, 5 * i, 7 * i + 4 * w, 5 * i + 4 * h)).resize((w, h)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def fake_photo_source(self, split, decoders=None, deserialize_method=None, **kwargs):
    del self, split, decoders, deserialize_method, kwargs
    return [{"image": jpeg, "label": i % 7} for i, jpeg in enumerate(photo_jpegs(24))]


def test_imagenet_deit_augmentations(tmp_path):
    from attn_jax.data import pipeline, randaugment

    cfg = {"name": "imagenet2012", "data_dir": str(tmp_path), "image_size": 32, "augment": True}
    deit = {**cfg, "randaugment": "rand-m9-mstd0.5-inc1", "random_erase": 0.25}
    with mocked_tfds(as_data_source_fn=fake_photo_source):
        plain = take_batches(make(cfg), 3)
        ra = take_batches(make({**cfg, "randaugment": "rand-m9-mstd0.5-inc1"}), 3)
        erased = take_batches(make({**cfg, "random_erase": 1.0}), 3)
        full = take_batches(make(deit), 2)
        parts = [take_batches(make(deit, process_index=p, process_count=2), 2) for p in (0, 1)]
        bicubic = take_batches(make({**deit, "interpolation": "bicubic"}), 1)
    mean, std = np.asarray(IMAGENET.mean), np.asarray(IMAGENET.std)
    policy = randaugment.parse_policy("rand-m9-mstd0.5-inc1")
    key = transforms.fold_key(0, pipeline._RANDAUGMENT)
    changed = 0
    for k, (p, r) in enumerate(zip(plain, ra, strict=True)):
        # The plain crops, back on 0..255, through RandAugment with the draws of their positions.
        pixels = np.rint((p["image"] * std + mean) * 255).astype(np.uint8)
        u = transforms.random_uniform(key, np.arange(16 * k, 16 * k + 16), policy.draws)
        want = randaugment.randaugment(pixels, u, policy, fill=(124, 116, 104))
        np.testing.assert_allclose(r["image"], (want / 255.0 - mean) / std, atol=1e-4)
        changed += (want != pixels).any(axis=(1, 2, 3)).sum()
        np.testing.assert_array_equal(r["label"], p["label"])
    assert 24 <= changed <= 46  # 3/4 of 48 images draw an op
    rectangles = 0
    for p, e in zip(plain, erased, strict=True):  # erasing with probability 1: one rectangle each
        for i in range(16):
            ys, xs = np.nonzero((p["image"][i] != e["image"][i]).any(-1))
            if len(ys):
                assert len(ys) == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
                rectangles += 1
    assert rectangles >= 44  # an attempt may fail to fit a 32 x 32 image
    for k, a in enumerate(full):  # drawn from stream positions: any process split, same batch
        for name in ("image", "label"):
            joined = np.concatenate([parts[0][k][name], parts[1][k][name]])
            np.testing.assert_array_equal(joined, a[name])
    assert not np.allclose(bicubic[0]["image"], full[0]["image"])


def take_batches(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]
