"""grain input pipelines: `dataset_info(data_cfg)` and `make_dataset(data_cfg, split, ...)`.

The unit of work is a batch, not an example. The pipeline is a grain `MapDataset` over step
numbers whose map computes process p's part of global batch k in one vectorized pass: gather,
augment, normalize. On a 2-core CPU, per-example grain maps (shuffle, random_map, batch) take
~23 ms for a 128-example digits batch, twice the default experiment's train step; the batch map
takes ~0.3 ms. What this design gives:

- The global stream. Training reads an infinite stream: epoch e is a permutation of the split,
  a pure function of (seed, e), so every epoch is shuffled differently and the same for every
  process. Global batch k is positions [k*B, (k+1)*B) of the stream: batches run across epoch
  boundaries and no example is dropped (drop-remainder only ever applies to the infinite stream).
- Sharding the batch, not the data: process p of P takes positions [k*B + p*b, k*B + (p+1)*b)
  with b = B // P, so the union of the P per-process batches of step k is exactly the batch one
  process would read with B, whatever P is.
- Augmentation is drawn from (seed, stream position) by counter-based hashing (transforms.py),
  so it too is independent of P, of threading, and of restarts.
- Evaluation reads the split once in stored order, padded to a whole number of global batches;
  `mask` is False on the padding (image 0, label 0), so metrics that weigh by `mask` count every
  example exactly once with static shapes.
- The iterator state is grain's `{"next_index": k}` (JSON-serializable): restoring it resumes at
  step k with bitwise the same batches.

Image batches are dicts of numpy arrays: `image` float32 [b, H, W, C] normalized per channel,
`label` int32 [b], `mask` bool [b]. Text batches (`spec.kind == "text"`, see sequences.py) are
`inputs` int32 [b, S], `targets` int32 [b, T], `length` int32 [b], `mask` bool [b], over the same
stream of examples; `get_vocab(data_cfg)` turns their ids back into strings. Segmentation and
detection batches (`spec.kind` "segmentation" / "detection", see dense.py) carry per-pixel
classes, or padded boxes with their masks, over the same stream too; coco's follow DETR's
multi-scale recipe, and their H and W vary from batch to batch among a few padded shapes
(`spec.pad_multiple`, detr_multiscale.py).

Image-text batches (`spec.kind == "image_text"`: digit_captions, scene_captions; T =
`spec.text_length`, K = `spec.num_captions`, ids of captions.py's `WordVocab`):

    image     float32 [b, H, W, C]  preprocessed as for the image datasets (resize, augmentation)
    tokens    int32 [b, T]          one caption per image: training draws caption floor(u * K)
                                    with u from (seed, stream position), like the augmentation,
                                    so a resumed run reads the same; evaluation takes caption 0
    captions  int32 [b, K, T]       every caption of the image (for ranking evaluations)
    label     int32 [b]             the zero-shot class: the digit, or the number of digits - 1
    mask      bool [b]              False on evaluation padding (all-zero rows, tokens all PAD)

`get_vocab` returns the `WordVocab`, and `zero_shot_prompts` the held-out prompts of each class.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
from absl import flags
from PIL import Image

from attn_jax.data import captions as captions_lib
from attn_jax.data import (
    dense,
    detr_multiscale,
    erasing,
    randaugment,
    sequences,
    sources,
    stream,
)
from attn_jax.data import text as text_lib
from attn_jax.data import transforms as T
from attn_jax.data.errors import DataConfigError
from attn_jax.data.registry import DatasetEntry, get_entry

DEFAULT_DATA_CONFIG: dict[str, Any] = {
    # Registry name: "sklearn_digits", "translated_digits", "distorted_digits" (embedded),
    # "cifar10", "imagenet2012" (tfds catalog); segmentation: "digit_scenes" (embedded),
    # "cityscapes" (catalog); detection: "digit_detection" (embedded), "coco" (catalog);
    # text: "dates", "reverse" (embedded), "wmt14_de_en", "wmt14_en_de" (tfds catalog);
    # image-text: "digit_captions", "scene_captions" (embedded).
    "name": "sklearn_digits",
    # tfds data dir; None: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
    "data_dir": None,
    # tfds split expressions ("train", "train[:90%]", "test", "validation", ...).
    "train_split": "train",
    "eval_split": "test",
    # Train-time augmentation of the registry entry (translate / crop_flip / inception_crop /
    # scale_crop for segmentation and detection).
    "augment": False,
    # Side of the square images fed to the model; None: the stored size (224 for ImageNet, 800
    # for coco, 768 for cityscapes).
    "image_size": None,
    # Keep the decoded split in memory; None: only for embedded datasets. Needs fixed-size images.
    "cache": None,
    # Threads computing batches ahead of the consumer; None: 0 when cached, else min(4, cores).
    "read_threads": None,
    # Batches computed ahead when read_threads > 0.
    "prefetch": 2,
    # grain worker processes (mp_prefetch) for heavy decoding, e.g. ImageNet; 0: none.
    "worker_count": 0,
    # Subword datasets (wmt14) only: tokens per source / target row including EOS (longer
    # sentences are cut); None: 128.
    "max_length": None,
    # Subword datasets (wmt14) only: sentencepiece vocabulary size; None: 32000.
    "vocab_size": None,
    # The DeiT/Swin ImageNet recipe (Touvron et al. 2021), on top of `augment=True`, for image
    # classification: RandAugment as timm's policy string, e.g. "rand-m9-mstd0.5-inc1" (DeiT's;
    # randaugment.py), 8-bit images only; None: none.
    "randaugment": None,
    # Probability of random erasing (erasing.py; DeiT: 0.25); 0: none.
    "random_erase": 0.0,
    # Resampling of resizes and crops ("bilinear" or "bicubic", DeiT's); None: "bilinear".
    "interpolation": None,
    # Mixup / CutMix Beta alphas (DeiT: 0.8 / 1.0); 0: off. Applied on the device by the train
    # step (mixing.py's `mix_batch`, arguments from `mix_options(config.data)`), not here.
    "mixup": 0.0,
    "cutmix": 0.0,
    # Probability of CutMix rather than Mixup when both are on, and of mixing a batch at all.
    "mix_switch_prob": 0.5,
    "mix_prob": 1.0,
    # Repeated augmentation (DeiT's RASampler, Hoffer et al. 2020): each training example comes
    # this many times per epoch, under different augmentations (DeiT: 3); 1: off.
    "repeated_augment": 1,
}

_OPTIONAL_TYPES = {
    "data_dir": str,
    "image_size": int,
    "cache": bool,
    "read_threads": int,
    "max_length": int,
    "vocab_size": int,
    "randaugment": str,
    "interpolation": str,
}


def data_config(**values: Any):
    """An ml_collections `config.data` group holding every data key, so that each one can be
    overridden from the command line; keys left out take `DEFAULT_DATA_CONFIG`'s values.

        c.data = data_config(name="cifar10", augment=True)
    """
    import ml_collections

    unknown = sorted(set(values) - set(DEFAULT_DATA_CONFIG))
    if unknown:
        raise DataConfigError(
            f"unknown data config keys {unknown}; valid keys: {', '.join(DEFAULT_DATA_CONFIG)}"
        )
    group = ml_collections.ConfigDict()
    for key, default in DEFAULT_DATA_CONFIG.items():
        value = values.get(key, default)
        if value is None:  # typed placeholder: None now, but `--config.data.key=v` is checked
            value = ml_collections.config_dict.placeholder(_OPTIONAL_TYPES[key])
        group[key] = value
    return group


# DeiT's ImageNet-1k training data (Touvron et al. 2021, Table 9), which Swin's configs (Liu et al.
# 2021) take over unchanged.
DEIT_DATA: dict[str, Any] = {
    "augment": True,
    "interpolation": "bicubic",
    "randaugment": "rand-m9-mstd0.5-inc1",
    "random_erase": 0.25,
    "mixup": 0.8,
    "cutmix": 1.0,
    "mix_switch_prob": 0.5,
}


def deit_data_config(**values: Any):
    """`data_config` with the DeiT/Swin data recipe (`DEIT_DATA`: bicubic random-resized crops
    and flips, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0
    switched at 0.5); `values` set the other keys and win over the recipe's.

        c.data = deit_data_config(name="imagenet2012", eval_split="validation", image_size=224)
    """
    return data_config(**{**DEIT_DATA, **values})


# Purposes folded into the random keys (stream.py's shuffle is 1, captions.py's choice 3).
_AUGMENT = 2
_RANDAUGMENT = 4
_ERASE = 5
_CENTER_CROP_FRACTION = 0.875
_INCEPTION_ATTEMPTS = 10


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the model and the trainer need to know about a dataset, without reading it.

    Attributes:
        name: registry name.
        num_classes: number of labels; 0 for text (see vocab_size). Segmentation counts every
            class id a pixel can have but `ignore_label` (digit_scenes: background + 10);
            detection counts the object classes, without DETR's "no object".
        image_shape: (H, W, C) of the images as the model sees them (after preprocessing); None
            for text.
        num_examples: examples per split: the registry's splits and the configured split
            expressions.
        mean: per-channel mean used for normalization ([0, 1] scale); () for text.
        std: per-channel standard deviation used for normalization ([0, 1] scale); () for text.
        kind: "image", "segmentation", "detection", "text" or "image_text".
        vocab_size: text: number of token ids, shared by inputs and targets (ids 0..3 are PAD,
            BOS, EOS, UNK); image_text: ids of the word vocabulary (PAD 0, EOT the largest, see
            captions.py); None for images.
        max_input_length: text: S, tokens per `inputs` row, EOS included.
        max_target_length: text: T, tokens per `targets` row, EOS included.
        length_buckets: text: edges e of the source-length buckets [e[i], e[i+1]) to report
            evaluations by; None: no buckets.
        ignore_label: segmentation: the class id of pixels that must not count; else None.
        max_boxes: detection: N, boxes per example (padded, `box_mask`); else None.
        instances: detection: whether batches carry the instance map `instances` (int32
            [H, W], 0 background, 1 + the box slot of the object on its pixels).
        text_length: image_text: T, tokens per caption row, SOT and EOT included; else None.
        num_captions: image_text: K, captions per image; else None.
        pad_multiple: detection with DETR's multi-scale recipe (coco): batches vary in shape, H
            and W being multiples of pad_multiple up to image_shape's (the largest batch shape);
            None: every batch has image_shape.
        element_spec: per-example (shape, dtype name) of every batch key but "mask"; the largest
            shape where pad_multiple is set.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int] | None
    num_examples: dict[str, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "image"
    vocab_size: int | None = None
    max_input_length: int | None = None
    max_target_length: int | None = None
    length_buckets: tuple[int, ...] | None = None
    ignore_label: int | None = None
    max_boxes: int | None = None
    instances: bool = False
    text_length: int | None = None
    num_captions: int | None = None
    pad_multiple: int | None = None

    @property
    def element_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        if self.kind == "text":
            return {
                "inputs": ((self.max_input_length,), "int32"),
                "targets": ((self.max_target_length,), "int32"),
                "length": ((), "int32"),
            }
        image = (tuple(self.image_shape), "float32")
        hw = tuple(self.image_shape[:2])
        if self.kind == "segmentation":
            return {"image": image, "segmentation": (hw, "int32")}
        if self.kind == "image_text":
            return {
                "image": image,
                "tokens": ((self.text_length,), "int32"),
                "captions": ((self.num_captions, self.text_length), "int32"),
                "label": ((), "int32"),
            }
        if self.kind == "detection":
            n = self.max_boxes
            spec = {
                "image": image,
                "pixel_mask": (hw, "bool"),
                "boxes": ((n, 4), "float32"),
                "labels": ((n,), "int32"),
                "box_mask": ((n,), "bool"),
                "size": ((2,), "int32"),
                "orig_size": ((2,), "int32"),
                "image_id": ((), "int32"),
            }
            if self.instances:
                spec["instances"] = (hw, "int32")
            return spec
        return {"image": image, "label": ((), "int32")}


@dataclasses.dataclass(frozen=True)
class _Options:
    name: str
    data_dir: str
    train_split: str
    eval_split: str
    augment: bool
    image_size: int | None
    cache: bool | None
    read_threads: int | None
    prefetch: int
    worker_count: int
    max_length: int | None
    vocab_size: int | None
    randaugment: str | None
    random_erase: float
    interpolation: str | None
    mixup: float
    cutmix: float
    mix_switch_prob: float
    mix_prob: float
    repeated_augment: int


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _options(data_cfg: Mapping[str, Any]) -> tuple[_Options, DatasetEntry]:
    cfg = dict(data_cfg)
    unknown = sorted(set(cfg) - set(DEFAULT_DATA_CONFIG))
    if unknown:
        raise DataConfigError(
            f"unknown data config keys {unknown}; valid keys: {', '.join(DEFAULT_DATA_CONFIG)}"
        )
    merged = {**DEFAULT_DATA_CONFIG, **{k: v for k, v in cfg.items() if v is not None}}
    entry = get_entry(merged["name"])
    size = merged["image_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise DataConfigError(f"config.data.image_size must be a positive int, got {size!r}")
    subword = entry.tokenizer == "sentencepiece"
    for key, least in (("max_length", 2), ("vocab_size", 16)):
        value = merged[key]
        if value is not None and not subword:
            raise DataConfigError(
                f"config.data.{key} applies to subword text datasets (wmt14_*) only, not to "
                f"{entry.name}; leave it None"
            )
        if value is not None and not (_positive_int(value) and value >= least):
            raise DataConfigError(f"config.data.{key} must be an int >= {least}, got {value!r}")
    if entry.kind == "text" and merged["augment"]:
        raise DataConfigError(
            f"{entry.name} is a text dataset: augmentation does not apply; set "
            "--config.data.augment=false"
        )
    if entry.kind == "text" and size is not None:
        raise DataConfigError(
            f"{entry.name} is a text dataset: config.data.image_size does not apply; leave it None"
        )
    _check_recipe(merged, entry)
    merged["data_dir"] = sources.resolve_data_dir(merged["data_dir"])
    merged["augment"] = bool(merged["augment"])
    return _Options(**merged), entry


_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _check_recipe(merged: dict[str, Any], entry: DatasetEntry) -> None:
    """The DeiT/Swin keys: valid values, and only where they apply."""
    for key in ("random_erase", "mix_switch_prob", "mix_prob"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise DataConfigError(
                f"config.data.{key} must be a probability in [0, 1], got {value!r}"
            )
    for key in ("mixup", "cutmix"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise DataConfigError(
                f"config.data.{key} must be a Beta alpha >= 0 (0: off), got {value!r}"
            )
    repeats = merged["repeated_augment"]
    if not _positive_int(repeats):
        raise DataConfigError(
            f"config.data.repeated_augment must be an int >= 1 (1: off), got {repeats!r}"
        )
    interpolation = merged["interpolation"]
    if interpolation is not None and interpolation not in _RESAMPLE:
        raise DataConfigError(
            f"config.data.interpolation must be one of {', '.join(_RESAMPLE)}, got "
            f"{interpolation!r}"
        )
    used = [
        key
        for key, off in (
            ("randaugment", None),
            ("random_erase", 0),
            ("mixup", 0),
            ("cutmix", 0),
            ("repeated_augment", 1),
        )
        if merged[key] != off
    ]
    if used and entry.kind != "image":
        raise DataConfigError(
            f"config.data.{used[0]} applies to image classification datasets, not to the "
            f"{entry.kind} dataset {entry.name}; leave it off"
        )
    if used and not merged["augment"]:
        raise DataConfigError(
            f"config.data.{used[0]} adds to the training augmentation: set "
            "--config.data.augment=true, or turn it off"
        )
    if merged["randaugment"] is not None:
        randaugment.parse_policy(merged["randaugment"])
        if entry.max_value != 255:
            raise DataConfigError(
                f"config.data.randaugment needs 8-bit images; {entry.name} has pixel values up "
                f"to {entry.max_value:g}; leave it None"
            )


def mix_options(data_cfg: Mapping[str, Any]) -> dict[str, float] | None:
    """The Mixup/CutMix keyword arguments of `mixing.mix_batch` that the data config asks for
    (mixup_alpha, cutmix_alpha, switch_prob, prob), or None when both alphas are 0.

        opts = data.mix_options(config.data)
        if opts: images, targets = mix_batch(images, labels, key, num_classes=K,
                                             label_smoothing=s, **opts)

    Raises:
        DataConfigError: a bad config.
    """
    opts, _ = _options(data_cfg)
    if not (opts.mixup or opts.cutmix):
        return None
    return {
        "mixup_alpha": float(opts.mixup),
        "cutmix_alpha": float(opts.cutmix),
        "switch_prob": float(opts.mix_switch_prob),
        "prob": float(opts.mix_prob),
    }


def _image_shape(entry: DatasetEntry, image_size: int | None) -> tuple[int, int, int]:
    size = image_size or entry.default_image_size
    if size is None:
        assert entry.image_shape is not None, entry
        return entry.image_shape
    return (size, size, entry.channels)


def dataset_info(data_cfg: Mapping[str, Any]) -> DatasetSpec:
    """The `DatasetSpec` of `data_cfg`, from the registry alone (reads no data).

    Raises:
        DataConfigError: unknown dataset, key or split, or a bad image size (also a ValueError).
    """
    opts, entry = _options(data_cfg)
    num_examples = dict(entry.splits)
    for split in (opts.train_split, opts.eval_split):
        num_examples[split] = sources.split_size(entry, split)
    if entry.kind == "text":
        s, t = sequences.sequence_lengths(entry, opts.max_length)
        return DatasetSpec(
            name=entry.name,
            num_classes=0,
            image_shape=None,
            num_examples=num_examples,
            mean=(),
            std=(),
            kind="text",
            vocab_size=_vocab_size(entry, opts),
            max_input_length=s,
            max_target_length=t,
            length_buckets=entry.length_buckets,
        )
    kind_fields = {}
    if entry.kind == "segmentation":
        kind_fields = {"kind": "segmentation", "ignore_label": entry.ignore_label}
    elif entry.kind == "detection":
        kind_fields = {
            "kind": "detection",
            "max_boxes": entry.max_boxes,
            "instances": bool(entry.instances_key),
        }
    elif entry.kind == "image_text":
        kind_fields = {
            "kind": "image_text",
            "vocab_size": captions_lib.VOCAB.size,
            "text_length": entry.text_length,
            "num_captions": entry.num_captions,
        }
    image_shape = _image_shape(entry, opts.image_size)
    if entry.augmentation == "detr_multiscale":
        recipe = detr_multiscale.make_recipe(image_shape[0])
        kind_fields["pad_multiple"] = recipe.pad_multiple
        image_shape = (recipe.max_padded, recipe.max_padded, entry.channels)
    return DatasetSpec(
        name=entry.name,
        num_classes=entry.num_classes,
        image_shape=image_shape,
        num_examples=num_examples,
        mean=entry.mean,
        std=entry.std,
        **kind_fields,
    )


def _vocab_size(entry: DatasetEntry, opts: _Options) -> int:
    if entry.tokenizer == "char":
        return sequences.load_vocab(entry.name, opts.data_dir, None).size
    return opts.vocab_size or entry.default_vocab_size


def get_vocab(
    data_cfg: Mapping[str, Any],
) -> text_lib.CharVocab | text_lib.SentencePieceVocab | captions_lib.WordVocab:
    """The vocabulary of a text dataset: `encode(str) -> list[int]` (no EOS), `decode(ids) ->
    str` (stops at EOS, skips PAD and BOS), and `size` (== dataset_info(data_cfg).vocab_size).

    For wmt14 this trains the sentencepiece model on first use (see sequences.py), so the
    dataset must be prepared. Image-text datasets have a `captions.WordVocab` (its own special
    ids: `pad_id`, `unk_id`, `mask_id`, `sot_id`, `eot_id`, and `tokenize(texts, length)`).

    Raises:
        DataConfigError: an image dataset or a bad config.
        DatasetNotFoundError: wmt14 not prepared.
    """
    opts, entry = _options(data_cfg)
    if entry.kind == "image_text":
        return captions_lib.VOCAB
    if entry.kind != "text":
        what = "an image" if entry.kind == "image" else f"a {entry.kind}"
        raise DataConfigError(f"{entry.name} is {what} dataset: it has no vocabulary")
    return sequences.load_vocab(entry.name, opts.data_dir, opts.vocab_size)


def zero_shot_prompts(data_cfg: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The held-out prompts of an image-text dataset's classes, for zero-shot classification.

    Returns:
        (tokens int32 [num_classes, M, T], class_names): the M rows of class k are every held-out
        template (never in a training caption) filled with every name of class k: its word and
        its numeral ("seven", "7"; "three digits", "3 digits"), row m = template m // 2, name
        m % 2; T = dataset_info(data_cfg).text_length. class_names[k] is the first name of class
        k. Averaging over the M prompts is the caller's business. Reads no data.

    Raises:
        DataConfigError: not an image-text dataset, or a bad config.
    """
    _, entry = _options(data_cfg)
    if entry.kind != "image_text":
        raise DataConfigError(
            f"{entry.name} is not an image-text dataset: it has no zero-shot prompts (use "
            "digit_captions or scene_captions)"
        )
    return captions_lib.zero_shot_prompts(entry)


