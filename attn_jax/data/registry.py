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

Dense datasets (`kind="segmentation"` or `"detection"`, batches described in dense.py):

- digit_scenes / digit_detection: the embedded `digit_scenes` builder read for segmentation
  (background + 10 digits) or for detection (10 digits, at most 6 per scene); mean and std over
  all pixels of the 4,000 training scenes (x / 255), computed once from the data.
- coco: COCO 2017 detection (tfds `coco/2017`, its 80 contiguous labels; crowd boxes dropped);
  ImageNet statistics, as DETR normalizes.
- cityscapes: Cityscapes fine semantic segmentation (tfds `cityscapes/semantic_segmentation`),
  the 19 evaluated classes of the standard protocol (cityscapesScripts' `trainId`s, every other
  label id ignored); ImageNet statistics, as the usual backbones are pretrained with. tfds'
  `scene_parse150` is not offered for ADE20K: its `annotation` is the instance-segmentation
  release of Places Challenge 2017 (R channel = one of 100 object categories, G = instance), not
  the 150-class scene-parsing labels of ADEChallengeData2016 that ADE20K results are quoted on.

Text datasets (`kind="text"`) are sequence-to-sequence pairs: `dates` and `reverse` (embedded,
generated from a seed, character vocabularies) and wmt14 German-English in either direction
(catalog, a sentencepiece vocabulary trained from its training text on first use). Their image
fields are unused (`image_shape=None`, `num_classes=0`).

