"""tfds builder of digit scenes: 1 to 6 of scikit-learn's 8x8 digits, each resampled to its own
size, scattered without overlap on an empty 64x64 canvas, with boxes, classes, instance masks and
a per-pixel class map (embedded: generated from a seed, nothing to download).

A small stand-in for COCO-style detection (Carion et al. 2020, DETR) and for semantic
segmentation (Zheng et al. 2021, SETR) that builds in seconds and trains on a CPU: several objects
per image, varied scales, an empty background, and labels for every dense task from one source.

How a scene is drawn (scene k of split s is a pure function of
`numpy.random.default_rng((SEED, SPLIT_IDS[s], k))`, independent of generation order):

1. the number of digits n, uniform in 1..MAX_DIGITS;
2. for each digit in turn: a source digit drawn uniformly from the split's own digits (the
   sklearn_digits split, so no test digit is ever seen in training), a side uniform in
   SIDE_RANGE and a top-left corner uniform over the canvas, drawn as PLACEMENT_TRIES candidate
   (side, corner) pairs of which the first whose square keeps MARGIN pixels away from every
   square already placed is taken; a digit that finds no room is left out (so scenes with many
   large digits hold fewer than n, never fewer than one);
3. the 8x8 digit (values 0..16) resampled bilinearly to side x side and written into its square
   as round(v * 255 / 16).

Ink: a pixel of a digit is ink iff its resampled value exceeds INK_FRACTION (25%) of that digit's
largest resampled value; the faint bilinear fringe below it is image but not object. `segmentation`
is 1 + label on ink pixels and 0 elsewhere, `instances` is 1 + the object's index on its ink
pixels, and each object's box is the tight box around its ink pixels. Squares never overlap, so
neither do boxes nor masks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of

SEED = 20200526
SPLIT_IDS = {"train": 0, "test": 1}
TRAIN_SIZE = 4000
TEST_SIZE = 500
SIZES = {"train": TRAIN_SIZE, "test": TEST_SIZE}
CANVAS_SIDE = 64
IMAGE_SHAPE = (CANVAS_SIDE, CANVAS_SIDE, 1)
MAX_VALUE = 255
DIGIT_MAX = 16  # scikit-learn's pixel range 0..16
NUM_CLASSES = 10  # digits; the segmentation map adds background as class 0
MAX_DIGITS = 6
SIDE_RANGE = (12, 28)  # inclusive, pixels
MARGIN = 1  # free pixels kept between two digits' squares
PLACEMENT_TRIES = 100
INK_FRACTION = 0.25


def _resample(digit: np.ndarray, side: int) -> np.ndarray:
    """The [side, side] float32 bilinear resampling of an [8, 8] digit (values 0..16)."""
    pil = Image.fromarray(np.asarray(digit, np.float32).reshape(8, 8))
    return np.asarray(pil.resize((side, side), Image.BILINEAR), np.float32)


def layout_of(split: str, index: int, pool: np.ndarray) -> list[tuple[int, int, int, int]]:
    """[(source digit index, side, top, left)] of scene `index` of `split`.

    Args:
        split: "train" or "test".
        index: the scene's index in its split.
        pool: scikit-learn indices of the split's digits, in scikit-learn's order.
    """
    rng = np.random.default_rng((SEED, SPLIT_IDS[split], index))
    wanted = int(rng.integers(1, MAX_DIGITS + 1))
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(wanted):
        digit = int(pool[rng.integers(len(pool))])
        # All PLACEMENT_TRIES candidates at once; the first that fits wins.
        side = rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=PLACEMENT_TRIES)
        top = rng.integers(0, CANVAS_SIDE - side + 1)
        left = rng.integers(0, CANVAS_SIDE - side + 1)
        fits = np.ones(PLACEMENT_TRIES, bool)
        for _, s, t, c in placed:
            fits &= (
                (top >= t + s + MARGIN)
                | (t >= top + side + MARGIN)
                | (left >= c + s + MARGIN)
                | (c >= left + side + MARGIN)
            )
        if fits.any():
            k = int(np.argmax(fits))
            placed.append((digit, int(side[k]), int(top[k]), int(left[k])))
    return placed


def render(
    layout: list[tuple[int, int, int, int]], digits: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The example (every feature but `id`) of a scene laid out as `layout` (see `layout_of`).

    Args:
        layout: [(source digit index, side, top, left)].
        digits: scikit-learn's images, [1797, 8, 8] values 0..16.
        labels: scikit-learn's labels, [1797].
    """
    image = np.zeros(IMAGE_SHAPE, np.uint8)
    segmentation = np.zeros(IMAGE_SHAPE[:2], np.uint8)
    instances = np.zeros(IMAGE_SHAPE[:2], np.uint8)
    bbox, label, area, digit_id = [], [], [], []
    for k, (digit, side, top, left) in enumerate(layout):
        values = _resample(digits[digit], side)
        ink = values > INK_FRACTION * values.max()
        window = (slice(top, top + side), slice(left, left + side))
        image[window + (0,)] = np.rint(np.clip(values, 0, DIGIT_MAX) * (MAX_VALUE / DIGIT_MAX))
        segmentation[window][ink] = 1 + labels[digit]
        instances[window][ink] = 1 + k
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        # tfds' BBox: normalized (ymin, xmin, ymax, xmax) of the ink's pixel edges.
        box = np.asarray(
            [top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1], np.float32
        )
        bbox.append(tfds.features.BBox(*(box / CANVAS_SIDE)))
        label.append(int(labels[digit]))
        area.append(int(ink.sum()))
        digit_id.append(digit)
    return {
        "image": image,
        "segmentation": segmentation,
        "instances": instances,
        "objects": {"bbox": bbox, "label": label, "area": area, "digit_id": digit_id},
    }


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (float [1797, 8, 8] values 0..16, int labels [1797])."""
    from sklearn.datasets import load_digits as sklearn_load  # only preparing needs scikit-learn

    d = sklearn_load()
    return d.images, d.target


def pool_of(split: str, num_digits: int = 1797) -> np.ndarray:
    """scikit-learn indices of `split`'s digits (the sklearn_digits split)."""
    return np.asarray([i for i in range(num_digits) if split_of(i) == split], np.int64)


