"""A small Swin Transformer on scikit-learn's handwritten digits, upsampled (embedded dataset).

The 8x8 digits are resized to 32x32 so that the hierarchy has room: 2x2 patches give a 16x16 map,
windows of 4x4 tokens (shifted by 2 in every second block), and two patch mergings take the map to
8x8 and 4x4 (the last stage is one window, where shifting is moot and is skipped). Three stages of
width 48/96/192 with 2 blocks each, heads 2/4/8: 1,267,286 parameters.

  python launch.py train --config experiments/swin_digits.py
  python launch.py train --config experiments/swin_digits.py --config.model.window=8
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "swin_digits",
        batch_size=128,
        total_steps=0,
        eval_every=300,
        target_metric="validation/accuracy",
        eval_batch_size=512,
        log_every=20,
    )
    c.num_epochs = 100
    c.data = data_config(
        name="sklearn_digits", augment=True, image_size=32, train_split=TRAIN_WITHOUT_VALIDATION
    )

    c.model = ml_collections.ConfigDict()
    c.model.name = "swin"
    c.model.variant = ml_collections.config_dict.placeholder(str)
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.patch_size = 2
    c.model.embed_dim = 48
    c.model.depths = (2, 2, 2)
    c.model.num_heads = (2, 4, 8)
    c.model.window = 4
    c.model.drop_path_rate = 0.1
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.1

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=100, grad_clip_norm=1.0)
    return c