class _Examples:
    """Random access to one split: (images, labels) for an array of indices."""

    def __init__(self, entry: DatasetEntry, split: str, opts: _Options):
        cache = entry.embedded if opts.cache is None else opts.cache
        self.in_memory = bool(cache)
        if self.in_memory:
            self._images, self._labels = sources.load_split_arrays(entry.name, split, opts.data_dir)
            self._source = None
            self._len = len(self._labels)
        else:
            self._source = sources.open_source(entry, split, opts.data_dir)
            self._len = len(self._source)
        self._fixed_shape = entry.image_shape is not None

    def __len__(self) -> int:
        return self._len

    def read(self, indices: np.ndarray) -> tuple[np.ndarray | list[Any], np.ndarray]:
        """Images ([N, H, W, C] uint8, or a list of encoded/variable images) and int32 labels."""
        if self.in_memory:
            return self._images[indices], self._labels[indices]
        examples = sources.read_examples(self._source, indices)
        if self._fixed_shape:
            return sources.stack_examples(examples)
        return [ex["image"] for ex in examples], np.asarray([ex["label"] for ex in examples])


class _BatchMaker:
    """Process `process_index`'s part of global batch k, as a function of k alone."""

    def __init__(
        self,
        entry: DatasetEntry,
        examples: _Examples,
        opts: _Options,
        *,
        train: bool,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
    ):
        self._entry = entry
        self._examples = examples
        self._train = train
        self._augment = train and opts.augment
        self._shape = _image_shape(entry, opts.image_size)
        self._size = self._shape[0]
        self._local = global_batch_size // process_count
        self._positions = stream.BatchPositions(
            len(examples),
            train=train,
            global_batch_size=global_batch_size,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            repeats=opts.repeated_augment if train else 1,
        )
        self._augment_key = T.fold_key(seed, _AUGMENT)
        self._resample = _RESAMPLE[opts.interpolation or "bilinear"]
        self._policy = None
        if self._augment and opts.randaugment is not None:
            self._policy = randaugment.parse_policy(opts.randaugment)
            fill = tuple(min(255, round(255 * m)) for m in entry.mean)  # timm's img_mean
            self._fill = fill[0] if len(fill) == 1 else fill
        self._erase = opts.random_erase if self._augment else 0.0
        self._randaugment_key = T.fold_key(seed, _RANDAUGMENT)
        self._erase_key = T.fold_key(seed, _ERASE)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        positions, valid, indices = self._positions(step)
        if not valid.any():  # this process's part of the last eval batch is all padding
            return {
                "image": np.zeros((self._local, *self._shape), np.float32),
                "label": np.zeros((self._local,), np.int32),
                "mask": valid,
            }
        images, labels = self._examples.read(indices)
        images = self._preprocess(images, positions[valid])
        if valid.all():
            return {"image": images, "label": labels.astype(np.int32), "mask": valid}
        image = np.zeros((self._local, *images.shape[1:]), np.float32)
        label = np.zeros((self._local,), np.int32)
        image[valid], label[valid] = images, labels
        return {"image": image, "label": label, "mask": valid}

    def _preprocess(self, images, positions: np.ndarray) -> np.ndarray:
        e = self._entry
        if e.augmentation == "inception_crop":
            images = self._crop_resize(images, positions)
        else:
            if self._augment:
                u = T.random_uniform(self._augment_key, positions, 3)
                images = T.translate(images, T.uniform_shifts(u[:, :2], e.max_shift))
                if e.augmentation == "crop_flip":
                    images = T.flip_left_right(images, u[:, 2] < 0.5)
            images = T.resize(images, self._size, self._resample)
        # DeiT's order: crop and flip, RandAugment on 8-bit pixels, normalize, erase.
        if self._policy is not None:
            u = T.random_uniform(self._randaugment_key, positions, self._policy.draws)
            images = randaugment.randaugment(
                images, u, self._policy, fill=self._fill, resample=self._resample
            )
        images = T.normalize(images, e.max_value, e.mean, e.std)
        if self._erase:
            images = erasing.random_erase(images, positions, self._erase_key, self._erase)
        return images

    def _crop_resize(self, images, positions: np.ndarray) -> np.ndarray:
        """Variable-size (possibly encoded) images -> uint8 [N, size, size, 3]."""
        out = np.empty((len(positions), self._size, self._size, 3), np.uint8)
        if not self._augment:
            box = lambda w, h: T.center_crop_box(w, h, _CENTER_CROP_FRACTION)
            for i, image in enumerate(images):
                out[i] = T.crop_resize(image, self._size, box, resample=self._resample)
            return out
        u = T.random_uniform(self._augment_key, positions, 4 * _INCEPTION_ATTEMPTS + 1)
        for i, image in enumerate(images):
            box = lambda w, h, ui=u[i, :-1]: T.inception_crop_box(w, h, ui)
            flip = bool(u[i, -1] < 0.5)
            out[i] = T.crop_resize(image, self._size, box, flip=flip, resample=self._resample)
        return out


