"""Segmentation and detection pipelines (dense.py): the batch contract (keys, shapes, dtypes of
`element_spec`), padded evaluation in stored order, boxes that stay on their instances' pixels
through resizing and "scale_crop" augmentation, flips only where the labels allow them, the same
batches for the same (seed, step) however the batch is split over processes; and the catalog
datasets (coco, cityscapes) through `tfds.testing.mock_data`."""

from __future__ import annotations

import collections
import dataclasses
import importlib
import io
import math
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from attn_jax import data
from attn_jax.data import dense, detr_multiscale, sources
from attn_jax.data import transforms as T
from attn_jax.errors import UserError

SCENES = data.get_entry("digit_scenes")


def take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def make(cfg, split="train", **kw):
    kw = {"train": True, "global_batch_size": 32, "seed": 0, **kw}
    return data.make_dataset(cfg, split, **kw)


def check_contract(cfg, batch, b):
    spec = data.dataset_info(cfg)
    assert set(batch) == {*spec.element_spec, "mask"}
    for key, (shape, dtype) in spec.element_spec.items():
        assert batch[key].shape == (b, *shape) and batch[key].dtype == np.dtype(dtype), key
    assert batch["mask"].shape == (b,) and batch["mask"].dtype == bool


def raw_image(image: np.ndarray, entry=SCENES) -> np.ndarray:
    """Undoes the normalization: back to 0..255 floats."""
    return (image * np.asarray(entry.std) + np.asarray(entry.mean)) * 255


def to_pixels(boxes: np.ndarray, hw) -> np.ndarray:
    """Normalized (cx, cy, w, h) -> pixel (y0, x0, y1, x1)."""
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    return np.stack(
        [(cy - h / 2) * hw[0], (cx - w / 2) * hw[1], (cy + h / 2) * hw[0], (cx + w / 2) * hw[1]], -1
    )


@pytest.fixture(scope="module")
def cfgs(scenes_dir):
    base = {**data.DEFAULT_DATA_CONFIG, "data_dir": scenes_dir}
    return {
        "seg": {**base, "name": "digit_scenes"},
        "det": {**base, "name": "digit_detection"},
    }


@pytest.fixture
def instances_entry(monkeypatch):
    """The digit scenes' instance map read as if it were a segmentation: placed by the very
    same code and random numbers as images, it shows where each object's pixels went."""
    entry = dataclasses.replace(SCENES, name="digit_instances", segmentation_key="instances")
    monkeypatch.setitem(data.REGISTRY, entry.name, entry)
    return entry


# -- digit scenes -------------------------------------------------------------------------------
def test_specs_and_batches_follow_the_contract(cfgs):
    seg, det = data.dataset_info(cfgs["seg"]), data.dataset_info(cfgs["det"])
    assert (seg.kind, seg.num_classes, seg.ignore_label, seg.max_boxes) == (
        "segmentation",
        11,
        255,
        None,
    )
    assert (det.kind, det.num_classes, det.ignore_label, det.max_boxes) == (
        "detection",
        10,
        None,
        6,
    )
    assert seg.image_shape == det.image_shape == (64, 64, 1)
    assert seg.num_examples == {"train": 4000, "test": 500}
    assert data.dataset_info({**cfgs["det"], "image_size": 48}).element_spec["pixel_mask"] == (
        (48, 48),
        "bool",
    )
    for cfg in cfgs.values():
        for augment in (False, True):
            (batch,) = take(make({**cfg, "augment": augment}, global_batch_size=16), 1)
            check_contract(cfg, batch, 16)
            assert batch["mask"].all()
        (batch,) = take(make(cfg, "test", train=False, global_batch_size=16), 1)
        check_contract(cfg, batch, 16)


