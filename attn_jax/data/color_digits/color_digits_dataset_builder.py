"""tfds builder of coloured digits on coloured backgrounds (embedded: generated from scikit-learn's
digits, nothing to download), for colorization (Zhang, Isola, Efros 2016, "Colorful Image
Colorization"): a model sees the lightness L* and predicts the colour, the a*b* channels.

Configs (the images and splits of their grayscale sources):

- "digits": the 8x8 digits of `sklearn_digits` (example i is a test example iff i % 5 == 4);
  `label` is the digit. Each training digit comes in TRAIN_COPIES = 10 colourings (consecutive
  examples), each test digit in one: 14,380 train / 359 test.
- "scenes": the 64x64 scenes of 1 to 6 digits of `digit_scenes`; `label` is the number of
  digits minus one (0..5), as in `digit_captions/scenes`.
- "digits_random": the "digits" config (ten colourings too) with ink hues drawn independently of
  the digit.

How an example is coloured, in CIE L*a*b* (attn_jax/data/colorspace.py), from its grayscale
source g (0..16 for digits, the stored 0..255 of a scene) and
`numpy.random.default_rng((SEED, config id, split id, index, copy))`:

1. ink fraction a = g / max, in [0, 1];
2. lightness L* = L_BACKGROUND + (L_INK - L_BACKGROUND) a: an affine map of the grayscale source,
   so the digits are as legible in L* as in g, and L* standardized by its dataset statistics is
   the standardized source image exactly;
3. one background colour per image: hue uniform in [0, 360) degrees, chroma BACKGROUND_CHROMA;
4. one ink colour per digit: chroma INK_CHROMA, hue CLASS_HUES[digit] plus a uniform jitter of
   +-HUE_JITTER degrees ("digits", "scenes"), or uniform in [0, 360) ("digits_random");
5. a*b* = (1 - a) ab_background + a ab_ink on each digit's square (scenes: squares never overlap),
   ab_background elsewhere;
6. chromas are scaled down (by 0.9 at a time, the hues kept) until the background, the ink and
   the blends between them at 33 ink fractions lie inside the sRGB gamut, then the image is
   converted to sRGB and rounded to uint8.

The ink's hue follows its digit class (step 4) as the colour of natural objects follows what they
are (grass is green): that is what lets colorization teach a network to recognize digits, and it
also means the colour targets carry the labels. "digits_random" removes that link: there the ink's
colour is as unpredictable from the grayscale image as the background's.

Stored: `image` uint8 [H, W, 3] (sRGB), `label`, `id` (the source index: scikit-learn's for
digits, the scene's for scenes; the copies of a digit share it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data import colorspace
from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as scenes_builder
from attn_jax.data.sklearn_digits import sklearn_digits_dataset_builder as digits_builder

SEED = 20160328  # "Colorful Image Colorization", arXiv 1603.08511
CONFIG_IDS = {"digits": 0, "scenes": 1, "digits_random": 2}
SOURCES = {"digits": "digits", "scenes": "scenes", "digits_random": "digits"}
SPLIT_IDS = {"train": 0, "test": 1}
# Colourings of each training digit: with one, a colorizer memorizes the random background of
# each of the 1,438 training images (train loss 0.001 after 3,000 steps of 128, the held-out error
# no better than after 300); with ten it meets every digit shape on ten backgrounds.
TRAIN_COPIES = {"digits": 10, "scenes": 1, "digits_random": 10}
SIZES = {
    "digits": {"train": 1438 * TRAIN_COPIES["digits"], "test": 359},
    "scenes": dict(scenes_builder.SIZES),
    "digits_random": {"train": 1438 * TRAIN_COPIES["digits_random"], "test": 359},
}
IMAGE_SHAPES = {
    "digits": digits_builder.IMAGE_SHAPE[:2] + (3,),
    "scenes": scenes_builder.IMAGE_SHAPE[:2] + (3,),
    "digits_random": digits_builder.IMAGE_SHAPE[:2] + (3,),
}
NUM_CLASSES = {"digits": 10, "scenes": scenes_builder.MAX_DIGITS, "digits_random": 10}
SOURCE_MAX = {"digits": float(digits_builder.MAX_VALUE), "scenes": float(scenes_builder.MAX_VALUE)}
L_BACKGROUND = 25.0
L_INK = 85.0
INK_CHROMA = 45.0
BACKGROUND_CHROMA = 25.0
CLASS_HUES = tuple(18.0 + 36.0 * k for k in range(10))  # degrees, ten equal sectors
HUE_JITTER = 12.0  # degrees either side of the class hue
GAMUT_LEVELS = 33  # ink fractions checked between background and ink
SHRINK = 0.9


def example_rng(config: str, split: str, index: int, copy: int = 0) -> np.random.Generator:
    """The generator of one example's colours (module docstring); `copy` numbers the colourings
    of one training digit."""
    return np.random.default_rng((SEED, CONFIG_IDS[config], SPLIT_IDS[split], index, copy))


def lightness(fraction: np.ndarray) -> np.ndarray:
    """L* of ink fraction(s) a in [0, 1] (step 2)."""
    return L_BACKGROUND + (L_INK - L_BACKGROUND) * np.asarray(fraction, np.float64)


def _ab(hue_degrees: float, chroma: float) -> np.ndarray:
    h = np.deg2rad(hue_degrees)
    return chroma * np.asarray([np.cos(h), np.sin(h)])


_SCALES = SHRINK ** np.arange(60.0)  # the scales tried, largest first
_LEVELS = np.linspace(0.0, 1.0, GAMUT_LEVELS)
_CHUNK = 512  # digits coloured at once


def _first_fit(colours, batch_shape: tuple[int, ...]) -> np.ndarray:
    """Per index of `batch_shape`, the largest scale of `_SCALES` at which the colours
    colours(scales) [*batch_shape, s, m, 3] are all in the gamut (the smallest one tried when none
    is). Scales are tried 8 at a time, largest first, until every index has one: most colours fit
    at the first."""
    found = np.full(batch_shape, np.nan)
    for start in range(0, len(_SCALES), 8):
        scales = _SCALES[start : start + 8]
        fits = colorspace.in_srgb_gamut(colours(scales)).all(-1)  # [*batch_shape, s]
        first = np.where(fits.any(-1), scales[np.argmax(fits, axis=-1)], np.nan)
        found = np.where(np.isnan(found), first, found)
        if not np.isnan(found).any():
            break
    return np.where(np.isnan(found), _SCALES[-1], found)


def _endpoint_scale(lightness_value: float, ab: np.ndarray) -> np.ndarray:
    """ab [..., 2] -> [...]: the scale that puts (L*, scale * ab) in the gamut."""

    def colours(scales):
        scaled = scales[:, None, None] * ab[..., None, None, :]  # [..., s, 1, 2]
        light = np.full(scaled.shape[:-1] + (1,), lightness_value)
        return np.concatenate([light, scaled], -1)

    return _first_fit(colours, ab.shape[:-1])


def _blend_scale(ab_background: np.ndarray, ab_ink: np.ndarray, both: bool) -> np.ndarray:
    """[..., 2] each (broadcast together) -> [...]: the scale of the ink (and of the background
    too if `both`) that puts every blend between them in the gamut."""
    batch = np.broadcast_shapes(ab_background.shape, ab_ink.shape)[:-1]
    a = _LEVELS[:, None]  # [A, 1]

    def colours(scales):
        s = scales[:, None, None]  # [s, 1, 1]
        bg = ab_background[..., None, None, :]
        ab = (1 - a) * (s * bg if both else bg) + a * (s * ab_ink[..., None, None, :])
        ab = np.broadcast_to(ab, batch + ab.shape[-3:])  # [..., s, A, 2]
        light = np.broadcast_to(lightness(_LEVELS)[:, None], ab.shape[:-1] + (1,))
        return np.concatenate([light, ab], axis=-1)

    return _first_fit(colours, batch)


def fit_in_gamut(ab_background: np.ndarray, ab_inks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The colours' a*b* scaled down until the background, every ink and every blend between the
    background and an ink are in the sRGB gamut (step 6). The background keeps one colour over
    the whole image: it takes the smallest scale any of its digits needs.

    Args:
        ab_background: [..., 2], one per image.
        ab_inks: [..., n, 2], one per digit of each image.

    Returns:
        (ab_background, ab_inks), scaled.
    """
    background = ab_background * _endpoint_scale(L_BACKGROUND, ab_background)[..., None]
    inks = ab_inks * _endpoint_scale(L_INK, ab_inks)[..., None]
    # Where a blend leaves the gamut both shrink together; the background keeps the smallest.
    both = _blend_scale(background[..., None, :], inks, both=True)  # [..., n]
    background = background * both.min(-1, initial=1.0)[..., None]
    inks = inks * _blend_scale(background[..., None, :], inks, both=False)[..., None]
    return background, inks


