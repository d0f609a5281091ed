"""tfds builder of digit images with English captions (embedded: generated, nothing to download).

A small image-text dataset for contrastive image-text pretraining (Radford et al. 2021, CLIP) and
masked language modeling on its captions (Devlin et al. 2019, BERT), with held-out prompt
templates for zero-shot classification (CLIP sec. 3.1.4, "prompt engineering and ensembling").
Two configs:

- "digits": the 1,797 8x8 images of `sklearn_digits`, with its split (example i is a test example
  iff i % 5 == 4); `label` is the digit, `id` the index in scikit-learn's order.
- "scenes": the 64x64 scenes of 1 to 6 digits of `digit_scenes` (the same images, splits and
  indices); `label` is the number of digits minus one (0..5), `id` the scene's index.

Every example has N_CAPTIONS captions, a pure function of the example's labels, boxes and
`numpy.random.default_rng((SEED, config id, split id, id))`: N_CAPTIONS distinct templates
are drawn among the applicable TRAIN_TEMPLATES of the config (those describing positions with
POSITION_WEIGHT times the probability of the others) and filled in; every digit is named
by its word or its numeral ("seven" or "7", equally likely), counts mostly by words ("three
digits", one time in four "3 digits").

Scene positions come from the objects' tight boxes: a digit is left of (above) another when its
box centre is, and a relation is phrased only when it is unambiguous, i.e. when the two boxes do not
overlap along that axis (so "a 5 above a 2" never describes two digits side by side at about the
same height). Orders ("from left to right: 3, 8 and 5") need every consecutive pair separated that
way, the leftmost (topmost, ...) digit needs its box clear of all the others.

HELDOUT_TEMPLATES, the zero-shot prompts, never occur in a training caption (`tests/data` checks
the whole train split): no caption contains a held-out template with any words in its slot. Their
words do occur in the captions, in other combinations, so a text encoder has seen every word of a
prompt but never the prompt.
"""

from __future__ import annotations

import functools
import string
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as scenes_builder
from attn_jax.data.sklearn_digits import sklearn_digits_dataset_builder as digits_builder

SEED = 20210226  # CLIP's arXiv date
CONFIG_IDS = {"digits": 0, "scenes": 1}
SPLIT_IDS = {"train": 0, "test": 1}
N_CAPTIONS = 5
NUM_CLASSES = {"digits": digits_builder.NUM_CLASSES, "scenes": scenes_builder.MAX_DIGITS}
IMAGE_SHAPES = {"digits": digits_builder.IMAGE_SHAPE, "scenes": scenes_builder.IMAGE_SHAPE}
SIZES = {
    "digits": {"train": 1438, "test": 359},
    "scenes": dict(scenes_builder.SIZES),
}
# Tokens of the longest caption or zero-shot prompt the config's templates can produce, plus SOT
# and EOT (captions.py's tokenization: words and punctuation marks). Digits: "there is a single
# digit here, a 0"; scenes: "a pen drawing:" and six digits with articles. `tests/data` checks
# that the data reach the bound and never exceed it.
TEXT_LENGTHS = {"digits": 11, "scenes": 23}
NUMERAL_PROBABILITY = 0.5  # a digit is named "7" rather than "seven"
COUNT_NUMERAL_PROBABILITY = 0.25  # a count is "3 digits" rather than "three digits"
# Templates that describe positions are drawn this many times as often as the others: they apply
# to fewer scenes, and they are what a caption can tell that a bag of digits cannot.
POSITION_FIELDS = ("lr", "tb", "left", "right", "above", "below")
POSITION_FIELDS += ("leftmost", "rightmost", "top", "bottom")
POSITION_WEIGHT = 4.0

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUMERALS = tuple("0123456789")
# Words a template field can produce besides digit names (see `_scene_fields`).
FIELD_WORDS = ("a", "an", "and", ",", "digit", "digits")