def test_eval_is_the_stored_split_in_order_with_padding(cfgs, scenes):
    stored = scenes["test"]
    seg = list(make(cfgs["seg"], "test", train=False, global_batch_size=192))
    det = list(make(cfgs["det"], "test", train=False, global_batch_size=192))
    assert len(seg) == len(det) == 3  # ceil(500 / 192)
    cat = lambda batches, key: np.concatenate([b[key] for b in batches])
    for batches in (seg, det):
        mask = cat(batches, "mask")
        assert mask.sum() == 500 and mask[:500].all()
        images = cat(batches, "image")
        np.testing.assert_allclose(
            raw_image(images[:500]), np.stack([ex["image"] for ex in stored]), atol=1e-3
        )
        assert (images[500:] == 0).all()
    segmentation = cat(seg, "segmentation")
    np.testing.assert_array_equal(
        segmentation[:500], np.stack([ex["segmentation"] for ex in stored])
    )
    assert (segmentation[500:] == 255).all()  # padded examples count nowhere
    boxes, labels, box_mask = cat(det, "boxes"), cat(det, "labels"), cat(det, "box_mask")
    for i, ex in enumerate(stored):
        bbox = np.asarray(ex["objects"]["bbox"]).reshape(-1, 4)
        n = len(bbox)
        assert box_mask[i, :n].all() and not box_mask[i, n:].any()
        np.testing.assert_array_equal(labels[i, :n], ex["objects"]["label"])
        np.testing.assert_allclose(to_pixels(boxes[i, :n], (1, 1)), bbox, atol=1e-6)
        assert (boxes[i, n:] == 0).all()
    assert not box_mask[500:].any() and (cat(det, "image_id")[:500] == np.arange(500)).all()
    assert (cat(det, "size") == 64).all() and (cat(det, "orig_size") == 64).all()
    assert cat(det, "pixel_mask").all()  # digit scenes have no padding


def on_instance(box: np.ndarray, pixels: np.ndarray, side: int, tol: float) -> bool:
    """Whether a pixel (y0, x0, y1, x1) box is its instance's pixels' box, within `tol` pixels.

    A box cut by the image border need only enclose the visible pixels: the ink that reached its
    other sides may be among the pixels cut off.
    """
    encloses = (pixels[:2] >= box[:2] - tol).all() and (pixels[2:] <= box[2:] + tol).all()
    cut = (box[:2] < 1e-3).any() or (box[2:] > side - 1e-3).any()
    return bool(encloses and (cut or (np.abs(pixels - box) <= tol).all()))


