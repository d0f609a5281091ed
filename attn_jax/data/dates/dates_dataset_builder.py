"""tfds builder of a date translation task: English dates in many formats -> ISO 8601.

Generated from a fixed seed, so nothing is downloaded and every build is the same: dates are
drawn uniformly from 1900-01-01..2099-12-31, each written in one of `FORMATS` (drawn uniformly)
and, for formats with letters, as is (70%), lower-cased (15%) or upper-cased (15%). The target is
the ISO date "YYYY-MM-DD". Two-digit years follow Python's `%y` convention (69..99 -> 19xx,
00..68 -> 20xx), so a date outside 1969..2068 that draws a two-digit-year format is written in a
four-digit format drawn instead: every input has exactly one reading.

Split: candidates are drawn in order from the seed; the first TEST_SIZE distinct input strings
form `test`, the next TRAIN_SIZE distinct strings not in `test` form `train`. Features: `inputs`
and `targets` (Text), `format` (index into FORMATS). Vocabulary: the characters CHARS after the
four reserved ids (text.py).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.text import CharVocab

SEED = 20261123
TRAIN_SIZE = 20_000
TEST_SIZE = 2_000
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
CHARS = " ,-./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
VOCAB = CharVocab(CHARS)
MAX_INPUT_CHARS = 30  # the longest input of either split (tests check it against the data)
TARGET_CHARS = 10  # "YYYY-MM-DD"
TWO_DIGIT_YEARS = (1969, 2068)  # the years %y reads back unchanged

MONTHS = (
    "January February March April May June July August September October November December"
).split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


def ordinal(day: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    if 11 <= day % 100 <= 13:
        return f"{day}th"
    return f"{day}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(day % 10, 'th') }"


def _d(d):
    return d.day


def _M(d):
    return MONTHS[d.month - 1]


def _b(d):
    return MONTHS[d.month - 1][:3]


def _A(d):
    return WEEKDAYS[d.weekday()]


# (render, strptime pattern after removing ordinal suffixes, two-digit year)
FORMATS: tuple[tuple[Callable[[datetime.date], str], str, bool], ...] = (
    (lambda d: f"{_A(d)}, {_d(d)} {_M(d)} {d.year}", "%A, %d %B %Y", False),
    (lambda d: f"{d.month}/{d.day}/{d.year % 100:02d}", "%m/%d/%y", True),
    (lambda d: f"{_d(d)} {_b(d).lower()}. {d.year}", "%d %b. %Y", False),
    (lambda d: f"{_M(d)} {_d(d)}, {d.year}", "%B %d, %Y", False),
    (lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}", "%d.%m.%Y", False),
    (lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}", "%Y/%m/%d", False),
    (lambda d: f"the {ordinal(d.day)} of {_M(d)} {d.year}", "the %d of %B %Y", False),
    (lambda d: f"{_d(d)} {_M(d)} {d.year}", "%d %B %Y", False),
    (lambda d: f"{_A(d)[:3]} {_d(d)} {_b(d)} {d.year}", "%a %d %b %Y", False),
    (lambda d: f"{_b(d)} {_d(d)} {d.year}", "%b %d %Y", False),
    (lambda d: f"{d.day:02d}-{_b(d).upper()}-{d.year}", "%d-%b-%Y", False),
    (lambda d: f"{_A(d)} {_M(d)} {ordinal(d.day)}, {d.year}", "%A %B %d, %Y", False),
    (lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}", "%m/%d/%Y", False),
    (lambda d: f"{_d(d)} {_b(d)} {d.year % 100:02d}", "%d %b %y", True),
    (lambda d: f"{_M(d)} {d.year}, {ordinal(d.day)}", "%B %Y, %d", False),
    (lambda d: f"{d.year}{d.month:02d}{d.day:02d}", "%Y%m%d", False),
)
_FOUR_DIGIT = np.array([i for i, f in enumerate(FORMATS) if not f[2]])


def render(day: datetime.date, fmt: int, case: int) -> str:
    """`day` written in format `fmt`; case 0: as is, 1: lower, 2: upper."""
    text = FORMATS[fmt][0](day)
    return (text, text.lower(), text.upper())[case]


def _candidates(rng: np.random.Generator, n: int) -> Iterator[tuple[str, str, int]]:
    span = (LAST_DAY - FIRST_DAY).days + 1
    days = rng.integers(0, span, n)
    fmts = rng.integers(0, len(FORMATS), n)
    fallback = _FOUR_DIGIT[rng.integers(0, len(_FOUR_DIGIT), n)]
    u = rng.random(n)
    cases = np.where(u < 0.7, 0, np.where(u < 0.85, 1, 2))
    for offset, fmt, alt, case in zip(days, fmts, fallback, cases, strict=True):
        day = FIRST_DAY + datetime.timedelta(days=int(offset))
        if FORMATS[fmt][2] and not TWO_DIGIT_YEARS[0] <= day.year <= TWO_DIGIT_YEARS[1]:
            fmt = alt
        yield render(day, int(fmt), int(case)), day.isoformat(), int(fmt)


@functools.lru_cache(maxsize=2)
def generate(seed: int = SEED) -> dict[str, list[tuple[str, str, int]]]:
    """{"train": [(input, target, format)], "test": [...]}, a pure function of `seed`."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str, int]]] = {"test": [], "train": []}
    order = [("test", TEST_SIZE), ("train", TRAIN_SIZE)]
    while order:
        for example in _candidates(rng, 4096):
            if not order:
                break
            if example[0] in seen:
                continue
            seen.add(example[0])
            split, size = order[0]
            splits[split].append(example)
            if len(splits[split]) == size:
                order.pop(0)
    return splits


class Builder(tfds.core.GeneratorBasedBuilder):
    """Dates in 16 English formats -> ISO 8601; 20,000 train / 2,000 test, generated."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 16 formats, seed 20261123."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # See sklearn_digits: tfds would need importlib_resources to find this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.Text(doc="the date in an English format"),
                    "targets": tfds.features.Text(doc="the date as YYYY-MM-DD"),
                    "format": tfds.features.Scalar(dtype=np.int32, doc="index into FORMATS"),
                }
            ),
            supervised_keys=("inputs", "targets"),
            disable_shuffling=True,  # keep the generated order
            homepage="https://en.wikipedia.org/wiki/ISO_8601",
            license="generated data, no license restrictions",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # generated
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (source, target, fmt) in enumerate(generate()[split]):
            assert len(source) <= MAX_INPUT_CHARS and len(target) == TARGET_CHARS, source
            yield i, {"inputs": source, "targets": target, "format": fmt}
