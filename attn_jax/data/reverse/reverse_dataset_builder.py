"""tfds builder of a long-range task: reverse a sequence of 10..60 symbols.

The last output symbol is the first input symbol, so the task needs the whole input to be
remembered (or attended to) to the end. Generated from a fixed seed: nothing is downloaded and
every build is the same. Symbols are the 20 letters `SYMBOLS`, drawn uniformly and independently.

Split: `test` holds TEST_PER_BUCKET sequences for each length bucket of `LENGTH_BUCKETS`
(10-19, 20-29, 30-39, 40-49, 50-60), lengths uniform within the bucket, the buckets interleaved
in a random order; `train` holds TRAIN_SIZE sequences with lengths uniform in 10..60 and no
sequence of `test`. Features: `inputs`, `targets` (Text, the reversal of `inputs`). Vocabulary:
the symbols after the four reserved ids (text.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.text import CharVocab

SEED = 1060
SYMBOLS = "abcdefghijklmnopqrst"
VOCAB = CharVocab(SYMBOLS)
MIN_LENGTH, MAX_LENGTH = 10, 60
LENGTH_BUCKETS = (10, 20, 30, 40, 50, 61)  # bucket i: lengths in [edges[i], edges[i + 1])
TRAIN_SIZE = 20_000
TEST_PER_BUCKET = 400
TEST_SIZE = TEST_PER_BUCKET * (len(LENGTH_BUCKETS) - 1)


def _sequences(rng: np.random.Generator, lengths: np.ndarray) -> list[str]:
    symbols = rng.integers(0, len(SYMBOLS), (len(lengths), MAX_LENGTH))
    letters = np.frombuffer(SYMBOLS.encode(), np.uint8)[symbols]
    return [row[:n].tobytes().decode() for row, n in zip(letters, lengths, strict=True)]


@functools.lru_cache(maxsize=2)
def generate(seed: int = SEED) -> dict[str, list[str]]:
    """{"train": [inputs], "test": [inputs]}, a pure function of `seed`."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate(
        [
            rng.integers(lo, hi, TEST_PER_BUCKET)
            for lo, hi in zip(LENGTH_BUCKETS[:-1], LENGTH_BUCKETS[1:], strict=True)
        ]
    )
    test = _sequences(rng, rng.permutation(lengths))
    assert len(set(test)) == TEST_SIZE  # 20**10 sequences of the shortest length: no collision
    seen = set(test)
    train: list[str] = []
    while len(train) < TRAIN_SIZE:
        for seq in _sequences(rng, rng.integers(MIN_LENGTH, MAX_LENGTH + 1, TRAIN_SIZE)):
            if seq not in seen and len(train) < TRAIN_SIZE:
                seen.add(seq)
                train.append(seq)
    return {"train": train, "test": test}


class Builder(tfds.core.GeneratorBasedBuilder):
    """Sequences of 10..60 of 20 symbols and their reversals; 20,000 train / 2,000 test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 20 symbols, lengths 10..60, seed 1060."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # See sklearn_digits: tfds would need importlib_resources to find this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "inputs": tfds.features.Text(doc="10..60 symbols a..t"),
                    "targets": tfds.features.Text(doc="the inputs reversed"),
                }
            ),
            supervised_keys=("inputs", "targets"),
            disable_shuffling=True,  # keep the generated order
            license="generated data, no license restrictions",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # generated
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, seq in enumerate(generate()[split]):
            yield i, {"inputs": seq, "targets": seq[::-1]}
