"""DETR's COCO input pipeline (Carion et al. 2020, "End-to-End Object Detection with
Transformers", sec. 4 and appendix A.4; the official repository's datasets/coco.py transforms),
with batches padded to a few bucketed shapes.

Training ("detr_multiscale" augmentation, `data.augment=True`), per image:

1. a horizontal flip with probability 1/2;
2. with probability 1/2, a resize of the shorter side to s, uniform in SCALES = 480, 512, ...,
   800, the longer side capped at MAX_SIZE = 1333 (s shrinks to what fits);
3. otherwise a resize of the shorter side to one of 400, 500, 600 (no cap), a crop of a uniform
   integer width in [384, min(600, width)] and height in [384, min(600, height)] at a uniform
   integer position, then step 2's resize of the crop.

Evaluation (and training without augmentation): the shorter side to 800, the longer capped at
1333. A resize keeps the aspect ratio: the shorter side becomes s, the longer int(s * long /
short) (rounded down, as the reference computes it). Every number scales with `data.image_size`
(800 by default): image_size 64 gives scales 38 .. 64 and a cap of 107, for fast tests.

The composed resizes and crop are one resampling (bilinear, antialiased when shrinking) of a
region of the stored image; boxes take the same map, are clipped to the image and dropped when
nothing of them is left (the reference's crop); label maps would take `warp_array(...,
nearest=True)`.

Batches: every image of a global batch is padded at the bottom and right to the batch's largest
height and width, each rounded up to a multiple of `pad_multiple(image_size)` (128 at 800), the
last bucket being 1344 (1333 rounded up to 32): `pixel_mask` is True on the real pixels, padding
pixels are 0 after normalization, and the boxes stay normalized by the real image (`size`). The
reference pads each GPU's batch to its own largest image; with one jitted program per input
shape that would be a compilation per batch. Over a simulated COCO-like epoch
(`benchmarks/input_pipeline.py --dataset coco`), buckets of 128 give 30 distinct training
shapes at batch 16 (17 at batch 64) for 10% (8%) more pixels than exact padding, and 10 (2)
evaluation shapes; 64 would give 87 (39) training shapes for 5% (4%), 256 12 (8) for 23% (14%).
The padded shape is that of the global batch, so that every process pads to the same shape:
with several processes, each reads the sizes (the JPEG headers) of the other processes' images
as well. One shape for the whole global batch, each image drawing its own scale, costs compute:
the simulated padded batches hold 2.3x the images' pixels at batch 16 (2.8x at 64), where the
reference's per-GPU batches of 2 hold 1.25x.

Padded evaluation examples (`mask` False) are blank images of the batch's shape: no boxes,
`pixel_mask` True, `size` = `orig_size` = the padded (H, W), so that nothing divides by zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from attn_jax.data import stream
from attn_jax.data import transforms as T
from attn_jax.data.registry import DatasetEntry

REFERENCE_SIZE = 800  # the reference's evaluation shorter side; every size below scales with it
SCALES = tuple(range(480, 801, 32))
MAX_SIZE = 1333
CROP_SCALES = (400, 500, 600)
CROP_RANGE = (384, 600)
PAD_MULTIPLE = 128
DRAWS = 9  # flip, branch, scale, crop scale, crop width, crop height, crop top, crop left, scale
_AUGMENT = 2  # the purpose folded into the augmentation key, as for other image batches


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The reference's sizes scaled to an evaluation shorter side `size` (800: the reference).

    Attributes:
        size: evaluation shorter side.
        scales: training shorter sides.
        max_size: cap of the longer side.
        crop_scales: shorter sides before the random crop.
        crop_range: (min, max) crop side.
        pad_multiple: batches pad H and W up to multiples of this.
    """

    size: int
    scales: tuple[int, ...]
    max_size: int
    crop_scales: tuple[int, ...]
    crop_range: tuple[int, int]
    pad_multiple: int

    @property
    def max_padded(self) -> int:
        """The largest padded side: max_size rounded up to 32 rather than to pad_multiple, so
        that 1333 pads to 1344, not 1408."""
        return round_up(self.max_size, 32)

    def padded(self, side: int) -> int:
        """The padded length of a batch whose largest image has this side."""
        bucket = round_up(side, self.pad_multiple)
        # A side past max_padded (an aspect ratio beyond ~20) keeps its bucket: never cut.
        return min(bucket, self.max_padded) if side <= self.max_padded else bucket


def pad_multiple(size: int) -> int:
    """PAD_MULTIPLE scaled with the image size, a multiple of 32 (DETR's backbone stride)."""
    return 32 * max(1, round(PAD_MULTIPLE / 32 * size / REFERENCE_SIZE))


