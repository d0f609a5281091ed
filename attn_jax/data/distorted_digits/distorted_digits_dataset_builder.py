"""tfds builder of distorted digits: scikit-learn's 8x8 digits rotated, scaled and translated on a
24x24 canvas (embedded: generated from a seed, nothing to download).

The "RTS" distortion of MNIST in Jaderberg, Simonyan, Zisserman, Kavukcuoglu 2015, "Spatial
Transformer Networks", sec. 4.1 (rotation +-45 degrees, scale 0.7..1.2, random placement of the
28x28 digit on a 42x42 canvas), at the scale of the embedded digits: the 8x8 digit is magnified 2x
to 16x16 so that the canvas is 1.5 times the digit's side as in the paper (42 / 28), and 24x24
keeps the classifiers cheap enough to train in minutes on a CPU. Scale and rotation are the
paper's; the translation moves the digit centre by up to MAX_SHIFT pixels along each axis.

Split: the one of `sklearn_digits` (digit i is a test digit iff i % 5 == 4). Copy c of digit i
draws (angle, scale, shift) from `numpy.random.default_rng((SEED, i, c))`, so the data are the
same on every build and independent of generation order. The whole distortion is one bilinear
resampling of the 8x8 digit (`scipy.ndimage.affine_transform`, order 1, zeros outside).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of

SEED = 20150605
DIGIT_SIDE = 8
MAGNIFICATION = 2.0  # 8x8 -> 16x16
CANVAS_SIDE = 24
IMAGE_SHAPE = (CANVAS_SIDE, CANVAS_SIDE, 1)
NUM_CLASSES = 10
MAX_VALUE = 255
DIGIT_MAX = 16  # scikit-learn's pixel range 0..16
MAX_ANGLE = 45.0  # degrees
SCALE_RANGE = (0.7, 1.2)
MAX_SHIFT = 4.0  # pixels, per axis
TRAIN_COPIES = 4
TEST_COPIES = 2
NUM_DIGITS = {"train": 1438, "test": 359}
TRAIN_SIZE = NUM_DIGITS["train"] * TRAIN_COPIES
TEST_SIZE = NUM_DIGITS["test"] * TEST_COPIES


def copies_of(split: str) -> int:
    """How many distorted copies of each digit `split` holds."""
    return TRAIN_COPIES if split == "train" else TEST_COPIES


def distortion_of(index: int, copy: int) -> tuple[float, float, tuple[float, float]]:
    """(angle in degrees, scale, (row, column) shift in pixels) of copy `copy` of digit `index`."""
    rng = np.random.default_rng((SEED, index, copy))
    angle = rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    scale = rng.uniform(*SCALE_RANGE)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2)
    return float(angle), float(scale), (float(shift[0]), float(shift[1]))


def distort(
    digit: np.ndarray, angle: float, scale: float, shift: tuple[float, float]
) -> np.ndarray:
    """The uint8 [24, 24, 1] canvas of `digit` ([8, 8] or [8, 8, 1], values 0..16) magnified by
    2 * `scale`, turned `angle` degrees counter-clockwise and centred at canvas centre + `shift`.
    """
    from scipy import ndimage  # deferred: only preparing needs scipy

    src = np.asarray(digit, np.float64).reshape(DIGIT_SIDE, DIGIT_SIDE)
    zoom = MAGNIFICATION * scale
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    # affine_transform maps each OUTPUT (row, col) to the INPUT location it reads, i.e. the
    # inverse of "scale, turn counter-clockwise, move": rows grow downwards, so on screen a
    # counter-clockwise turn by a sends the offset (row, col) to (c row - s col, s row + c col),
    # whose inverse, divided by the zoom, is the matrix below.
    inverse = np.array([[c, s], [-s, c]]) / zoom
    centre_out = (CANVAS_SIDE - 1) / 2 + np.asarray(shift)
    centre_in = np.full(2, (DIGIT_SIDE - 1) / 2)
    out = ndimage.affine_transform(
        src,
        inverse,
        offset=centre_in - inverse @ centre_out,
        output_shape=(CANVAS_SIDE, CANVAS_SIDE),
        order=1,
        mode="grid-constant",  # zeros outside that still blend into the digit's border pixels
        cval=0.0,
    )
    scaled = np.clip(out, 0.0, DIGIT_MAX) * (MAX_VALUE / DIGIT_MAX)
    return np.round(scaled).astype(np.uint8)[..., None]


class Builder(tfds.core.GeneratorBasedBuilder):
    """Rotated, scaled, translated 8x8 digits on a 24x24 canvas, 5,752 train / 718 test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: RTS distortion on 24x24, 4 train / 2 test copies per digit."
    }

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # As in sklearn_digits: tfds would find this file through a package that is often
        # missing; the answer it would compute is this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "id": tfds.features.Scalar(
                        dtype=np.int32, doc="index of the digit in scikit-learn's order"
                    ),
                    "copy": tfds.features.Scalar(dtype=np.int32, doc="which copy of the digit"),
                    "angle": tfds.features.Scalar(
                        dtype=np.float32, doc="counter-clockwise rotation, degrees"
                    ),
                    "scale": tfds.features.Scalar(dtype=np.float32, doc="scale on top of 2x"),
                    "shift": tfds.features.Tensor(
                        shape=(2,), dtype=np.float32, doc="(row, column) offset of the centre"
                    ),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the documented order (digit, then copy): tfds otherwise permutes by key hash.
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            license="CC BY 4.0 (UCI Machine Learning Repository)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # generated from scikit-learn's digits
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        from sklearn.datasets import load_digits  # deferred: only preparing needs scikit-learn

        digits = load_digits()
        copies = copies_of(split)
        for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            if split_of(i) != split:
                continue
            for c in range(copies):
                angle, scale, shift = distortion_of(i, c)
                yield (
                    i * copies + c,
                    {
                        "image": distort(image, angle, scale, shift),
                        "label": int(label),
                        "id": i,
                        "copy": c,
                        "angle": np.float32(angle),
                        "scale": np.float32(scale),
                        "shift": np.asarray(shift, np.float32),
                    },
                )
