"""Swin Transformer on ImageNet-1k (ILSVRC-2012) from scratch, Liu et al. 2021, sec. 4.1.

Variants T/S/B/L decode through `SWIN_VARIANTS` (sec. 3.3); fields set here or on the command
line override the variant's values.

  python launch.py info --config experiments/swin_imagenet.py --config.model.variant=T
  python launch.py train --config experiments/swin_imagenet.py --config.data.data_dir=/data/tfds

The recipe of the official configs: AdamW, batch 1024, lr 1e-3 (5e-4 per 512 images), weight
decay 0.05 (not on biases, norms or relative-position tables: the by-kind mask), 20 warmup epochs,
cosine decay to 1e-5 / lr, gradient clipping at 5, label smoothing 0.1, 300 epochs; the data
recipe of its config (timm's): bicubic random-resized crops and flips, RandAugment
rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0 (switch 0.5) mixed on the
device. Needs imagenet2012 prepared as array_record (README, "Real datasets") and accelerators.

Variant `finetune` (`--config experiments/swin_imagenet.py:finetune`): Swin-T fine-tuned at 384 px
with window 12 from a downloaded timm Swin-T (window 7, 224 px): set `--config.init_from` to its
directory or state dict (the default `weights/swin_tiny_patch4_window7_224` is a placeholder to
replace). The whole model is loaded, head included (both 1000 classes; an ImageNet-22k checkpoint
needs `--config.init_from_fresh='("head",)'`), each 13x13 relative-position table resized
bicubically to 23x23 (attn_jax/pretrained/resample.py). The official fine-tuning config
(swin_*_window12_384_finetune.yaml): 30 epochs, 5 of warmup, AdamW lr 2e-5 per 512 images (4e-5
at batch 1024) with cosine decay to 1/100 of it, weight decay 1e-8, the same data recipe.
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import deit_data_config

VARIANTS = ("scratch", "finetune")


def get_config(variant: str = "scratch") -> ml_collections.ConfigDict:
    c = run_config(
        "swin_imagenet",
        batch_size=1024,
        total_steps=0,
        eval_every=5000,
        target_metric="validation/accuracy",
        validation_split="validation",  # imagenet2012's own; its test split has no labels
        test_split=None,
        eval_batch_size=1024,
        log_every=100,
    )
    c.num_epochs = 300
    c.data = deit_data_config(name="imagenet2012", eval_split="validation", image_size=224)

    c.model = ml_collections.ConfigDict()
    c.model.name = "swin"
    c.model.variant = "T"
    c.model.num_classes = 1000
    c.model.embed_dim = ml_collections.config_dict.placeholder(int)
    c.model.window = 7
    c.model.drop_path_rate = ml_collections.config_dict.placeholder(float)  # None: the variant's
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.1

    # 20 of 300 epochs of 1,251 steps of 1024 images.
    c.optim = adamw_config(
        1e-3, weight_decay=0.05, warmup_steps=25_020, end_lr_factor=0.01, grad_clip_norm=5.0
    )
    if variant == "finetune":
        _finetune(c)
    return c


def _finetune(c: ml_collections.ConfigDict) -> None:
    """Swin-T from 224 px / window 7 to 384 px / window 12 (module docstring)."""
    c.experiment = "swin_imagenet_finetune"
    c.init_from = "weights/swin_tiny_patch4_window7_224"  # placeholder: a downloaded timm Swin
    c.init_into = ""  # the whole model
    c.init_from_fresh = ()
    c.num_epochs = 30
    c.data.image_size = 384
    c.model.window = 12
    # 5 of 30 epochs of 1,251 steps of 1024 images.
    c.optim = adamw_config(
        4e-5, weight_decay=1e-8, warmup_steps=6_255, end_lr_factor=0.01, grad_clip_norm=5.0
    )
