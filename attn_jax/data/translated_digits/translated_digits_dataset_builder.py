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

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from attn_jax.data import digit_copies
from attn_jax.data.digit_copies import (  # noqa: F401 - this dataset's sizes, for the registry
    NUM_CLASSES,
    TEST_COPIES,
    TEST_SIZE,
    TRAIN_COPIES,
    TRAIN_SIZE,
    copies_of,
)

SEED = 20141124
DIGIT_SCALE = 2  # 8x8 -> 16x16 by pixel repetition
DIGIT_SIDE = 8 * DIGIT_SCALE
CANVAS_SIDE = 32
IMAGE_SHAPE = (CANVAS_SIDE, CANVAS_SIDE, 1)
MAX_VALUE = 16


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


class Builder(digit_copies.DigitCopiesBuilder):
    """Translated 8x8 digits on a 32x32 canvas, 5,752 train / 718 test examples."""

    IMAGE_SHAPE = IMAGE_SHAPE
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 16x16 digits on 32x32, 4 train / 2 test copies."}

    def copy_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {
            "offset": tfds.features.Tensor(
                shape=(2,), dtype=np.int32, doc="(row, column) of the digit's top left"
            )
        }

    def render(self, digit: np.ndarray, index: int, copy: int) -> dict[str, Any]:
        # scikit-learn's digits are integers 0..16 stored as floats: uint8 holds them exactly.
        assert np.array_equal(digit.astype(np.uint8), digit) and digit.max() <= MAX_VALUE
        offset = offset_of(index, copy)
        return {"image": place(digit, offset), "offset": np.asarray(offset, np.int32)}