def instance_boxes(inst: np.ndarray) -> dict[int, np.ndarray]:
    """{instance id: pixel (y0, x0, y1, x1)} of the ids present in an [H, W] instance map."""
    out = {}
    for k in np.unique(inst[inst > 0]):
        rows, cols = np.nonzero(inst == k)
        out[int(k)] = np.asarray([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    return out


@pytest.mark.parametrize("image_size", [48, 100])
def test_resized_boxes_stay_on_their_instances(cfgs, scenes, instances_entry, image_size):
    kw = {"train": False, "global_batch_size": 64}
    (det,) = take(make({**cfgs["det"], "image_size": image_size}, "test", **kw), 1)
    inst_cfg = {**cfgs["seg"], "name": instances_entry.name, "image_size": image_size}
    (inst,) = take(make(inst_cfg, "test", **kw), 1)
    (seg,) = take(make({**cfgs["seg"], "image_size": image_size}, "test", **kw), 1)
    assert det["image"].shape == (64, image_size, image_size, 1)
    assert (det["size"] == image_size).all() and (det["orig_size"] == 64).all()
    for i in range(64):
        found = instance_boxes(inst["segmentation"][i])
        labels = np.asarray(scenes["test"][i]["objects"]["label"])
        assert sorted(found) == list(range(1, len(labels) + 1))  # nobody lost at any size
        pixels = to_pixels(det["boxes"][i], (image_size, image_size))
        for k, box in found.items():
            # NEAREST misplaces an edge by < 1 pixel, and when shrinking may skip a 1-pixel stroke.
            np.testing.assert_allclose(pixels[k - 1], box, atol=1.0 if image_size > 64 else 2.0)
            assert det["labels"][i, k - 1] == labels[k - 1]
        # NEAREST keeps labels: the class map is the instance map's classes.
        np.testing.assert_array_equal(
            seg["segmentation"][i], np.concatenate([[0], labels + 1])[inst["segmentation"][i]]
        )


def test_augmented_boxes_follow_the_transformed_instances(cfgs, scenes, instances_entry):
    cfg = {**cfgs["det"], "augment": True}
    inst_cfg = {**cfgs["seg"], "name": instances_entry.name, "augment": True}
    det = take(make(cfg, seed=4, global_batch_size=64), 2)
    inst = take(make(inst_cfg, seed=4, global_batch_size=64), 2)
    plain = take(make(cfgs["det"], seed=4, global_batch_size=64), 2)
    seg = take(make({**cfgs["seg"], "augment": True}, seed=4, global_batch_size=64), 2)
    moved, kept, dropped = 0, 0, 0
    for d, m, p, s in zip(det, inst, plain, seg, strict=True):
        np.testing.assert_array_equal(d["image_id"], p["image_id"])  # augmentation keeps order
        # An empty canvas: what comes in is background, not padding.
        assert d["pixel_mask"].all() and (d["size"] == 64).all()
        assert (s["segmentation"] != 255).all()
        for i in range(64):
            labels = np.asarray(scenes["train"][d["image_id"][i]]["objects"]["label"])
            found = instance_boxes(m["segmentation"][i])
            pixels = to_pixels(d["boxes"][i][d["box_mask"][i]], (64, 64))
            assert ((pixels > -1e-4) & (pixels < 64 + 1e-4)).all()  # clipped to the image
            got = d["labels"][i][d["box_mask"][i]]
            # Each kept box is the box of one visible instance, with its label, in order.
            matched = []
            for box, label in zip(pixels, got, strict=True):
                close = [
                    k
                    for k, b in found.items()
                    if on_instance(box, b, 64, tol=2.0) and labels[k - 1] == label
                ]
                assert close, (i, box, found)
                matched.append(close[0])
            assert matched == sorted(matched)
            # Instances wholly inside the image keep their box; vanished ones have none.
            inside = [
                k for k, b in found.items() if b[0] > 0 and b[1] > 0 and b[2] < 64 and b[3] < 64
            ]
            assert set(inside) <= set(matched)
            kept += len(matched)
            dropped += len(labels) - len(matched)
            moved += not np.allclose(d["boxes"][i], p["boxes"][i])
        # Image and class map move together: ink where the map says digit.
        ink = raw_image(s["image"])[..., 0]
        assert ink[s["segmentation"] > 0].mean() > 5 * ink[s["segmentation"] == 0].mean()
    assert moved > 120 and kept > 300 and dropped > 0  # 128 scenes, ~3.4 digits each


def test_flips_only_where_the_labels_allow(cfgs, scenes, monkeypatch):
    # A scale range of exactly 1 leaves a 64 x 64 scene in place: only a flip can change it.
    for flip_ok in (False, True):
        entry = dataclasses.replace(
            data.get_entry("digit_detection"),
            name="digit_flip",
            flip_ok=flip_ok,
            scale_range=(1.0, 1.0),
        )
        monkeypatch.setitem(data.REGISTRY, entry.name, entry)
        (b,) = take(
            make({**cfgs["det"], "name": entry.name, "augment": True}, global_batch_size=64), 1
        )
        flipped = 0
        for i in range(64):
            ex = scenes["train"][b["image_id"][i]]
            stored = np.asarray(ex["image"], np.float64)
            image = raw_image(b["image"][i])
            bbox = np.asarray(ex["objects"]["bbox"]).reshape(-1, 4)
            pixels = to_pixels(b["boxes"][i, : len(bbox)], (1, 1))
            if np.allclose(image, stored, atol=1e-3):
                np.testing.assert_allclose(pixels, bbox, atol=1e-6)
            else:
                np.testing.assert_allclose(image, stored[:, ::-1], atol=1e-3)
                mirrored = np.stack([bbox[:, 0], 1 - bbox[:, 3], bbox[:, 2], 1 - bbox[:, 1]], 1)
                np.testing.assert_allclose(pixels, mirrored, atol=1e-6)
                flipped += 1
        assert flipped == 0 if not flip_ok else 16 < flipped < 48
    u = np.asarray([0.5, 0.5, 0.5, 0.0])  # the flip draw says "flip"
    assert not dense.make_placement(
        (64, 64), 64, cover=False, anchored=False, u=u, flip_ok=False
    ).flip
    assert dense.make_placement((64, 64), 64, cover=False, anchored=False, u=u, flip_ok=True).flip


@pytest.mark.parametrize("name", ["seg", "det"])
def test_same_batches_for_the_same_seed_and_any_process_split(cfgs, name):
    cfg = {**cfgs[name], "augment": True}
    single = take(make(cfg, seed=3, global_batch_size=64), 2)
    again = take(make(cfg, seed=3, global_batch_size=64), 2)
    other = take(make(cfg, seed=4, global_batch_size=64), 1)
    parts = [
        take(make(cfg, seed=3, global_batch_size=64, process_index=p, process_count=2), 2)
        for p in range(2)
    ]
    for k in range(2):
        for key in single[k]:
            np.testing.assert_array_equal(again[k][key], single[k][key])
            joined = np.concatenate([parts[p][k][key] for p in range(2)])
            np.testing.assert_array_equal(joined, single[k][key])
    assert not np.array_equal(other[0]["image"], single[0]["image"])


def test_dense_config_errors_are_one_line(cfgs, tmp_path):
    with pytest.raises(data.DataConfigError) as info:
        data.get_entry("ade20k")
    msg = str(info.value)
    assert (
        "cityscapes, digit_scenes (segmentation)" in msg
        and "coco, digit_detection (detection)" in msg
    )
    with pytest.raises(data.DataConfigError, match="vary in size"):
        make({"name": "coco", "data_dir": str(tmp_path), "cache": True})
    with pytest.raises(data.DataConfigError, match="cannot read split 'test' of coco"):
        data.dataset_info({"name": "coco"})  # COCO's test split has no annotations
    with pytest.raises(data.DataConfigError, match="no vocabulary"):
        data.get_vocab(cfgs["det"])


# -- catalog datasets through tfds.testing.mock_data ----------------------------------------------
def fake_coco_example(i: int) -> dict:
    """A dark image with a bright rectangle in every box but the crowd ones (label 79)."""
    rng = np.random.default_rng(i)
    h, w = [(40, 60), (70, 45), (64, 64), (30, 100), (50, 50)][i % 5]
    image = np.full((h, w, 3), 10, np.uint8)
    boxes, labels, crowd = [], [], []
    for k in range(1 + i % 4):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        y1, x1 = (
            y0 + rng.integers(6, min(20, h - y0) + 1),
            x0 + rng.integers(6, min(20, w - x0) + 1),
        )
        is_crowd = k == 2
        if not is_crowd:
            image[y0:y1, x0:x1] = 250
        boxes.append([y0 / h, x0 / w, y1 / h, x1 / w])
        labels.append(79 if is_crowd else int(rng.integers(0, 79)))
        crowd.append(is_crowd)
    return {
        "image": image,
        "image/id": 1000 + i,
        "image/filename": f"{i}.jpg",
        "objects": {
            "bbox": np.asarray(boxes, np.float32),
            "label": np.asarray(labels, np.int64),
            "is_crowd": np.asarray(crowd, bool),
            "area": np.ones(len(labels), np.int64),
            "id": np.arange(len(labels), dtype=np.int64),
        },
    }


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def fake_coco_source(self, split, decoders=None, deserialize_method=None, **kwargs):
    """Stands for `builder.as_data_source` of a prepared coco/2017, whose images come encoded
    (coco is read with `tfds.decode.SkipDecoding`); PNG keeps the pixels exact."""
    del self, deserialize_method, kwargs
    assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
    return [
        {**ex, "image": png(ex["image"])}
        for ex in map(fake_coco_example, range(13 if split == "validation" else 23))
    ]


@pytest.fixture
def mocked(monkeypatch):
    """tfds.testing.mock_data serving `as_data_source_fn`'s examples.

    mock_data builds coco from its code, whose `_info` spells a dtype `tf.int64`, and TensorFlow
    is not installed (reading a prepared coco builds from its files instead, see the last test).
    """
    coco = importlib.import_module("tensorflow_datasets.object_detection.coco")
    monkeypatch.setattr(coco, "tf", types.SimpleNamespace(int64=np.int64))

    def enter(as_data_source_fn):
        return tfds.testing.mock_data(
            policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source_fn
        )

    return enter


def detr_hw(hw, shorter, max_size):
    """The reference's resize, written out: the shorter side to `shorter` unless the longer
    would pass max_size, then the longer to about max_size; the other side rounded down."""
    h, w = hw
    if max(h, w) / min(h, w) * shorter > max_size:
        shorter = round(max_size * min(h, w) / max(h, w))
    if h <= w:
        return shorter, int(shorter * w / h)
    return int(shorter * h / w), shorter


COCO_LIKE = [(480, 640), (427, 640), (640, 480), (640, 427), (424, 640), (360, 640), (640, 640)]


def test_detr_train_sizes_follow_the_official_distribution():
    recipe = detr_multiscale.make_recipe(800)
    assert recipe.scales == tuple(range(480, 801, 32)) and recipe.max_size == 1333
    assert (recipe.crop_scales, recipe.crop_range) == ((400, 500, 600), (384, 600))
    u = T.random_uniform(T.fold_key(7), np.arange(6000), detr_multiscale.DRAWS)
    plain, cropped, flips = collections.Counter(), 0, 0
    for i in range(6000):
        h0, w0 = COCO_LIKE[i % len(COCO_LIKE)]
        g = detr_multiscale.train_geometry((h0, w0), u[i], recipe)
        left, top, right, bottom = g.region
        assert 0 <= left < right <= w0 + 1e-9 and 0 <= top < bottom <= h0 + 1e-9
        assert max(g.height, g.width) <= 1333
        flips += g.flip
        if not g.cropped:  # the whole image, its shorter side one of the scales
            assert g.region == (0, 0, w0, h0)
            assert (g.height, g.width) in [detr_hw((h0, w0), s, 1333) for s in recipe.scales]
            if min(g.height, g.width) in recipe.scales:
                plain[min(g.height, g.width)] += 1
            else:  # capped: the longer side at 1333 (16:9 images above 750)
                assert max(g.height, g.width) >= 1330
            continue
        cropped += 1
        # The crop was taken at shorter side 400, 500 or 600 (h1, w1): its sides there are
        # integers in [384, 600], and its shorter side then went to one of the scales.
        fits = []
        for h1, w1 in [detr_hw((h0, w0), s, math.inf) for s in recipe.crop_scales]:
            ch, cw = (bottom - top) * h1 / h0, (right - left) * w1 / w0
            whole = abs(ch - round(ch)) < 1e-6 and abs(cw - round(cw)) < 1e-6
            if whole and 384 <= round(ch) <= min(600, h1) and 384 <= round(cw) <= min(600, w1):
                crop = (round(ch), round(cw))
                fits.append((g.height, g.width) in [detr_hw(crop, s, 1333) for s in recipe.scales])
        assert any(fits)
    assert abs(cropped / 6000 - 0.5) < 0.03 and abs(flips / 6000 - 0.5) < 0.03
    # The 11 scales come equally often (the 16:9 images take only the lowest uncapped).
    assert set(plain) == set(recipe.scales)
    assert min(plain.values()) > 0.7 * (6000 - cropped) * 6 / 7 / 11
    # Evaluation: shorter side 800, longer at most 1333.
    for hw in COCO_LIKE + [(300, 1000)]:
        g = detr_multiscale.eval_geometry(hw, recipe)
        assert (g.height, g.width) == detr_hw(hw, 800, 1333) and not g.flip
    assert detr_hw((300, 1000), 800, 1333) == (400, 1333)


def test_detr_padded_shapes_are_few():
    recipe = detr_multiscale.make_recipe(800)
    sides = {recipe.padded(x) for x in range(1, 1334)}
    assert sides == {*range(128, 1281, 128), 1344} and recipe.max_padded == 1344
    assert recipe.padded(1345) == 1408  # past the cap (aspect > 20): a bucket, never cut
    u = T.random_uniform(T.fold_key(8), np.arange(16 * 200), detr_multiscale.DRAWS)
    shapes = collections.Counter()
    for k in range(200):  # 200 batches of 16 COCO-like images
        hw = [
            detr_multiscale.train_geometry(COCO_LIKE[(k * 16 + j) % 7], u[k * 16 + j], recipe)
            for j in range(16)
        ]
        shapes[
            recipe.padded(max(g.height for g in hw)), recipe.padded(max(g.width for g in hw))
        ] += 1
    assert len(shapes) <= 20, shapes


def test_warped_boxes_and_masks_stay_together():
    # A label map with one object per box: after any geometry, each kept box is the bounding
    # box of its object's pixels (NEAREST keeps labels), clipped to the image.
    rng = np.random.default_rng(0)
    recipe = detr_multiscale.make_recipe(64)
    u = T.random_uniform(T.fold_key(9), np.arange(300), detr_multiscale.DRAWS)
    dropped = kept = 0
    for i in range(300):
        h0, w0 = [(40, 60), (70, 45), (30, 100)][i % 3]
        labels = np.zeros((h0, w0), np.uint8)
        boxes = []
        for k in range(1, 4):  # in three column bands of 15: no overlap
            y0, x0 = rng.integers(0, h0 - 6), 15 * (k - 1) + rng.integers(0, 9)
            y1, x1 = y0 + rng.integers(4, 7), x0 + rng.integers(4, 7)
            labels[y0:y1, x0:x1] = k
            boxes.append([y0 / h0, x0 / w0, y1 / h0, x1 / w0])
        boxes = np.asarray(boxes)
        g = detr_multiscale.train_geometry((h0, w0), u[i], recipe)
        warped = detr_multiscale.warp_array(labels, g, nearest=True)
        assert warped.shape == (g.height, g.width)
        out, keep = detr_multiscale.warp_boxes(boxes, g, (h0, w0))
        pixels = to_pixels(out, (g.height, g.width))
        assert ((pixels > -1e-6) & (pixels < np.asarray([g.height, g.width] * 2) + 1e-6)).all()
        for k in (1, 2, 3):
            rows, cols = np.nonzero(warped == k)
            if not keep[k - 1]:
                dropped += 1
                assert len(rows) == 0  # a dropped box has no pixel left
                continue
            kept += 1
            if len(rows):
                found = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
                np.testing.assert_allclose(pixels[k - 1], found, atol=1.5)
    assert kept > 450 and dropped > 10


def test_coco_follows_detrs_recipe(tmp_path, mocked):
    entry = data.get_entry("coco")
    cfg = {"name": "coco", "data_dir": str(tmp_path), "eval_split": "validation", "image_size": 64}
    spec = data.dataset_info(cfg)
    assert (spec.image_shape, spec.pad_multiple) == ((128, 128, 3), 32)
    full = data.dataset_info({**cfg, "image_size": None})
    assert (full.image_shape, full.pad_multiple) == ((1344, 1344, 3), 128)
    with mocked(fake_coco_source):
        evals = list(make(cfg, "validation", train=False, global_batch_size=8))
        train = take(make({**cfg, "augment": True}, global_batch_size=16, seed=2), 6)
        halves = [
            take(
                make(
                    {**cfg, "augment": True},
                    global_batch_size=16,
                    seed=2,
                    process_index=p,
                    process_count=2,
                ),
                2,
            )
            for p in (0, 1)
        ]
    assert len(evals) == 2
    shapes = set()
    for batch in (*evals, *train):
        b, height, width = batch["pixel_mask"].shape
        shapes.add((height, width))
        assert height % 32 == 0 and width % 32 == 0 and max(height, width) <= 128
        assert batch["image"].shape == (b, height, width, 3)
        for key, (shape, dtype) in spec.element_spec.items():
            if key not in ("image", "pixel_mask"):
                assert batch[key].shape == (b, *shape) and batch[key].dtype == np.dtype(dtype)
        assert (batch["labels"][batch["box_mask"]] != 79).all()  # crowd boxes dropped
        real = batch["mask"]
        # Padded to the batch's largest image, rounded up to 32: no bucket wasted.
        assert height - 32 < batch["size"][real, 0].max() <= height
        assert width - 32 < batch["size"][real, 1].max() <= width
        for i in np.flatnonzero(real):
            ch, cw = batch["size"][i]
            pm = batch["pixel_mask"][i]
            assert pm[:ch, :cw].all() and pm.sum() == ch * cw
            assert (batch["image"][i][~pm] == 0).all()  # padding is 0 after normalization
            corners = to_pixels(batch["boxes"][i][batch["box_mask"][i]], (1, 1))
            assert ((corners > -1e-6) & (corners < 1 + 1e-6)).all()
    for j in range(13):  # evaluation: the reference's resize, boxes unchanged (normalized)
        b, i = evals[j // 8], j % 8
        ex = fake_coco_example(j)
        h, w = ex["image"].shape[:2]
        assert tuple(b["size"][i]) == detr_hw((h, w), 64, 107)
        assert tuple(b["orig_size"][i]) == (h, w) and b["image_id"][i] == 1000 + j
        single = ~ex["objects"]["is_crowd"]
        n = int(single.sum())
        assert b["box_mask"][i].sum() == n
        np.testing.assert_array_equal(b["labels"][i, :n], ex["objects"]["label"][single])
        np.testing.assert_allclose(
            to_pixels(b["boxes"][i, :n], (1, 1)), ex["objects"]["bbox"][single], atol=1e-6
        )
    assert not evals[1]["mask"][5:].any() and evals[1]["pixel_mask"][5:].all()
    recipe = detr_multiscale.make_recipe(64)
    u = T.random_uniform(T.fold_key(2, 2), np.arange(96), detr_multiscale.DRAWS)
    cropped = 0
    for k, b in enumerate(train):
        for i in range(16):
            ex = fake_coco_example(int(b["image_id"][i]) - 1000)
            g = detr_multiscale.train_geometry(ex["image"].shape[:2], u[16 * k + i], recipe)
            assert tuple(b["size"][i]) == (g.height, g.width)  # the drawn geometry
            cropped += g.cropped
            ch, cw = b["size"][i]
            raw = raw_image(b["image"][i], entry).mean(-1)
            for box in to_pixels(b["boxes"][i][b["box_mask"][i]], (ch, cw)):
                # The bright rectangle moved (scaled, cropped, maybe mirrored) with its box.
                y0, x0, y1, x1 = np.rint(box).astype(int)
                assert raw[(y0 + y1) // 2, (x0 + x1) // 2] > 150
                if y1 - y0 > 2 and x1 - x0 > 2:
                    assert raw[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].min() > 150
    assert 24 < cropped < 72
    assert len(shapes) > 1  # shapes vary from batch to batch
    for k in range(2):  # both processes pad to the global batch's shape: the halves join up
        for key in train[k]:
            joined = np.concatenate([halves[0][k][key], halves[1][k][key]])
            np.testing.assert_array_equal(joined, train[k][key])


def fake_cityscapes_source(self, split, decoders=None, deserialize_method=None, **kwargs):
    """Stands for `builder.as_data_source` of a prepared cityscapes/semantic_segmentation, with
    32 x 64 images (the real ones are 1024 x 2048) whose label ids are constant on 4x4 blocks."""
    del self, decoders, deserialize_method, kwargs
    out = []
    for i in range(5 if split == "validation" else 9):
        blocks = np.random.default_rng(i).integers(0, 40, size=(8, 16)).astype(np.uint8)
        labels = np.kron(blocks, np.ones((4, 4), np.uint8))
        image = np.stack([labels * 6, labels * 3, 255 - labels * 6], -1).astype(np.uint8)
        out.append(
            {"image_id": f"city_{i}", "image_left": image, "segmentation_label": labels[..., None]}
        )
    return out


def test_cityscapes_segmentation_batches(tmp_path, mocked):
    entry = data.get_entry("cityscapes")
    cfg = {
        "name": "cityscapes",
        "data_dir": str(tmp_path),
        "eval_split": "validation",
        "image_size": 16,
    }
    with mocked(fake_cityscapes_source):
        source = fake_cityscapes_source(None, "validation")
        (evals,) = list(make(cfg, "validation", train=False, global_batch_size=8))
        train = take(make({**cfg, "augment": True}, global_batch_size=8, seed=1), 4)
    assert data.dataset_info({**cfg, "image_size": None}).image_shape == (768, 768, 3)
    check_contract(cfg, evals, 8)
    table = np.full(256, 255)
    table[: len(entry.label_map)] = entry.label_map
    assert table[7] == 0 and table[26] == 13 and table[33] == 18 and table[0] == table[34] == 255
    # Shorter side 32 -> 16 (factor 2), width 64 -> 32, the central 16 columns kept: output
    # pixel (y, x) shows source pixel (2y + 1, 16 + 2x + 1) under NEAREST.
    ys, xs = np.meshgrid(2 * np.arange(16) + 1, 17 + 2 * np.arange(16), indexing="ij")
    for i in range(5):
        labels = source[i]["segmentation_label"][..., 0]
        np.testing.assert_array_equal(evals["segmentation"][i], table[labels[ys, xs]])
    assert evals["mask"].sum() == 5 and (evals["segmentation"][5:] == 255).all()
    padded = 0
    for b in train:
        check_contract(cfg, b, 8)
        values = set(np.unique(b["segmentation"]).tolist())
        assert values <= set(range(19)) | {255}
        # Padding (a zoomed-out scene) is ignored, and its pixels are 0 after normalization.
        pad = np.all(b["image"] == 0, axis=-1)
        assert (b["segmentation"][pad] == 255).all()
        padded += pad.any(axis=(1, 2)).sum()
    assert 0 < padded < 32


@pytest.mark.parametrize(
    "name, tfds_name, note",
    [
        ("coco", "coco/2017", "20 GB"),
        ("cityscapes", "cityscapes/semantic_segmentation", "gtFine_trainvaltest.zip"),
    ],
)
def test_missing_catalog_dataset_is_one_clear_line(tmp_path, name, tfds_name, note):
    cfg = {"name": name, "data_dir": str(tmp_path), "eval_split": "validation"}
    for call in (lambda: make(cfg), lambda: data.prepare(name, tmp_path)):
        with pytest.raises(data.DatasetNotFoundError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and isinstance(info.value, UserError)
        assert f"dataset {name} is not prepared in data dir {tmp_path}" in msg
        assert f"tfds build {tfds_name} --data_dir={tmp_path} --file_format=array_record" in msg
        assert note in msg
    assert not list(tmp_path.iterdir())


def test_prepared_catalog_datasets_are_read_from_their_files(tmp_path, monkeypatch):
    # Naming the prepared version makes tfds build the reader from the files, not from code.
    for version, files in (
        ("1.0.0", ["coco-train.tfrecord-00000-of-00001"]),
        ("1.1.0", ["coco-train.array_record-00000-of-00001"]),
    ):
        folder = tmp_path / "coco" / "2017" / version
        folder.mkdir(parents=True)
        (folder / "dataset_info.json").write_text("{}")
        for f in files:
            (folder / f).write_bytes(b"")
    asked = []
    monkeypatch.setattr(tfds, "data_source", lambda name, **kw: asked.append(name) or [])
    assert data.is_prepared("coco", tmp_path)
    sources.open_source(data.get_entry("coco"), "validation", str(tmp_path))
    assert asked == ["coco/2017:1.1.0"]
