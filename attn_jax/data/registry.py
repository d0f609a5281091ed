"""The table of datasets the pipelines know: names, splits, shapes, normalization constants.

Everything `dataset_info` reports comes from here, so a config can be checked and a model built
without touching the data. Two kinds of datasets:

- embedded: a tfds builder in this package (one folder each) whose data ship with an installed
  Python package; prepared automatically on first use, nothing to download.
- catalog: a tfds catalog dataset that the user prepares once as array_record
  (`tfds build NAME --data_dir=DIR --file_format=array_record`); read through `tfds.data_source`.

Normalization: images are fed as `(x / max_value - mean) / std`, per channel, with mean and std in
the [0, 1] scale.

- sklearn_digits: mean and std over all pixels of the 1,438 training images (x / 16), computed
  once from the data and written here (`tests/data` recomputes and checks them).
- cifar10: the per-channel population statistics of the 50,000 training images, as Keras'
  `Normalization().adapt(x_train / 255)` computes them.
- imagenet2012: the statistics the torchvision / timm ImageNet models were trained with.
"""

from __future__ import annotations

import dataclasses

from attn_jax.data.errors import DataConfigError
from attn_jax.data.sklearn_digits import sklearn_digits_dataset_builder as _digits


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One dataset the pipelines can read.

    Attributes:
        name: the name configs use (`data.name`).
        tfds_name: the tfds dataset name.
        splits: number of examples of each split (the catalog's numbers for catalog datasets).
        num_classes: number of labels.
        image_shape: stored (H, W, C); None where sizes vary (ImageNet).
        default_image_size: side of the square images fed to the model when `data.image_size` is
            None; None keeps the stored size.
        max_value: the largest pixel value; images are divided by it before normalization.
        mean: per-channel mean in the [0, 1] scale.
        std: per-channel standard deviation in the [0, 1] scale.
        embedded: whether the data ship with the code (prepared automatically).
        augmentation: what `data.augment=True` applies when training: "translate" (random shift by
            up to `max_shift` pixels per axis, zero fill), "crop_flip" (the same with
            `max_shift`-pixel zero padding, plus a horizontal flip), or "inception_crop" (random
            resized crop with scale 0.08..1 and aspect ratio 3/4..4/3, plus a horizontal flip).
        max_shift: the largest shift of "translate" and "crop_flip".
        decode_with_pil: read the image feature as encoded bytes and decode it with PIL here, so
            that JPEGs can be decoded at reduced size before the crop (ImageNet).
        prepare_note: what preparing needs besides the build command.
    """

    name: str
    tfds_name: str
    splits: dict[str, int]
    num_classes: int
    image_shape: tuple[int, int, int] | None
    max_value: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedded: bool
    augmentation: str
    max_shift: int = 0
    default_image_size: int | None = None
    decode_with_pil: bool = False
    prepare_note: str = ""

    @property
    def channels(self) -> int:
        return len(self.mean)


SKLEARN_DIGITS = DatasetEntry(
    name="sklearn_digits",
    tfds_name="sklearn_digits",
    splits={"train": 1438, "test": 359},
    num_classes=_digits.NUM_CLASSES,
    image_shape=_digits.IMAGE_SHAPE,
    max_value=float(_digits.MAX_VALUE),
    mean=(0.30580668,),
    std=(0.37644229,),
    embedded=True,
    augmentation="translate",
    max_shift=1,
)

CIFAR10 = DatasetEntry(
    name="cifar10",
    tfds_name="cifar10",
    splits={"train": 50_000, "test": 10_000},
    num_classes=10,
    image_shape=(32, 32, 3),
    max_value=255.0,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    embedded=False,
    augmentation="crop_flip",
    max_shift=4,
)

IMAGENET2012 = DatasetEntry(
    name="imagenet2012",
    tfds_name="imagenet2012",
    splits={"train": 1_281_167, "validation": 50_000},
    num_classes=1000,
    image_shape=None,
    max_value=255.0,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    embedded=False,
    augmentation="inception_crop",
    default_image_size=224,
    decode_with_pil=True,
    prepare_note=(
        "; ImageNet cannot be downloaded by tfds: first put ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar in {data_dir}/downloads/manual"
    ),
)

REGISTRY: dict[str, DatasetEntry] = {e.name: e for e in (SKLEARN_DIGITS, CIFAR10, IMAGENET2012)}


def get_entry(name: str) -> DatasetEntry:
    """The registry entry of `name`; a `DataConfigError` (a ValueError) naming the known datasets
    otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(REGISTRY))}"
        ) from None