class _ImageTextBatchMaker(_BatchMaker):
    """An image batch plus one caption per image (`tokens`) and all of them (`captions`)."""

    def __init__(self, entry: DatasetEntry, examples, opts: _Options, **kwargs: Any):
        super().__init__(entry, examples, opts, **kwargs)
        self._caption_key = captions_lib.caption_key(kwargs["seed"]) if self._train else None
        self._text_shape = (entry.num_captions, entry.text_length)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        positions, valid, indices = self._positions(step)
        b, (k, t) = self._local, self._text_shape
        batch = {
            "image": np.zeros((b, *self._shape), np.float32),
            "tokens": np.zeros((b, t), np.int32),
            "captions": np.zeros((b, k, t), np.int32),
            "label": np.zeros((b,), np.int32),
            "mask": valid,
        }
        if not valid.any():  # this process's part of the last eval batch is all padding
            return batch
        images, labels, captions = self._examples.read(indices)
        at = positions[valid]
        values = {
            "image": self._preprocess(images, at),
            "tokens": captions_lib.choose_captions(captions, at, self._caption_key),
            "captions": captions,
            "label": labels,
        }
        if valid.all():
            return {**values, "mask": valid}
        for key, value in values.items():
            batch[key][valid] = value
        return batch


def make_dataset(
    data_cfg: Mapping[str, Any],
    split: str,
    *,
    train: bool,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """The input pipeline of `split` for one process.

    Args:
        data_cfg: the data config (keys of `DEFAULT_DATA_CONFIG`; missing keys take defaults).
        split: tfds split expression, e.g. data_cfg.train_split.
        train: True: infinite, reshuffled each epoch, augmented if data_cfg.augment, mask all True.
            False: one pass in stored order, padded to whole batches with mask False.
        global_batch_size: examples per step over all processes.
        seed: seeds the shuffle and the augmentation (the run's seed).
        process_index: this process (jax.process_index()).
        process_count: number of processes (jax.process_count()).

    Returns:
        A grain IterDataset of dicts `image` float32 [b, H, W, C], `label` int32 [b], `mask`
        bool [b] (text: `inputs` int32 [b, S], `targets` int32 [b, T], `length` int32 [b],
        `mask` bool [b]; image-text: also `tokens` int32 [b, T] and `captions` int32 [b, K, T],
        see the module docstring; segmentation and detection: see dense.py and
        `dataset_info(data_cfg).element_spec`), b = global_batch_size // process_count; its
        iterator has JSON-serializable `get_state()` / `set_state()`.

    Raises:
        DataConfigError: bad config, split or batch size (also a ValueError).
        DatasetNotFoundError: a catalog dataset that is not prepared.
    """
    opts, entry = _options(data_cfg)
    if global_batch_size < 1 or global_batch_size % process_count:
        raise DataConfigError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"{process_count} processes"
        )
    if not 0 <= process_index < process_count:
        raise DataConfigError(f"process_index {process_index} not in [0, {process_count})")
    if train and global_batch_size % opts.repeated_augment:
        raise DataConfigError(
            f"global batch size {global_batch_size} must be a multiple of "
            f"config.data.repeated_augment={opts.repeated_augment} (each example fills that many "
            "slots of a batch)"
        )
    stream_kwargs = {
        "train": train,
        "global_batch_size": global_batch_size,
        "seed": seed,
        "process_index": process_index,
        "process_count": process_count,
    }
    if entry.kind == "text":
        sources.split_ranges(entry, split)  # a clear error for bad splits before reading
        examples = sequences.TextExamples(
            entry,
            split,
            opts.data_dir,
            cache=opts.cache,
            vocab_size=opts.vocab_size,
            max_length=opts.max_length,
        )
    elif entry.kind in dense.DENSE_KINDS:
        sources.split_ranges(entry, split)
        examples = dense.DenseExamples(entry, split, opts.data_dir, opts.cache)
    elif entry.kind == "image_text":
        sources.split_ranges(entry, split)
        examples = captions_lib.ImageTextExamples(entry, split, opts.data_dir, opts.cache)
    else:
        examples = _Examples(entry, split, opts)
    if len(examples) == 0:
        raise DataConfigError(f"split {split!r} of {entry.name} has no examples")
    if entry.kind == "text":
        maker = sequences.TextBatchMaker(examples, **stream_kwargs)
    elif entry.augmentation == "detr_multiscale":
        maker = detr_multiscale.MultiScaleBatchMaker(
            entry,
            examples,
            size=_image_shape(entry, opts.image_size)[0],
            augment=opts.augment,
            **stream_kwargs,
        )
    elif entry.kind in dense.DENSE_KINDS:
        maker = dense.DenseBatchMaker(
            entry,
            examples,
            size=_image_shape(entry, opts.image_size)[0],
            augment=opts.augment,
            **stream_kwargs,
        )
    elif entry.kind == "image_text":
        maker = _ImageTextBatchMaker(entry, examples, opts, **stream_kwargs)
    else:
        maker = _BatchMaker(entry, examples, opts, **stream_kwargs)
    num_batches = sys.maxsize if train else math.ceil(len(examples) / global_batch_size)
    threads = opts.read_threads
    if threads is None:
        threads = 0 if examples.in_memory else min(4, os.cpu_count() or 1)
    read_options = grain.ReadOptions(
        num_threads=threads, prefetch_buffer_size=opts.prefetch if threads else 0
    )
    ds = grain.MapDataset.range(num_batches).map(maker).to_iter_dataset(read_options)
    if opts.worker_count:
        # grain 0.2.18 reads an absl flag in its workers and fails unless flags were parsed, as
        # in scripts that do not run under absl.app (grain issue #1355); defaults are fine.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=opts.worker_count))
    return ds
