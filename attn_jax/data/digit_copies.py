"""What the embedded datasets made of copies of scikit-learn's digits share.

`translated_digits` (RAM) and `distorted_digits` (STN) each turn every 8x8 digit into
`copies_of(split)` canvases (4 per training digit, 2 per test digit), keeping sklearn_digits'
train/test split so that no test digit is ever seen in training. A builder states its canvas shape,
its per-copy features and how one copy is drawn (`render`); the split, the keys (digit, then copy,
in that order) and the tfds metadata are here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of

NUM_CLASSES = 10
TRAIN_COPIES = 4
TEST_COPIES = 2
NUM_DIGITS = {"train": 1438, "test": 359}
TRAIN_SIZE = NUM_DIGITS["train"] * TRAIN_COPIES
TEST_SIZE = NUM_DIGITS["test"] * TEST_COPIES


def copies_of(split: str) -> int:
    """How many copies of each digit `split` holds."""
    return TRAIN_COPIES if split == "train" else TEST_COPIES


class DigitCopiesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A generated dataset of `copies_of(split)` canvases per scikit-learn digit.

    Subclasses set IMAGE_SHAPE, VERSION and RELEASE_NOTES and define `copy_features` (the features
    that describe one copy, e.g. its offset) and `render`.
    """

    IMAGE_SHAPE: tuple[int, int, int]

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # As in sklearn_digits: tfds would look the builder's file up through a package that is
        # often missing; the answer it would compute is the subclass's own file.
        return epath.Path(sys.modules[cls.__module__].__file__)

    def copy_features(self) -> Mapping[str, tfds.features.FeatureConnector]:
        """The features, besides image, label, id and copy, that describe one copy."""
        raise NotImplementedError  # abstract: every dataset describes its copies

    def render(self, digit: np.ndarray, index: int, copy: int) -> dict[str, Any]:
        """{"image": uint8 IMAGE_SHAPE canvas, **copy_features} of copy `copy` of digit `index`
        (`digit`: the [8, 8] float array of scikit-learn, values 0..16)."""
        raise NotImplementedError  # abstract: every dataset draws its own copies

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "id": tfds.features.Scalar(
                        dtype=np.int32, doc="index of the digit in scikit-learn's order"
                    ),
                    "copy": tfds.features.Scalar(dtype=np.int32, doc="which copy of the digit"),
                    **self.copy_features(),
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
                example = {"label": int(label), "id": i, "copy": c, **self.render(image, i, c)}
                yield i * copies + c, example
