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

SEED = 20150605
DIGIT_SIDE = 8
MAGNIFICATION = 2.0  # 8x8 -> 16x16
CANVAS_SIDE = 24
IMAGE_SHAPE = (CANVAS_SIDE, CANVAS_SIDE, 1)
MAX_VALUE = 255
DIGIT_MAX = 16  # scikit-learn's pixel range 0..16
MAX_ANGLE = 45.0  # degrees
SCALE_RANGE = (0.7, 1.2)
MAX_SHIFT = 4.0  # pixels, per axis


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


class Builder(digit_copies.DigitCopiesBuilder):
    """Rotated, scaled, translated 8x8 digits on a 24x24 canvas, 5,752 train / 718 test."""

    IMAGE_SHAPE = IMAGE_SHAPE
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: RTS distortion on 24x24, 4 train / 2 test copies per digit."
    }

    def copy_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {
            "angle": tfds.features.Scalar(
                dtype=np.float32, doc="counter-clockwise rotation, degrees"
            ),
            "scale": tfds.features.Scalar(dtype=np.float32, doc="scale on top of 2x"),
            "shift": tfds.features.Tensor(
                shape=(2,), dtype=np.float32, doc="(row, column) offset of the centre"
            ),
        }

    def render(self, digit: np.ndarray, index: int, copy: int) -> dict[str, Any]:
        angle, scale, shift = distortion_of(index, copy)
        return {
            "image": distort(digit, angle, scale, shift),
            "angle": np.float32(angle),
            "scale": np.float32(scale),
            "shift": np.asarray(shift, np.float32),
        }
