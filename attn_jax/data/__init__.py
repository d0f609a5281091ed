"""Datasets and input pipelines: tfds builders of the embedded datasets (one folder each), the
dataset registry, and grain pipelines that yield fixed-shape numpy batches.

    spec = data.dataset_info(config.data)            # DatasetSpec, reads no data
    ds = data.make_dataset(config.data, "train", train=True, global_batch_size=128, seed=0)
    it = iter(ds); batch = next(it)                 # {"image", "label", "mask"}
    state = it.get_state()                           # JSON-serializable, for checkpoints

Text datasets (dates, reverse, wmt14_de_en, wmt14_en_de) yield {"inputs", "targets", "length",
"mask"}; `data.get_vocab(config.data)` decodes their token ids. Segmentation datasets
(digit_scenes, cityscapes) yield {"image", "segmentation", "mask"}, detection datasets
(digit_detection, coco) {"image", "pixel_mask", "boxes", "labels", "box_mask", "size",
"orig_size", "image_id", "mask"}: see dense.py, and `dataset_info(...).element_spec`; coco's
follow DETR's multi-scale recipe (detr_multiscale.py), their H and W varying from batch to batch
among a few bucketed shapes (`dataset_info(...).pad_multiple`).
Image-text datasets (digit_captions, scene_captions) yield {"image", "tokens", "captions",
"label", "mask"} (see pipeline.py); `get_vocab` gives their word vocabulary and
`data.zero_shot_prompts(config.data)` the held-out prompts of each class, tokenized.

`prepare(name, data_dir)` builds an embedded dataset ahead of time (it also happens on first
use) or checks that a catalog dataset is prepared. See pipeline.py for the data config keys.

The DeiT/Swin recipe (`deit_data_config(...)` sets it): `randaugment`, `random_erase`,
`interpolation` and `repeated_augment` act in the pipeline (randaugment.py, erasing.py,
stream.py); Mixup/CutMix act on the device, in the train step: `mixing.mix_batch(images,
labels, key, num_classes=K, label_smoothing=s, **data.mix_options(config.data))` (mix_options is
None when they are off).
"""

from attn_jax.data.errors import DataConfigError, DatasetNotFoundError
from attn_jax.data.pipeline import (
    DEFAULT_DATA_CONFIG,
    DEIT_DATA,
    DatasetSpec,
    data_config,
    dataset_info,
    deit_data_config,
    get_vocab,
    make_dataset,
    mix_options,
    zero_shot_prompts,
)
from attn_jax.data.registry import REGISTRY, DatasetEntry, get_entry
from attn_jax.data.sources import is_prepared, prepare, resolve_data_dir

__all__ = [
    "DEFAULT_DATA_CONFIG",
    "DEIT_DATA",
    "REGISTRY",
    "DataConfigError",
    "DatasetEntry",
    "DatasetNotFoundError",
    "DatasetSpec",
    "data_config",
    "dataset_info",
    "deit_data_config",
    "get_entry",
    "get_vocab",
    "is_prepared",
    "make_dataset",
    "mix_options",
    "prepare",
    "resolve_data_dir",
    "zero_shot_prompts",
]
