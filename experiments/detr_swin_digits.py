"""DETR (Carion et al. 2020) with a Swin Transformer backbone (Liu et al. 2021) on the embedded
digit scenes: the same detection task and transformer as experiments/detr_digits.py, with the
ResNet replaced by a two-stage Swin of the same strides ("swin_digits" preset of DETR_VARIANTS:
4x4 patches, windows of 4, widths 32 and 64, depths 2-2; an 8x8 map from the 64x64 scenes,
layer-normed before DETR's input projection). Compare with the ResNet of detr_digits.py:

  python launch.py train --config experiments/detr_swin_digits.py

plots/detections.png draws the predicted boxes next to the ground truth.

Measured: not yet (the full run is as long as detr_digits', about an hour on 2 CPU cores).
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "detr_swin_digits",
        batch_size=64,
        total_steps=20_000,
        eval_every=2_000,
        target_metric="validation/AP50",
        eval_batch_size=256,
        log_every=100,
    )
    c.data = data_config(name="digit_detection", augment=True, train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "detr"
    c.model.variant = "swin_digits"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: the dataset's (10)
    c.model.num_queries = 10
    c.model.dropout_rate = 0.1
    # Swin fields over the preset's (patch_size, window, embed_dim, depths, num_heads, ...).
    c.model.backbone_swin = ml_collections.ConfigDict()
    c.model.backbone_swin.drop_path_rate = 0.1
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "detection"
    c.task.eos_coef = 0.1
    c.task.aux_loss = True

    c.optim = adamw_config(3e-4, weight_decay=1e-4, warmup_steps=500, grad_clip_norm=0.1)
    return c