# Fields: {n} a digit's name, {an} the same with its article; {c} a count ("three digits").
# Scenes also: {items} every digit with its article ("a 3, an 8 and a 5") and {list} without, in
# random order; {lr} / {tb} the digits from left to right / top to bottom; {left} {right} of two
# digits side by side, {above} {below} of two stacked ones (with articles); {max} {min} the
# largest / smallest digit; {leftmost} {rightmost} {top} {bottom} with articles.
TRAIN_TEMPLATES = {
    "digits": (
        "a handwritten {n}",
        "the digit {n}",
        "a scanned image of the number {n}",
        "{an} written by hand",
        "the number {n}, handwritten",
        "a small grayscale picture with {an} in it",
        "{an} in a blurry photo",
        "this scan shows the numeral {n}",
        "a pen drawing: {an}",
        "there is a single digit here, {an}",
        "a cropped scan of the handwritten digit {n}",
        "the numeral {n} on a dark background",
    ),
    "scenes": (
        "{c} on a dark background",
        "{c}: {list}",
        "a scene with {c}",
        "{items}",
        "a canvas with {items}",
        "{c} written by hand",
        "a scanned image of {c}",
        "{c} in a cropped scan",
        "a photo with {c} in it",
        "a pen drawing: {items}",
        "this scan shows {items}",
        "a canvas containing {c}",
        "a single handwritten {n}",
        "{an}, the only digit in the picture",
        "{c}, the largest is {max}",
        "{c}, the smallest is {min}",
        "{c}: {left} on the left and {right} on the right",
        "{above} above {below}",
        "{c} from left to right: {lr}",
        "{c} from top to bottom: {tb}",
        "the leftmost digit is {leftmost}",
        "the rightmost digit is {rightmost}",
        "the digit at the top is {top}",
        "the digit at the bottom is {bottom}",
    ),
}
HELDOUT_TEMPLATES = {
    "digits": (
        "a photo of the number {n}.",
        "this image shows {an}.",
        "a picture of the digit {n}.",
        "a drawing of {an}.",
        "there is {an} in this image.",
        "a cropped photo of {an}.",
    ),
    "scenes": (
        "a photo of {c}.",
        "this image shows {c}.",
        "a picture containing {c}.",
        "{c} in this picture.",
        "a drawing of {c}.",
        "a cropped photo of {c}.",
    ),
}
# Zero-shot class names: every class has the same number of names (its word, then its numeral).
CLASS_NAMES = {
    "digits": tuple((w, d) for w, d in zip(DIGIT_WORDS, NUMERALS, strict=True)),
    "scenes": tuple(
        (f"{DIGIT_WORDS[k]} digit{'s' * (k > 1)}", f"{k} digit{'s' * (k > 1)}")
        for k in range(1, scenes_builder.MAX_DIGITS + 1)
    ),
}


# -- filling templates ----------------------------------------------------------------------------
def fields_of(template: str) -> list[str]:
    """The field names of a template, in order: "{c}: {list}" -> ["c", "list"]."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def with_article(name: str) -> str:
    """The name after its article, as the name is spoken: "an 8", "a seven"."""
    return f"{'an' if name in ('eight', '8') else 'a'} {name}"


def fill(template: str, name: str) -> str:
    """A held-out template filled with a class name (its {n}, {an} or {c} field)."""
    return template.format(n=name, an=with_article(name), c=name)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _digit_name(digit: int, rng: np.random.Generator) -> str:
    return NUMERALS[digit] if rng.random() < NUMERAL_PROBABILITY else DIGIT_WORDS[digit]


def _count_name(n: int, rng: np.random.Generator) -> str:
    word = NUMERALS[n] if rng.random() < COUNT_NUMERAL_PROBABILITY else DIGIT_WORDS[n]
    return f"{word} digit{'s' * (n > 1)}"


def _ordered(lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Indices sorted by box centre along one axis, if each box ends before the next one begins
    (the order is unambiguous), else None. lo, hi: the boxes' extents along that axis."""
    order = np.argsort(lo + hi, kind="stable")
    if np.all(hi[order[:-1]] <= lo[order[1:]]):
        return order
    return None


def _extreme(lo: np.ndarray, hi: np.ndarray, first: bool) -> int | None:
    """The box with the smallest (first) or largest centre along one axis, if it is clear of all
    the others along that axis, else None."""
    k = int(np.argmin(lo + hi) if first else np.argmax(lo + hi))
    others = np.arange(len(lo)) != k
    clear = hi[k] <= lo[others].min() if first else lo[k] >= hi[others].max()
    return k if clear else None


def _scene_roles(boxes: np.ndarray) -> dict[str, list[int] | None]:
    """Which digits each positional field names, in order; None where the field does not apply.
    boxes: [n, 4] (ymin, xmin, ymax, xmax)."""
    n = len(boxes)
    ymin, xmin, ymax, xmax = boxes.T
    roles: dict[str, list[int] | None] = {}
    for key, lo, hi in (("lr", xmin, xmax), ("tb", ymin, ymax)):
        order = _ordered(lo, hi) if n > 1 else None
        roles[key] = None if order is None else [int(k) for k in order]
    for first, second, key in (("left", "right", "lr"), ("above", "below", "tb")):
        order = roles[key] if n == 2 else None
        roles[first] = None if order is None else order[:1]
        roles[second] = None if order is None else order[1:]
    extremes = (
        ("leftmost", xmin, xmax, True),
        ("rightmost", xmin, xmax, False),
        ("top", ymin, ymax, True),
        ("bottom", ymin, ymax, False),
    )
    for key, lo, hi, first in extremes:
        k = _extreme(lo, hi, first) if n > 1 else None
        roles[key] = None if k is None else [k]
    return roles


Fields = dict[str, Callable[[], str] | None]