def make_recipe(size: int = REFERENCE_SIZE) -> Recipe:
    """The recipe at evaluation shorter side `size`."""
    scale = lambda v: max(1, round(v * size / REFERENCE_SIZE))
    return Recipe(
        size=size,
        scales=tuple(scale(s) for s in SCALES),
        max_size=scale(MAX_SIZE),
        crop_scales=tuple(scale(s) for s in CROP_SCALES),
        crop_range=(scale(CROP_RANGE[0]), scale(CROP_RANGE[1])),
        pad_multiple=pad_multiple(size),
    )


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def resized_hw(hw: tuple[int, int], shorter: int, max_size: int | None = None) -> tuple[int, int]:
    """(h, w) after resizing the shorter side of an (h, w) image to `shorter`, the longer side
    capped at `max_size` (`shorter` shrinks to round(max_size * short / long) when needed)."""
    h, w = hw
    short, long = min(h, w), max(h, w)
    if max_size is not None and long / short * shorter > max_size:
        shorter = int(round(max_size * short / long))
    if short == shorter:
        return h, w
    if w < h:
        return int(shorter * h / w), shorter
    return shorter, int(shorter * w / h)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where the output image comes from: the region (left, top, right, bottom), in pixels of
    the stored image after the flip, resampled to (height, width).

    Attributes:
        height: output rows.
        width: output columns.
        region: (left, top, right, bottom) of the flipped stored image.
        flip: mirror the stored image first.
        cropped: whether the random-crop branch made it (for tests and statistics).
    """

    height: int
    width: int
    region: tuple[float, float, float, float]
    flip: bool = False
    cropped: bool = False


def _pick(u: float, n: int) -> int:
    """An index uniform in range(n) from a uniform in [0, 1)."""
    return min(int(u * n), n - 1)


def eval_geometry(hw: tuple[int, int], recipe: Recipe) -> Geometry:
    """The evaluation resize: shorter side recipe.size, longer capped at recipe.max_size."""
    h0, w0 = hw
    h, w = resized_hw(hw, recipe.size, recipe.max_size)
    return Geometry(h, w, (0.0, 0.0, float(w0), float(h0)))


def train_geometry(hw: tuple[int, int], u: np.ndarray, recipe: Recipe) -> Geometry:
    """The training transform of an (h, w) image drawn from DRAWS uniforms (see the module)."""
    h0, w0 = hw
    flip = bool(u[0] < 0.5)
    if u[1] < 0.5:  # resize only
        h, w = resized_hw(hw, recipe.scales[_pick(u[2], len(recipe.scales))], recipe.max_size)
        return Geometry(h, w, (0.0, 0.0, float(w0), float(h0)), flip)
    h1, w1 = resized_hw(hw, recipe.crop_scales[_pick(u[3], len(recipe.crop_scales))])
    lo, hi = recipe.crop_range
    crop_w = min(lo, w1) + _pick(u[4], max(min(hi, w1) - lo, 0) + 1)
    crop_h = min(lo, h1) + _pick(u[5], max(min(hi, h1) - lo, 0) + 1)
    top, left = _pick(u[6], h1 - crop_h + 1), _pick(u[7], w1 - crop_w + 1)
    scale = recipe.scales[_pick(u[8], len(recipe.scales))]
    h, w = resized_hw((crop_h, crop_w), scale, recipe.max_size)
    sy, sx = h0 / h1, w0 / w1  # back to stored pixels
    region = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
    return Geometry(h, w, region, flip, cropped=True)


def warp_array(array: np.ndarray, g: Geometry, *, nearest: bool = False) -> np.ndarray:
    """`array` (uint8 [h, w] or [h, w, C]) mapped by `g`: [g.height, g.width, ...]; bilinear
    (antialiased when shrinking), or nearest for label maps."""
    if g.flip:
        array = array[:, ::-1]
    squeeze = array.ndim == 3 and array.shape[2] == 1
    pil = Image.fromarray(np.ascontiguousarray(array[..., 0] if squeeze else array))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    out = np.asarray(pil.resize((g.width, g.height), resample, box=g.region))
    return out.reshape(g.height, g.width, *array.shape[2:])


def warp_boxes(
    boxes: np.ndarray, g: Geometry, orig_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes mapped by `g` and clipped to the output image.

    Args:
        boxes: float [n, 4] tfds boxes, normalized (ymin, xmin, ymax, xmax) on the stored image.
        g: the geometry.
        orig_hw: (h, w) of the stored image.

    Returns:
        (float32 [n, 4] (cx, cy, w, h) normalized by the output image, bool [n] keep): keep is
        False where nothing of the box is left (zero width or height after clipping).
    """
    h0, w0 = orig_hw
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if g.flip:
        b = np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], axis=1)
    left, top, right, bottom = g.region
    sy, sx = g.height / (bottom - top), g.width / (right - left)
    y = (b[:, [0, 2]] * h0 - top) * sy
    x = (b[:, [1, 3]] * w0 - left) * sx
    y, x = np.clip(y, 0, g.height), np.clip(x, 0, g.width)
    keep = (y[:, 1] > y[:, 0]) & (x[:, 1] > x[:, 0])
    cxcywh = np.stack(
        [
            x.mean(1) / g.width,
            y.mean(1) / g.height,
            (x[:, 1] - x[:, 0]) / g.width,
            (y[:, 1] - y[:, 0]) / g.height,
        ],
        axis=1,
    )
    return cxcywh.astype(np.float32), keep


