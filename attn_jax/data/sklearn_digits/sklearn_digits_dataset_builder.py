"""tfds builder of scikit-learn's 1,797 8x8 handwritten digits (embedded: nothing to download).

The images come from the installed scikit-learn package (`sklearn.datasets.load_digits`), the test
set of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin and Kaynak, 1998): each
pixel counts the set pixels of a 4x4 block of a 32x32 bitmap, so values are integers in 0..16.

Features: `image` uint8 [8, 8, 1] with the 0..16 values unchanged, `label` ClassLabel(10), and
`id`, the example's index in scikit-learn's order. Split (fixed, part of the dataset's definition):
example i is in `test` iff i % 5 == 4, giving 1,438 train / 359 test examples, each split in
scikit-learn's order. The features are `tfds.features.Tensor`s rather than `Image`s because
encoding PNGs needs TensorFlow, which this project does not depend on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
MAX_VALUE = 16
TEST_PERIOD = 5  # example i is a test example iff i % TEST_PERIOD == TEST_PERIOD - 1


def split_of(index: int) -> str:
    """The split of the example with index `index` in scikit-learn's order."""
    return "test" if index % TEST_PERIOD == TEST_PERIOD - 1 else "train"


class Builder(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits with a fixed 1,438 / 359 train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: i % 5 == 4 -> test, images as uint8 0..16."}

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds 4.9.10 finds this file through `importlib_resources`, which it declares only for
        # Python < 3.9 and so is often missing; the answer it would compute is this file.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "id": tfds.features.Scalar(
                        dtype=np.int32, doc="index of the example in scikit-learn's order"
                    ),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep scikit-learn's order in each split: tfds otherwise permutes examples by key hash.
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            license="CC BY 4.0 (UCI Machine Learning Repository)",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # the data ship with scikit-learn
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        from sklearn.datasets import load_digits  # deferred: only preparing needs scikit-learn

        digits = load_digits()
        images = digits.images.astype(np.uint8)
        assert np.array_equal(images, digits.images) and images.max() <= MAX_VALUE
        for i, (image, label) in enumerate(zip(images, digits.target, strict=True)):
            if split_of(i) == split:
                yield i, {"image": image[..., None], "label": int(label), "id": i}