class Builder(tfds.core.GeneratorBasedBuilder):
    """Scenes of 1-6 scikit-learn digits on 64x64, 4,000 train / 500 test, with boxes and masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 1-6 digits of side 12-28 on 64x64."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # As in sklearn_digits: tfds would look this file up through a package that is often
        # missing; the answer it would compute is this module's file.
        return epath.Path(sys.modules[cls.__module__].__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    # One bytes field each rather than 4,096 int64s (array_record compresses
                    # the empty canvas): writing and reading are several times faster.
                    "image": tfds.features.Tensor(
                        shape=IMAGE_SHAPE, dtype=np.uint8, encoding="bytes"
                    ),
                    "segmentation": tfds.features.Tensor(
                        shape=IMAGE_SHAPE[:2],
                        dtype=np.uint8,
                        encoding="bytes",
                        doc="0 background, 1 + digit",
                    ),
                    "instances": tfds.features.Tensor(
                        shape=IMAGE_SHAPE[:2],
                        dtype=np.uint8,
                        encoding="bytes",
                        doc="0 background, 1 + object",
                    ),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                            "area": tfds.features.Scalar(dtype=np.int32, doc="ink pixels"),
                            "digit_id": tfds.features.Scalar(
                                dtype=np.int32, doc="index of the digit in scikit-learn's order"
                            ),
                        }
                    ),
                    "id": tfds.features.Scalar(dtype=np.int32, doc="index of the scene"),
                }
            ),
            # Keep the scenes in index order: tfds otherwise permutes examples by key hash.
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            license="CC BY 4.0 (UCI Machine Learning Repository)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # generated from scikit-learn's digits
        return {split: self._generate_examples(split) for split in SIZES}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        digits, labels = load_digits()
        pool = pool_of(split, len(digits))
        for index in range(SIZES[split]):
            example = render(layout_of(split, index, pool), digits, labels)
            yield index, {**example, "id": index}