# -- batches -------------------------------------------------------------------------------------
class MultiScaleBatchMaker:
    """Process `process_index`'s part of global batch k of a detection dataset under DETR's
    multi-scale recipe, as a function of k alone; the batch's padded shape is the global batch's
    (see the module docstring)."""

    def __init__(
        self,
        entry: DatasetEntry,
        examples: Any,
        *,
        size: int,
        augment: bool,
        train: bool,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
    ):
        assert entry.kind == "detection", entry
        self._entry = entry
        self._examples = examples  # dense.DenseExamples
        self.recipe = make_recipe(size)
        self._augment = train and augment
        local = global_batch_size // process_count
        self._mine = slice(process_index * local, (process_index + 1) * local)
        # Every process computes the whole global batch's positions, to agree on its shape.
        self._positions = stream.BatchPositions(
            len(examples),
            train=train,
            global_batch_size=global_batch_size,
            seed=seed,
            process_index=0,
            process_count=1,
        )
        self._augment_key = T.fold_key(seed, _AUGMENT)

    def geometry(self, hw: tuple[int, int], u: np.ndarray | None) -> Geometry:
        return eval_geometry(hw, self.recipe) if u is None else train_geometry(hw, u, self.recipe)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        positions, valid, valid_indices = self._positions(step)
        indices = np.zeros(len(positions), np.int64)
        indices[valid] = valid_indices
        mine = np.zeros(len(positions), bool)
        mine[self._mine] = True
        own = np.flatnonzero(mine & valid)
        others = np.flatnonzero(~mine & valid)
        examples = dict(zip(own.tolist(), self._examples.read(indices[own]), strict=True))
        sizes = {i: ex["image"].shape[:2] for i, ex in examples.items()}
        if len(others):
            other_sizes = self._examples.image_sizes(indices[others])
            sizes.update(zip(others.tolist(), other_sizes, strict=True))
        u = T.random_uniform(self._augment_key, positions, DRAWS) if self._augment else None
        geometry = {
            i: self.geometry(tuple(hw), None if u is None else u[i]) for i, hw in sizes.items()
        }
        height = self.recipe.padded(max(g.height for g in geometry.values()))
        width = self.recipe.padded(max(g.width for g in geometry.values()))
        return self._batch(positions, valid, examples, geometry, (height, width))

    def _batch(self, positions, valid, examples, geometry, hw) -> dict[str, np.ndarray]:
        e, n = self._entry, self._entry.max_boxes
        slots = np.arange(len(positions))[self._mine]
        b, (height, width) = len(slots), hw
        batch = {
            "image": np.zeros((b, height, width, e.channels), np.float32),
            "pixel_mask": np.ones((b, height, width), bool),
            "boxes": np.zeros((b, n, 4), np.float32),
            "labels": np.zeros((b, n), np.int32),
            "box_mask": np.zeros((b, n), bool),
            "size": np.tile(np.asarray(hw, np.int32), (b, 1)),
            "orig_size": np.tile(np.asarray(hw, np.int32), (b, 1)),
            "image_id": np.zeros((b,), np.int32),
            "mask": valid[self._mine].copy(),
        }
        for j, slot in enumerate(slots):
            if slot not in examples:
                continue
            ex, g = examples[slot], geometry[slot]
            image = warp_array(ex["image"], g)
            batch["image"][j, : g.height, : g.width] = T.normalize(
                image[None], e.max_value, e.mean, e.std
            )[0]
            batch["pixel_mask"][j] = False
            batch["pixel_mask"][j, : g.height, : g.width] = True
            boxes, keep = warp_boxes(ex["boxes"], g, ex["image"].shape[:2])
            boxes, labels = boxes[keep][:n], ex["labels"][keep][:n]
            batch["boxes"][j, : len(boxes)] = boxes
            batch["labels"][j, : len(labels)] = labels
            batch["box_mask"][j, : len(labels)] = True
            batch["size"][j] = (g.height, g.width)
            batch["orig_size"][j] = ex["image"].shape[:2]
            batch["image_id"][j] = ex["image_id"]
        return batch