def ink_hue(config: str, digit: int, rng: np.random.Generator) -> float:
    """Step 4: the hue (degrees) of a digit's ink."""
    if config == "digits_random":
        return float(rng.uniform(0.0, 360.0))
    return CLASS_HUES[digit] + float(rng.uniform(-HUE_JITTER, HUE_JITTER))


def _draw(config: str, digits: list[int], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Steps 3-4: the background's and each digit's a*b* before the gamut fit."""
    background = _ab(rng.uniform(0.0, 360.0), BACKGROUND_CHROMA)
    inks = np.asarray([_ab(ink_hue(config, d, rng), INK_CHROMA) for d in digits]).reshape(-1, 2)
    return background, inks


def _to_uint8(fraction: np.ndarray, ab: np.ndarray) -> np.ndarray:
    lab = np.concatenate([lightness(fraction)[..., None], ab], axis=-1)
    rgb = colorspace.lab_to_srgb(lab)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def colorize(
    fraction: np.ndarray,
    squares: list[tuple[int, int, int, int]],
    config: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """The uint8 sRGB image [H, W, 3] of one example.

    Args:
        fraction: [H, W] ink fractions a (step 1).
        squares: [(digit class, side, top, left)] of every digit: its ink colour applies there.
        config: the builder config ("digits", "scenes" or "digits_random").
        rng: the example's generator (`example_rng`).
    """
    background, inks = fit_in_gamut(*_draw(config, [d for d, _, _, _ in squares], rng))
    ab = np.broadcast_to(background, fraction.shape + (2,)).copy()
    for ink, (_, side, top, left) in zip(inks, squares, strict=True):
        window = (slice(top, top + side), slice(left, left + side))
        a = fraction[window][..., None]
        ab[window] = (1 - a) * background + a * ink
    return _to_uint8(fraction, ab)


def colorize_digits(
    fractions: np.ndarray, digits: np.ndarray, config: str, rngs: list[np.random.Generator]
) -> np.ndarray:
    """`colorize` of N whole-canvas digits at once: uint8 [N, H, W, 3].

    Args:
        fractions: [N, H, W] ink fractions.
        digits: [N] classes.
        config: "digits" or "digits_random".
        rngs: the examples' generators.
    """
    drawn = [_draw(config, [int(d)], rng) for d, rng in zip(digits, rngs, strict=True)]
    background, inks = fit_in_gamut(
        np.stack([b for b, _ in drawn]), np.stack([i for _, i in drawn])
    )
    a = fractions[..., None]
    ab = (1 - a) * background[:, None, None, :] + a * inks[:, 0][:, None, None, :]
    return _to_uint8(fractions, ab)


def generate(config: str, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(key, example) of `config`'s `split`, in the source's order; the training colourings of a
    digit follow each other (so a slice such as train[90%:] holds digits no other slice has)."""
    digits, labels = scenes_builder.load_digits()
    if SOURCES[config] == "digits":
        copies = TRAIN_COPIES[config] if split == "train" else 1
        ids = [i for i in range(len(digits)) if digits_builder.split_of(i) == split]
        ids = np.repeat(ids, copies)  # [N]
        copy = np.tile(np.arange(copies), len(ids) // copies)
        for start in range(0, len(ids), _CHUNK):
            chunk = slice(start, start + _CHUNK)
            rngs = [
                example_rng(config, split, int(i), int(c))
                for i, c in zip(ids[chunk], copy[chunk], strict=True)
            ]
            fractions = np.asarray(digits[ids[chunk]], np.float64) / SOURCE_MAX["digits"]
            images = colorize_digits(fractions, labels[ids[chunk]], config, rngs)
            for key, (i, image) in enumerate(zip(ids[chunk], images, strict=True), start):
                yield key, {"image": image, "label": int(labels[i]), "id": int(i)}
        return
    pool = scenes_builder.pool_of(split, len(digits))
    for index in range(SIZES["scenes"][split]):
        layout = scenes_builder.layout_of(split, index, pool)
        gray = scenes_builder.render(layout, digits, labels)["image"][..., 0]
        fraction = gray.astype(np.float64) / SOURCE_MAX["scenes"]
        squares = [(int(labels[d]), side, top, left) for d, side, top, left in layout]
        image = colorize(fraction, squares, config, example_rng(config, split, index))
        yield index, {"image": image, "label": len(layout) - 1, "id": index}


class Builder(tfds.core.GeneratorBasedBuilder):
    """Coloured digits (8x8) or coloured digit scenes (64x64) on coloured backgrounds."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: configs digits (10 colourings per training digit), scenes and "
        "digits_random."
    }
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="digits", description="sklearn_digits coloured by class"),
        tfds.core.BuilderConfig(name="scenes", description="digit_scenes coloured by class"),
        tfds.core.BuilderConfig(
            name="digits_random", description="sklearn_digits in hues independent of the class"
        ),
    ]

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # As in sklearn_digits: tfds would look this file up through a package that is often
        # missing; the answer it would compute is this module's file.
        return epath.Path(sys.modules[cls.__module__].__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config.name
        encoding = "bytes" if SOURCES[config] == "scenes" else "none"
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=IMAGE_SHAPES[config], dtype=np.uint8, encoding=encoding
                    ),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES[config]),
                    "id": tfds.features.Scalar(dtype=np.int32, doc="index in the source"),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the sources' order
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            license="CC BY 4.0 (UCI Machine Learning Repository)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # generated from scikit-learn's digits
        return {split: self._generate_examples(split) for split in SPLIT_IDS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from generate(self.builder_config.name, split)
