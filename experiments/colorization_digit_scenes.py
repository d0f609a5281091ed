"""Colorization pretraining (Zhang, Isola, Efros 2016) on the coloured digit scenes, labels unused.

`color_digit_scenes` (attn_jax/data/color_digits/) colours the 64x64 scenes of digit_scenes: one
background colour per scene (hue uniform), each digit's ink in the hue of its class (+-12 degrees),
lightness L* an affine map of the grayscale scene. The model sees L* (standardized with the
training scenes' mean 30.21 and standard deviation 13.29, which the data tests recompute) and
predicts a*b* at every pixel: a ViT encoder (8x8 patches, width 64, 4 blocks of 4 heads, MLP 128,
fixed 2D sin-cos positions) and SimMIM's linear per-patch head (attn_jax/models/pretext.py). The
loss is the L2 regression of a*b* (Zhang et al.'s eq. 1 baseline; attn_jax/tasks/colorization.py
says why not their rebalanced classification); evaluation reports the mean colour error Delta E*ab
per pixel. Pretraining reads train[:90%]; the best checkpoint is chosen on train[90%:].

The encoder's patches are 8x8 here (64 tokens per scene); patches of 2 would give 1,024 tokens,
too slow for CPUs. For features that the digit classifiers of experiments/mim_transfer_digits.py
load, experiments/colorization_digits.py colours the 8x8 digits themselves with an encoder of the
masked-image-modeling shape.

  python launch.py train --config experiments/colorization_digit_scenes.py \\
      --workdir runs/colorization_digit_scenes

Measured (2026-12-04, 14 min on 2 CPU cores shared with the test suite): test colour error 23.4 at
step 500, chosen on validation (23.5), and flat to step 2,000; predicting grey (a*b* = 0) everywhere
errs by 23.3 on the same test scenes. The L2 regression learns nothing beyond grey here: the
background's hue is random per scene and covers most pixels, and the digits' class colours are not
picked up within this budget. Not solved (issue 20).
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "colorization_digit_scenes",
        batch_size=64,
        total_steps=2000,
        eval_every=500,
        target_metric="validation/color_error",
        target_mode="min",
        eval_batch_size=250,
        log_every=50,
    )
    c.data = data_config(name="color_digit_scenes", train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "colorizer"
    c.model.out_channels = 2  # a*b*
    c.model.encoder = ml_collections.ConfigDict()  # the ViT encoder's fields
    c.model.encoder.patch_size = 8
    c.model.encoder.hidden_size = 64
    c.model.encoder.depth = 4
    c.model.encoder.num_heads = 4
    c.model.encoder.mlp_dim = 128
    c.model.encoder.dropout_rate = 0.0
    c.model.encoder.posemb = "sincos2d"
    c.model.encoder.pool = "token"
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "colorization"
    c.task.loss = "l2"
    # L* of the training scenes: 25 + 60 * 0.08689243 and 60 * 0.22145666 (the grayscale scenes'
    # statistics through L* = 25 + 60 g / 255; tests/data/test_color_digits.py recomputes them).
    c.task.lightness_mean = 30.2135
    c.task.lightness_std = 13.2874

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=200, b2=0.95)
    return c
