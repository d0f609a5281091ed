"""Segmentation and detection batches: reading dense examples, placing each image with its labels
on the square canvas the model sees (resize, crop, pad, flip), and the "scale_crop" augmentation.
COCO follows DETR's own recipe instead, with batches of varying shape (detr_multiscale.py), over
the reading done here.

Batches (b examples, S = the image size, N = entry.max_boxes):

- segmentation: `image` float32 [b, S, S, C] normalized like image batches, `segmentation` int32
  [b, S, S] class ids with `entry.ignore_label` (255) on pixels that must not count (padding,
  classes the protocol ignores, padded examples), `mask` bool [b].
- detection: `image` float32 [b, S, S, C]; `pixel_mask` bool [b, S, S], True on real pixels;
  `boxes` float32 [b, N, 4] normalized (cx, cy, w, h) relative to the unpadded resized image
  (DETR's convention); `labels` int32 [b, N]; `box_mask` bool [b, N], True on real boxes (padded
  boxes are zeros); `size` int32 [b, 2], (h, w) of the unpadded resized image; `orig_size` int32
  [b, 2], (h, w) of the stored image; `image_id` int32 [b]; `mask` bool [b]. An example keeps
  its first N boxes in stored order: boxes beyond N are dropped, as are degenerate boxes (no
  width or height) and crowd boxes where the dataset marks them. Where the dataset has instance
  masks (`entry.instances_key`), `instances` int32 [b, S, S] is 1 + the box slot of the object
  on each of its pixels and 0 elsewhere (background, padding, and the pixels of dropped
  objects): the masks of all N slots in one map, since the objects do not overlap.

Where the image lands (a `Placement`: scaled to (height, width), its top-left corner at
(top, left) on the S x S canvas, negative where cropped):

- segmentation: the shorter side is scaled to S and the square centred (the usual center crop);
  detection: the longer side is scaled to S and the image put at the top left, the rest padded
  (bottom and right), so that normalized boxes keep their meaning and `pixel_mask` marks the
  image. For the square digit scenes both mean a plain resize to S x S.
- "scale_crop" (training with `data.augment=True`, random numbers drawn from (seed, stream
  position) like every augmentation here): the scale is multiplied by a factor uniform in
  `entry.scale_range`, and the offset is drawn uniformly among those that crop the scaled image
  to the canvas or, when it is smaller, pad it; a horizontal flip (p = 1/2) only where
  `entry.flip_ok`. On an empty canvas (`entry.empty_canvas`, the digit scenes) pixels brought in
  are real background: class 0, `pixel_mask` True. Elsewhere they are padding: segmentation
  `ignore_label`, and for detection the image stays at the top left, so that padding is only
  ever bottom and right, `pixel_mask` False there and the boxes normalized by the visible part.
  Padding pixels are 0 after normalization (as DETR and mmsegmentation pad normalized images).
- Boxes follow the image exactly (scaled, shifted, mirrored) and are clipped to the real pixels;
  a box whose visible area falls below MIN_VISIBLE of its area on the scaled image is dropped.
  Masks are resampled with NEAREST (they keep their labels), images bilinearly (antialiased
  when shrinking).

Padded evaluation examples (`mask` False) are blank S x S images: segmentation all ignore, no
boxes, `pixel_mask` True and `size` = `orig_size` = (S, S), so that nothing divides by zero.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import os
from typing import Any

import numpy as np
from PIL import Image

from attn_jax.data import sources, stream
from attn_jax.data import transforms as T
from attn_jax.data.errors import DataConfigError
from attn_jax.data.registry import DatasetEntry, get_entry

DENSE_KINDS = ("segmentation", "detection")
MIN_VISIBLE = 0.25  # smallest visible fraction of a box's area that keeps it after a crop
_AUGMENT = 2  # the purpose folded into the augmentation key, as for image batches
_DRAWS = 4  # uniforms per example: scale, top, left, flip


# -- placing one example on the canvas ---------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a stored image lands on the S x S canvas.

    Attributes:
        height: rows of the scaled image.
        width: columns of the scaled image.
        top: canvas row of the scaled image's first row (negative: cropped at the top).
        left: canvas column of its first column.
        flip: mirror the stored image (and its labels) before scaling.
    """

    height: int
    width: int
    top: int
    left: int
    flip: bool = False

    def region(self, size: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the canvas pixels [y0, y1) x [x0, x1) covered by the image."""
        return (
            max(self.top, 0),
            min(self.top + self.height, size),
            max(self.left, 0),
            min(self.left + self.width, size),
        )


def make_placement(
    orig_hw: tuple[int, int],
    size: int,
    *,
    cover: bool,
    anchored: bool,
    u: np.ndarray | None = None,
    scale_range: tuple[float, float] = (1.0, 1.0),
    flip_ok: bool = False,
) -> Placement:
    """The placement of an (h, w) image on the size x size canvas.

    Args:
        orig_hw: (h, w) of the stored image.
        size: S, the canvas side.
        cover: scale the shorter side to S (and center-crop), else the longer (and pad).
        anchored: keep the image's top-left corner at the canvas's top left or above/left of it
            (pad only bottom and right); else random offsets may also pad top and left.
        u: 4 uniforms in [0, 1) (scale, top, left, flip) for "scale_crop"; None: no augmentation.
        scale_range: range of the random scale factor.
        flip_ok: whether u may mirror the image.
    """
    h0, w0 = orig_hw
    scale = size / (min(h0, w0) if cover else max(h0, w0))
    if u is not None:
        scale *= scale_range[0] + u[0] * (scale_range[1] - scale_range[0])
    height, width = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    if u is None:
        top, left = (min(0, (size - height) // 2), min(0, (size - width) // 2)) if cover else (0, 0)
        return Placement(height, width, top, left)
    offsets = []
    for extent, draw in ((height, u[1]), (width, u[2])):
        lo, hi = min(0, size - extent), max(0, size - extent)
        if anchored:
            hi = 0
        offsets.append(lo + min(int(draw * (hi - lo + 1)), hi - lo))
    return Placement(height, width, offsets[0], offsets[1], bool(flip_ok and u[3] < 0.5))


def place_array(
    array: np.ndarray, p: Placement, size: int, *, nearest: bool = False, fill: int = 0
) -> np.ndarray:
    """`array` ([h, w] or [h, w, C] uint8) placed by `p` on a size x size canvas of `fill`.

    One resampling of the visible part only: bilinear (antialiased when shrinking), or nearest
    for label maps.
    """
    if p.flip:
        array = array[:, ::-1]
    h0, w0 = array.shape[:2]
    out = np.full((size, size, *array.shape[2:]), fill, array.dtype)
    y0, y1, x0, x1 = p.region(size)
    if y1 <= y0 or x1 <= x0:
        return out
    if (p.height, p.width) == (h0, w0):  # a pure shift: copy
        out[y0:y1, x0:x1] = array[y0 - p.top : y1 - p.top, x0 - p.left : x1 - p.left]
        return out
    sy, sx = h0 / p.height, w0 / p.width
    box = ((x0 - p.left) * sx, (y0 - p.top) * sy, (x1 - p.left) * sx, (y1 - p.top) * sy)
    squeeze = array.ndim == 3 and array.shape[2] == 1
    pil = Image.fromarray(np.ascontiguousarray(array[..., 0] if squeeze else array))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    resized = np.asarray(pil.resize((x1 - x0, y1 - y0), resample, box=box))
    out[y0:y1, x0:x1] = resized.reshape(y1 - y0, x1 - x0, *array.shape[2:])
    return out


def place_boxes(
    boxes: np.ndarray, p: Placement, content_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes moved with their image and clipped to its real pixels.

    Args:
        boxes: float [n, 4] tfds boxes, normalized (ymin, xmin, ymax, xmax) on the stored image.
        p: the image's placement.
        content_hw: (h, w) of the real pixels, the canvas region [0, h) x [0, w) that the
            returned boxes are normalized by.

    Returns:
        (float32 [n, 4] normalized (cx, cy, w, h), bool [n] keep): keep is False for boxes that
        are degenerate or whose visible area is below MIN_VISIBLE of their area.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if p.flip:
        b = np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], axis=1)
    b = b * [p.height, p.width, p.height, p.width] + [p.top, p.left, p.top, p.left]
    ch, cw = content_hw
    c = np.clip(b, 0, [ch, cw, ch, cw])
    full = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    visible = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    keep = (c[:, 2] > c[:, 0]) & (c[:, 3] > c[:, 1]) & (visible >= MIN_VISIBLE * full)
    cxcywh = np.stack(
        [
            (c[:, 1] + c[:, 3]) / (2 * cw),
            (c[:, 0] + c[:, 2]) / (2 * ch),
            (c[:, 3] - c[:, 1]) / cw,
            (c[:, 2] - c[:, 0]) / ch,
        ],
        axis=1,
    )
    return cxcywh.astype(np.float32), keep


# -- reading -------------------------------------------------------------------------------------
def _label_table(entry: DatasetEntry) -> np.ndarray | None:
    if entry.label_map is None:
        return None
    table = np.full(256, entry.ignore_label, np.uint8)
    table[: len(entry.label_map)] = entry.label_map
    return table


def image_hw(image: Any) -> tuple[int, int]:
    """(h, w) of a decoded image array, or of an encoded image from its header alone."""
    if isinstance(image, bytes | bytearray | memoryview):
        width, height = Image.open(io.BytesIO(image)).size
        return height, width
    shape = np.shape(image)
    return int(shape[0]), int(shape[1])


def _decode(image: Any, channels: int) -> np.ndarray:
    """uint8 [h, w, C] from a decoded array or encoded bytes (`entry.decode_with_pil`)."""
    if isinstance(image, bytes | bytearray | memoryview):
        pil = Image.open(io.BytesIO(image))
        image = pil.convert("RGB" if channels == 3 else "L")
    return np.asarray(image, np.uint8)


def parse_example(entry: DatasetEntry, example: dict[str, Any]) -> dict[str, Any]:
    """One tfds example -> {"image": uint8 [h, w, C], and "segmentation": uint8 [h, w] class ids
    (label_map applied), or "boxes": float32 [n, 4] tfds boxes, "labels": int32 [n] (crowd boxes
    dropped), "image_id": int}. Encoded images (`entry.decode_with_pil`) are decoded here."""
    image = _decode(example[entry.image_key], entry.channels)
    if image.ndim == 2:
        image = image[..., None]
    if entry.kind == "segmentation":
        seg = np.asarray(example[entry.segmentation_key], np.uint8)
        if seg.ndim == 3:
            seg = seg[..., 0]
        table = _label_table(entry)
        return {"image": image, "segmentation": seg if table is None else table[seg]}
    objects = example[entry.objects_key]
    boxes = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    labels = np.asarray(objects["label"], np.int64).reshape(-1).astype(np.int32)
    if entry.crowd_key:
        # Dropping boxes would shift the objects' indices that an instance map refers to.
        assert not entry.instances_key, entry.name
        single = ~np.asarray(objects[entry.crowd_key], bool).reshape(-1)
        boxes, labels = boxes[single], labels[single]
    out = {
        "image": image,
        "boxes": boxes,
        "labels": labels,
        "image_id": int(np.asarray(example[entry.id_key])),
    }
    if entry.instances_key:
        out["instances"] = np.asarray(example[entry.instances_key], np.uint8)
    return out


@functools.lru_cache(maxsize=8)
def load_dense_arrays(name: str, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """A whole fixed-size split in memory, read-only: "image" uint8 [M, H, W, C], and
    "segmentation" uint8 [M, H, W], or "boxes" float32 [M, K, 4] (tfds boxes, zero-padded to the
    split's most boxes K), "labels" int32 [M, K], "num_boxes" int32 [M], "image_id" int32 [M].

    Cached per process: evaluation rebuilds its pipeline every time, and must not re-read.
    """
    entry = get_entry(name)
    source = sources.open_source(entry, split, data_dir)
    chunks = [np.arange(i, min(i + 1024, len(source))) for i in range(0, len(source), 1024)]

    def read(indices):
        return [parse_example(entry, ex) for ex in sources.read_examples(source, indices)]

    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        examples = [ex for part in pool.map(read, chunks) for ex in part]
    arrays = {"image": np.stack([ex["image"] for ex in examples])}
    if entry.kind == "segmentation":
        arrays["segmentation"] = np.stack([ex["segmentation"] for ex in examples])
    else:
        counts = np.asarray([len(ex["labels"]) for ex in examples], np.int32)
        most = int(counts.max(initial=0))
        arrays["boxes"] = np.zeros((len(examples), most, 4), np.float32)
        arrays["labels"] = np.zeros((len(examples), most), np.int32)
        for i, ex in enumerate(examples):
            arrays["boxes"][i, : counts[i]] = ex["boxes"]
            arrays["labels"][i, : counts[i]] = ex["labels"]
        arrays["num_boxes"] = counts
        arrays["image_id"] = np.asarray([ex["image_id"] for ex in examples], np.int32)
        if entry.instances_key:
            arrays["instances"] = np.stack([ex["instances"] for ex in examples])
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


class DenseExamples:
    """Random access to one split of a segmentation or detection dataset."""

    def __init__(self, entry: DatasetEntry, split: str, data_dir: str, cache: bool | None):
        self._entry = entry
        self.in_memory = bool(entry.embedded if cache is None else cache)
        if self.in_memory:
            if entry.image_shape is None:
                raise DataConfigError(
                    f"cannot cache {entry.name} in memory: its images vary in size; set "
                    "--config.data.cache=false"
                )
            self._arrays = load_dense_arrays(entry.name, split, data_dir)
            self._source = None
            self._len = len(self._arrays["image"])
        else:
            self._source = sources.open_source(entry, split, data_dir)
            self._len = len(self._source)

    def __len__(self) -> int:
        return self._len

    def image_sizes(self, indices: np.ndarray) -> list[tuple[int, int]]:
        """(h, w) of the stored images at `indices`, decoding no pixel where they are encoded."""
        if self.in_memory:
            return [tuple(self._arrays["image"].shape[1:3])] * len(indices)
        examples = sources.read_examples(self._source, indices)
        return [image_hw(ex[self._entry.image_key]) for ex in examples]

    def read(self, indices: np.ndarray) -> list[dict[str, Any]]:
        """The examples at `indices`, as `parse_example` returns them."""
        if not self.in_memory:
            examples = sources.read_examples(self._source, indices)
            return [parse_example(self._entry, ex) for ex in examples]
        a = self._arrays
        if self._entry.kind == "segmentation":
            return [{"image": a["image"][i], "segmentation": a["segmentation"][i]} for i in indices]
        examples = [
            {
                "image": a["image"][i],
                "boxes": a["boxes"][i, : a["num_boxes"][i]],
                "labels": a["labels"][i, : a["num_boxes"][i]],
                "image_id": int(a["image_id"][i]),
            }
            for i in indices
        ]
        if "instances" in a:
            for ex, i in zip(examples, indices, strict=True):
                ex["instances"] = a["instances"][i]
        return examples


# -- batches -------------------------------------------------------------------------------------
class DenseBatchMaker:
    """Process `process_index`'s part of global batch k of a segmentation or detection dataset,
    as a function of k alone (see pipeline.py for the stream, stream.py for the positions)."""

    def __init__(
        self,
        entry: DatasetEntry,
        examples: DenseExamples,
        *,
        size: int,
        augment: bool,
        train: bool,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
    ):
        assert entry.kind in DENSE_KINDS, entry
        assert not augment or entry.augmentation == "scale_crop", entry
        self._entry = entry
        self._examples = examples
        self._size = size
        self._augment = train and augment
        self._local = global_batch_size // process_count
        self._positions = stream.BatchPositions(
            len(examples),
            train=train,
            global_batch_size=global_batch_size,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
        )
        self._augment_key = T.fold_key(seed, _AUGMENT)

    def _blank(self) -> dict[str, np.ndarray]:
        """The batch of padded examples, which real ones then overwrite."""
        b, s, e = self._local, self._size, self._entry
        batch = {"image": np.zeros((b, s, s, e.channels), np.float32)}
        if e.kind == "segmentation":
            batch["segmentation"] = np.full((b, s, s), e.ignore_label, np.int32)
        else:
            n = e.max_boxes
            batch["pixel_mask"] = np.ones((b, s, s), bool)
            batch["boxes"] = np.zeros((b, n, 4), np.float32)
            batch["labels"] = np.zeros((b, n), np.int32)
            batch["box_mask"] = np.zeros((b, n), bool)
            batch["size"] = np.full((b, 2), s, np.int32)
            batch["orig_size"] = np.full((b, 2), s, np.int32)
            batch["image_id"] = np.zeros((b,), np.int32)
            if e.instances_key:
                batch["instances"] = np.zeros((b, s, s), np.int32)
        return batch

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        positions, valid, indices = self._positions(step)
        batch = self._blank()
        batch["mask"] = valid
        if not valid.any():  # this process's part of the last eval batch is all padding
            return batch
        e, s = self._entry, self._size
        slots = np.flatnonzero(valid)
        u = (
            T.random_uniform(self._augment_key, positions[valid], _DRAWS)
            if self._augment
            else [None] * len(slots)
        )
        images = np.zeros((len(slots), s, s, e.channels), np.uint8)
        padding = np.zeros((len(slots), s, s), bool)
        for j, (slot, ex) in enumerate(zip(slots, self._examples.read(indices), strict=True)):
            h0, w0 = ex["image"].shape[:2]
            p = make_placement(
                (h0, w0),
                s,
                cover=e.kind == "segmentation",
                anchored=e.kind == "detection" and not e.empty_canvas,
                u=u[j],
                scale_range=e.scale_range,
                flip_ok=e.flip_ok,
            )
            images[j] = place_array(ex["image"], p, s)
            y0, y1, x0, x1 = p.region(s)
            if not e.empty_canvas:
                padding[j] = True
                padding[j, y0:y1, x0:x1] = False
            if e.kind == "segmentation":
                fill = 0 if e.empty_canvas else e.ignore_label
                batch["segmentation"][slot] = place_array(
                    ex["segmentation"], p, s, nearest=True, fill=fill
                )
                continue
            # Anchored placements start at or above/left of the canvas corner: y0 = x0 = 0.
            content = (s, s) if e.empty_canvas else (y1, x1)
            boxes, keep = place_boxes(ex["boxes"], p, content)
            boxes, labels = boxes[keep][: e.max_boxes], ex["labels"][keep][: e.max_boxes]
            if e.instances_key:
                # Stored value 1 + k -> 1 + the slot of object k; dropped objects -> 0.
                slot_of = np.zeros(256, np.int32)
                kept = np.flatnonzero(keep)[: e.max_boxes]
                slot_of[kept + 1] = np.arange(1, len(kept) + 1)
                placed = place_array(ex["instances"], p, s, nearest=True, fill=0)
                batch["instances"][slot] = slot_of[placed]
            batch["boxes"][slot, : len(boxes)] = boxes
            batch["labels"][slot, : len(labels)] = labels
            batch["box_mask"][slot, : len(labels)] = True
            batch["pixel_mask"][slot] = ~padding[j]
            batch["size"][slot] = content
            batch["orig_size"][slot] = (h0, w0)
            batch["image_id"][slot] = ex["image_id"]
        normalized = T.normalize(images, e.max_value, e.mean, e.std)
        normalized[padding] = 0.0
        batch["image"][slots] = normalized
        return batch