Image-text datasets (`kind="image_text"`, batches described in pipeline.py) read the embedded
`digit_captions` builder: `digit_captions` (config "digits": the sklearn_digits images, split,
normalization and augmentation, label = the digit) and `scene_captions` (config "scenes": the
digit_scenes images, splits and normalization, label = number of digits - 1; no augmentation,
since a shifted scene may lose a digit that its captions count). Their word vocabulary is
captions.py's; `text_length` is the builder's bound on caption and prompt tokens.
"""

from __future__ import annotations

import dataclasses

from attn_jax.data.color_digits import color_digits_dataset_builder as _color
from attn_jax.data.dates import dates_dataset_builder as _dates
from attn_jax.data.digit_captions import digit_captions_dataset_builder as _captions
from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as _scenes
from attn_jax.data.distorted_digits import distorted_digits_dataset_builder as _distorted
from attn_jax.data.errors import DataConfigError
from attn_jax.data.reverse import reverse_dataset_builder as _reverse
from attn_jax.data.sklearn_digits import sklearn_digits_dataset_builder as _digits
from attn_jax.data.translated_digits import translated_digits_dataset_builder as _translated


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
            None ("detr_multiscale": the evaluation shorter side); None keeps the stored size.
        max_value: the largest pixel value; images are divided by it before normalization.
        mean: per-channel mean in the [0, 1] scale.
        std: per-channel standard deviation in the [0, 1] scale.
        embedded: whether the data ship with the code (prepared automatically).
        augmentation: what `data.augment=True` applies when training: "translate" (random shift by
            up to `max_shift` pixels per axis, zero fill), "crop_flip" (the same with
            `max_shift`-pixel zero padding, plus a horizontal flip), "inception_crop" (random
            resized crop with scale 0.08..1 and aspect ratio 3/4..4/3, plus a horizontal flip),
            or, for dense kinds, "scale_crop" (random rescale by a factor in `scale_range`, random
            crop or pad back to the square, a horizontal flip if `flip_ok`; see dense.py), or for
            detection "detr_multiscale" (DETR's multi-scale resizes and random crops, images of
            varying size padded per batch; see detr_multiscale.py).
        max_shift: the largest shift of "translate" and "crop_flip".
        decode_with_pil: read the image feature as encoded bytes and decode it with PIL here, so
            that JPEGs can be decoded at reduced size before the crop (ImageNet), or their sizes
            read without decoding (COCO).
        prepare_note: what preparing needs besides the build command.
        kind: "image", "segmentation", "detection", "text" or "image_text".
        tokenizer: text only: "char" (the builder's `VOCAB`) or "sentencepiece"; image_text:
            "word" (captions.py's `VOCAB`).
        source_key: text only: the feature holding the source text.
        target_key: text only: the feature holding the target text.
        max_input_length: text with "char" only: tokens of the longest source over all splits,
            plus one for EOS.
        max_target_length: the same for the targets.
        length_buckets: text only: edges e of the source-length buckets [e[i], e[i+1]) that
            evaluations report by; None: no buckets.
        default_max_length: "sentencepiece" only: `data.max_length` when it is None.
        default_vocab_size: "sentencepiece" only: `data.vocab_size` when it is None.
        ignore_label: segmentation only: the class id of pixels that must not count.
        max_boxes: detection only: N, boxes per example after padding (more are dropped).
        flip_ok: dense kinds: whether the labels survive a horizontal flip (not for digits: a
            mirrored 3 is no 3).
        scale_range: dense kinds: range of the random rescale of "scale_crop".
        empty_canvas: dense kinds: the images are objects on an empty canvas, so pixels that
            augmentation brings in are real background (class 0, `pixel_mask` True, placed at
            random offsets) rather than padding (ignored, `pixel_mask` False).
        image_key: dense kinds: the feature holding the image.
        segmentation_key: segmentation only: the feature holding the per-pixel labels.
        label_map: segmentation only: class id of each stored label value (index = value, the
            rest is `ignore_label`); None: stored values are the class ids.
        objects_key: detection only: the Sequence feature with `bbox` (tfds' normalized ymin,
            xmin, ymax, xmax) and `label`.
        crowd_key: detection only: the objects' crowd flag (those boxes are dropped); "": none.
        id_key: detection only: the feature holding the integer image id.
        instances_key: detection only: the feature holding the instance map (0 background,
            1 + the object's index in `objects_key` on its pixels; objects must not overlap), read
            into the batch's `instances`; "": none.
        text_length: image_text only: T, tokens per caption row (SOT and EOT included).
        num_captions: image_text only: K, captions per image.
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
    kind: str = "image"
    tokenizer: str = ""
    source_key: str = "inputs"
    target_key: str = "targets"
    max_input_length: int | None = None
    max_target_length: int | None = None
    length_buckets: tuple[int, ...] | None = None
    default_max_length: int | None = None
    default_vocab_size: int | None = None
    ignore_label: int = 255
    max_boxes: int = 0
    flip_ok: bool = False
    scale_range: tuple[float, float] = (0.75, 1.25)
    empty_canvas: bool = False
    image_key: str = "image"
    segmentation_key: str = "segmentation"
    label_map: tuple[int, ...] | None = None
    objects_key: str = "objects"
    crowd_key: str = ""
    id_key: str = "id"
    instances_key: str = ""
    text_length: int | None = None
    num_captions: int = 0

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

# Translated digits (Mnih et al. 2014, sec. 4.1): mean and std over all pixels of the 5,752
# training canvases (x / 16), computed from the data (`tests/data` recomputes them); no
# augmentation (each training digit already comes at TRAIN_COPIES positions).
TRANSLATED_DIGITS = DatasetEntry(
    name="translated_digits",
    tfds_name="translated_digits",
    splits={"train": _translated.TRAIN_SIZE, "test": _translated.TEST_SIZE},
    num_classes=_translated.NUM_CLASSES,
    image_shape=_translated.IMAGE_SHAPE,
    max_value=float(_translated.MAX_VALUE),
    mean=(0.07645167,),
    std=(0.23013425,),
    embedded=True,
    augmentation="none",
)

# Distorted digits (Jaderberg et al. 2015, sec. 4.1, "RTS"): mean and std over all pixels of the
# 5,752 training canvases (x / 255), computed from the data (`tests/data` recomputes them); no
# augmentation (each training digit already comes under TRAIN_COPIES distortions).
DISTORTED_DIGITS = DatasetEntry(
    name="distorted_digits",
    tfds_name="distorted_digits",
    splits={"train": _distorted.TRAIN_SIZE, "test": _distorted.TEST_SIZE},
    num_classes=_distorted.NUM_CLASSES,
    image_shape=_distorted.IMAGE_SHAPE,
    max_value=float(_distorted.MAX_VALUE),
    mean=(0.12461592,),
    std=(0.24980890,),
    embedded=True,
    augmentation="none",
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

_DIGIT_SCENES: dict = {  # what the two readings of the digit_scenes builder share
    "tfds_name": "digit_scenes",
    "splits": {"train": _scenes.TRAIN_SIZE, "test": _scenes.TEST_SIZE},
    "image_shape": _scenes.IMAGE_SHAPE,
    "max_value": float(_scenes.MAX_VALUE),
    "mean": (0.08689243,),
    "std": (0.22145666,),
    "embedded": True,
    "augmentation": "scale_crop",
    "empty_canvas": True,
}

DIGIT_SCENES = DatasetEntry(
    name="digit_scenes", num_classes=_scenes.NUM_CLASSES + 1, kind="segmentation", **_DIGIT_SCENES
)
DIGIT_DETECTION = DatasetEntry(
    name="digit_detection",
    num_classes=_scenes.NUM_CLASSES,
    kind="detection",
    max_boxes=_scenes.MAX_DIGITS,
    instances_key="instances",
    **_DIGIT_SCENES,
)

# DETR (Carion et al. 2020) feeds COCO with the shorter side 800 (longer at most 1333), and
# trains on multi-scale resizes and random crops: "detr_multiscale", the official recipe
# (detr_multiscale.py), with batches padded to bucketed shapes (`pixel_mask`). Images are read
# encoded, so that other processes' images need only their headers to agree on a batch's shape.
# The test split has no annotations and is left out, so evaluation must name "validation".
COCO = DatasetEntry(
    name="coco",
    tfds_name="coco/2017",
    splits={"train": 118_287, "validation": 5_000},
    num_classes=80,
    image_shape=None,
    max_value=255.0,
    mean=IMAGENET2012.mean,
    std=IMAGENET2012.std,
    embedded=False,
    augmentation="detr_multiscale",
    default_image_size=800,
    decode_with_pil=True,
    kind="detection",
    max_boxes=100,
    flip_ok=True,
    crowd_key="is_crowd",
    id_key="image/id",
    prepare_note="; the build downloads about 20 GB from cocodataset.org",
)

# cityscapesScripts' labels.py: trainId of each label id 0..33 (255: not evaluated). The test
# split's labels are withheld by the benchmark, so only train and validation are offered.
_CITYSCAPES_TRAIN_IDS = (
    (255,) * 7
    + (0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13)
    + (14, 15, 255, 255, 16, 17, 18)
)
# SETR (Zheng et al. 2021) trains and evaluates Cityscapes on 768 x 768 crops; mmsegmentation's
# standard random rescale is 0.5..2.0.
CITYSCAPES = DatasetEntry(
    name="cityscapes",
    tfds_name="cityscapes/semantic_segmentation",
    splits={"train": 2_975, "validation": 500},
    num_classes=19,
    image_shape=(1024, 2048, 3),
    max_value=255.0,
    mean=IMAGENET2012.mean,
    std=IMAGENET2012.std,
    embedded=False,
    augmentation="scale_crop",
    default_image_size=768,
    kind="segmentation",
    flip_ok=True,
    scale_range=(0.5, 2.0),
    image_key="image_left",
    segmentation_key="segmentation_label",
    label_map=_CITYSCAPES_TRAIN_IDS,
    prepare_note=(
        "; Cityscapes cannot be downloaded by tfds: first put leftImg8bit_trainvaltest.zip and "
        "gtFine_trainvaltest.zip from cityscapes-dataset.com in {data_dir}/downloads/manual"
    ),
)

DIGIT_CAPTIONS = dataclasses.replace(
    SKLEARN_DIGITS,
    name="digit_captions",
    tfds_name="digit_captions/digits",
    splits=dict(_captions.SIZES["digits"]),
    kind="image_text",
    tokenizer="word",
    text_length=_captions.TEXT_LENGTHS["digits"],
    num_captions=_captions.N_CAPTIONS,
)
SCENE_CAPTIONS = DatasetEntry(
    name="scene_captions",
    num_classes=_captions.NUM_CLASSES["scenes"],
    kind="image_text",
    tokenizer="word",
    text_length=_captions.TEXT_LENGTHS["scenes"],
    num_captions=_captions.N_CAPTIONS,
    **{
        **_DIGIT_SCENES,
        "tfds_name": "digit_captions/scenes",
        "augmentation": "none",
        "empty_canvas": False,
    },
)

# Coloured digits and scenes for colorization (the embedded `color_digits` builder; its configs
# "digits", "scenes" and "digits_random"). Fed as sRGB / 255 (mean 0, std 1): the colorization
# task converts them to L*a*b* and standardizes the lightness it feeds the model itself. No
# augmentation: a shift would bring in black pixels, whose lightness no background has.
_COLOR: dict = {
    "tfds_name": "color_digits",
    "max_value": 255.0,
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
    "embedded": True,
    "augmentation": "none",
}


def _color_entry(name: str, config: str) -> DatasetEntry:
    return DatasetEntry(
        name=name,
        splits=dict(_color.SIZES[config]),
        num_classes=_color.NUM_CLASSES[config],
        image_shape=_color.IMAGE_SHAPES[config],
        **{**_COLOR, "tfds_name": f"color_digits/{config}"},
    )


COLOR_DIGITS = _color_entry("color_digits", "digits")
COLOR_DIGIT_SCENES = _color_entry("color_digit_scenes", "scenes")
COLOR_DIGITS_RANDOM = _color_entry("color_digits_random", "digits_random")

_TEXT: dict = {  # the image fields, unused by text datasets
    "num_classes": 0,
    "image_shape": None,
    "max_value": 0.0,
    "mean": (),
    "std": (),
    "augmentation": "none",
    "kind": "text",
}

DATES = DatasetEntry(
    name="dates",
    tfds_name="dates",
    splits={"train": _dates.TRAIN_SIZE, "test": _dates.TEST_SIZE},
    embedded=True,
    tokenizer="char",
    max_input_length=_dates.MAX_INPUT_CHARS + 1,
    max_target_length=_dates.TARGET_CHARS + 1,
    **_TEXT,
)

REVERSE = DatasetEntry(
    name="reverse",
    tfds_name="reverse",
    splits={"train": _reverse.TRAIN_SIZE, "test": _reverse.TEST_SIZE},
    embedded=True,
    tokenizer="char",
    max_input_length=_reverse.MAX_LENGTH + 1,
    max_target_length=_reverse.MAX_LENGTH + 1,
    length_buckets=_reverse.LENGTH_BUCKETS,
    **_TEXT,
)


def _wmt14(source: str, target: str) -> DatasetEntry:
    return DatasetEntry(
        name=f"wmt14_{source}_{target}",
        tfds_name="wmt14_translate/de-en",
        splits={"train": 4_508_785, "validation": 3_000, "test": 3_003},
        embedded=False,
        tokenizer="sentencepiece",
        source_key=source,
        target_key=target,
        default_max_length=128,
        default_vocab_size=32_000,
        **_TEXT,
    )


KINDS = {  # kind -> how get_entry's error names the group
    "image": "images",
    "segmentation": "segmentation",
    "detection": "detection",
    "text": "text",
    "image_text": "image-text",
}

REGISTRY: dict[str, DatasetEntry] = {
    e.name: e
    for e in (
        SKLEARN_DIGITS,
        TRANSLATED_DIGITS,
        DISTORTED_DIGITS,
        CIFAR10,
        IMAGENET2012,
        DIGIT_SCENES,
        DIGIT_DETECTION,
        COCO,
        CITYSCAPES,
        DIGIT_CAPTIONS,
        SCENE_CAPTIONS,
        COLOR_DIGITS,
        COLOR_DIGIT_SCENES,
        COLOR_DIGITS_RANDOM,
        DATES,
        REVERSE,
        _wmt14("de", "en"),
        _wmt14("en", "de"),
    )
}


def get_entry(name: str) -> DatasetEntry:
    """The registry entry of `name`; a `DataConfigError` (a ValueError) naming the known datasets
    otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        groups = [
            f"{', '.join(sorted(n for n, e in REGISTRY.items() if e.kind == kind))} ({label})"
            for kind, label in KINDS.items()
        ]
        raise DataConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(groups)}"
        ) from None
