"""tfds builder of translated digits: scikit-learn's 8x8 digits, upscaled to 16x16, at random
positions on an empty 32x32 canvas (embedded: generated from a seed, nothing to download).

The task of Mnih et al. (2014), "Recurrent Models of Visual Attention", sec. 4.1 ("Translated
MNIST": 28x28 digits at random positions on a 60x60 canvas), at the scale of the embedded digits.
The 2x upscaling (pixel repetition, so the 0..16 values stay exact integers) keeps the digit about
half the canvas side, as in the paper (28/60), and makes an 8x8 glimpse see part of a digit rather
than all of it, so that where the model looks matters.

Split: the one of `sklearn_digits` (digit i is a test digit iff i % 5 == 4), so test digits are
never seen in training at any position. Each training digit appears TRAIN_COPIES times and each
test digit TEST_COPIES times, copy c of digit i at an offset drawn uniformly from the positions
that keep the whole digit on the canvas by `numpy.random.default_rng((SEED, i, c))`: every build
gives the same data, independent of the order in which examples are generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of

SEED = 20141124
DIGIT_SCALE = 2  # 8x8 -> 16x16 by pixel repetition
DIGIT_SIDE = 8 * DIGIT_SCALE
CANVAS_SIDE = 32
IMAGE_SHAPE = (CANVAS_SIDE, CANVAS_SIDE, 1)
NUM_CLASSES = 10
MAX_VALUE = 16
TRAIN_COPIES = 4
TEST_COPIES = 2
NUM_DIGITS = {"train": 1438, "test": 359}
TRAIN_SIZE = NUM_DIGITS["train"] * TRAIN_COPIES
TEST_SIZE = NUM_DIGITS["test"] * TEST_COPIES


def copies_of(split: str) -> int:
    """How many translated copies of each digit `split` holds."""
    return TRAIN_COPIES if split == "train" else TEST_COPIES


def offset_of(index: int, copy: int) -> tuple[int, int]:
    """(row, column) of the top-left pixel of copy `copy` of digit `index` on the canvas."""
    rng = np.random.default_rng((SEED, index, copy))
    row, col = rng.integers(0, CANVAS_SIDE - DIGIT_SIDE + 1, size=2)
    return int(row), int(col)


def place(digit: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """The uint8 [32, 32, 1] canvas holding `digit` ([8, 8] or [8, 8, 1]) upscaled at `offset`."""
    big = np.kron(np.asarray(digit, np.uint8).reshape(8, 8), np.ones((DIGIT_SCALE,) * 2, np.uint8))
    canvas = np.zeros(IMAGE_SHAPE, np.uint8)
    row, col = offset
    canvas[row : row + DIGIT_SIDE, col : col + DIGIT_SIDE, 0] = big
    return canvas


class Builder(tfds.core.GeneratorBasedBuilder):
    """Translated 8x8 digits on a 32x32 canvas, 5,752 train / 718 test examples."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 16x16 digits on 32x32, 4 train / 2 test copies."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # As in sklearn_digits: tfds would look this file up through a package that is often
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
                    "offset": tfds.features.Tensor(
                        shape=(2,), dtype=np.int32, doc="(row, column) of the digit's top left"
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
        images = digits.images.astype(np.uint8)
        assert np.array_equal(images, digits.images) and images.max() <= MAX_VALUE
        copies = copies_of(split)
        for i, (image, label) in enumerate(zip(images, digits.target, strict=True)):
            if split_of(i) != split:
                continue
            for c in range(copies):
                offset = offset_of(i, c)
                yield (
                    i * copies + c,
                    {
                        "image": place(image, offset),
                        "label": int(label),
                        "id": i,
                        "copy": c,
                        "offset": np.asarray(offset, np.int32),
                    },
                )