def _scene_fields(labels: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> Fields:
    """The fields of a scene's captions as functions that name the digits afresh at each call;
    None where a field does not apply. labels: [n] digits; boxes: [n, 4]."""
    n = len(labels)

    def name(k: int) -> str:
        return _digit_name(int(labels[k]), rng)

    def names(ks, article: bool) -> str:
        return _join([with_article(name(k)) if article else name(k) for k in ks])

    many = n > 1
    fields: Fields = {
        "c": lambda: _count_name(n, rng),
        "items": lambda: names(rng.permutation(n), True),
        "list": lambda: names(rng.permutation(n), False),
        "n": (lambda: name(0)) if n == 1 else None,
        "an": (lambda: names([0], True)) if n == 1 else None,
        "max": (lambda: _digit_name(int(labels.max()), rng)) if many else None,
        "min": (lambda: _digit_name(int(labels.min()), rng)) if many else None,
    }
    for key, ks in _scene_roles(boxes).items():
        article = key not in ("lr", "tb")
        fields[key] = None if ks is None else functools.partial(names, ks, article)
    return fields


def _draw(config: str, fields: Fields, rng: np.random.Generator) -> list[str]:
    """N_CAPTIONS captions from distinct applicable templates, each naming its digits afresh."""
    usable = [
        t for t in TRAIN_TEMPLATES[config] if all(fields[f] is not None for f in fields_of(t))
    ]
    assert len(usable) >= N_CAPTIONS, (config, usable)
    weights = np.asarray(
        [POSITION_WEIGHT if set(fields_of(t)) & set(POSITION_FIELDS) else 1.0 for t in usable]
    )
    picks = rng.choice(len(usable), size=N_CAPTIONS, replace=False, p=weights / weights.sum())
    captions = []
    for i in picks:
        template = usable[int(i)]
        captions.append(template.format(**{f: fields[f]() for f in fields_of(template)}))
    return captions


def digit_captions(label: int, rng: np.random.Generator) -> list[str]:
    """N_CAPTIONS captions of one handwritten digit."""
    fields: Fields = {
        "n": lambda: _digit_name(label, rng),
        "an": lambda: with_article(_digit_name(label, rng)),
    }
    return _draw("digits", fields, rng)


def scene_captions(labels: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> list[str]:
    """N_CAPTIONS captions of one scene.

    Args:
        labels: int [n] the digits, n >= 1.
        boxes: float [n, 4] their boxes (ymin, xmin, ymax, xmax), in any common unit.
        rng: the example's generator.
    """
    labels = np.asarray(labels).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return _draw("scenes", _scene_fields(labels, boxes, rng), rng)


def example_rng(config: str, split: str, index: int) -> np.random.Generator:
    """The generator of example `index` of `split` (digits: the scikit-learn index)."""
    return np.random.default_rng((SEED, CONFIG_IDS[config], SPLIT_IDS[split], index))


# -- the builder ----------------------------------------------------------------------------------
class Builder(tfds.core.GeneratorBasedBuilder):
    """Digits (8x8) or digit scenes (64x64) with N_CAPTIONS generated English captions each."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: configs digits and scenes, 5 captions each."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="digits", description="sklearn_digits with captions; label = the digit"
        ),
        tfds.core.BuilderConfig(
            name="scenes", description="digit_scenes with captions; label = digits - 1"
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
        if config == "digits":
            image = tfds.features.Tensor(shape=IMAGE_SHAPES[config], dtype=np.uint8)
            id_doc = "index of the digit in scikit-learn's order"
        else:  # stored as digit_scenes stores it
            image = tfds.features.Tensor(
                shape=IMAGE_SHAPES[config], dtype=np.uint8, encoding="bytes"
            )
            id_doc = "index of the scene in its digit_scenes split"
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": image,
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES[config]),
                    "captions": tfds.features.Sequence(tfds.features.Text(), length=N_CAPTIONS),
                    "id": tfds.features.Scalar(dtype=np.int32, doc=id_doc),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the source datasets' order
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            license="CC BY 4.0 (UCI Machine Learning Repository)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # generated from scikit-learn's digits
        return {split: self._generate_examples(split) for split in SPLIT_IDS}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.builder_config.name == "digits":
            yield from generate_digits(split)
        else:
            yield from generate_scenes(split)


def generate_digits(split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(key, example) of the "digits" config's `split`, in scikit-learn's order."""
    images, labels = scenes_builder.load_digits()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if digits_builder.split_of(i) == split:
            captions = digit_captions(int(label), example_rng("digits", split, i))
            yield i, _example(image.astype(np.uint8)[..., None], int(label), captions, i)


def generate_scenes(split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(key, example) of the "scenes" config's `split`, in index order."""
    digits, labels = scenes_builder.load_digits()
    pool = scenes_builder.pool_of(split, len(digits))
    for index in range(SIZES["scenes"][split]):
        scene = scenes_builder.render(scenes_builder.layout_of(split, index, pool), digits, labels)
        objects = scene["objects"]
        boxes = np.asarray([np.asarray(b) for b in objects["bbox"]])
        digit_labels = np.asarray(objects["label"])
        rng = example_rng("scenes", split, index)
        captions = scene_captions(digit_labels, boxes, rng)
        yield index, _example(scene["image"], len(digit_labels) - 1, captions, index)


def _example(image: np.ndarray, label: int, captions: list[str], index: int) -> dict[str, Any]:
    return {"image": image, "label": label, "captions": captions, "id": index}
