"""A small ResNet (He et al. 2016) on scikit-learn's 8x8 handwritten digits: the plain baseline of
the four convolutional attention experiments (se_resnet_digits, nonlocal_digits, aaconv_digits),
which change one model field each and keep this budget.

The "digits" preset: the CIFAR-style stem (one 3x3 convolution, no max-pool, sec. 4.2 of the paper)
and three stages of two basic blocks, widths 32/64/128 on 8x8, 4x4 and 2x2 maps; group norm with 8
groups, with which the README's figures were measured (`--config.model.norm=batch` trains the
papers' batch norm instead, its running statistics carried by the trainer; see
attn_jax/models/resnet.py).

  python launch.py train --config experiments/resnet_digits.py --workdir runs/resnet_digits
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def model_config() -> ml_collections.ConfigDict:
    """The ResNet shared by the four digits experiments; each variant sets one more field."""
    m = ml_collections.ConfigDict()
    m.name = "resnet"
    m.variant = "digits"
    m.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    m.stage_sizes = (2, 2, 2)
    m.width = 32
    m.norm = "group"  # or "batch" (the ResNet presets' default)
    m.norm_groups = 8
    m.zero_init_residual = True
    # The attention options, off here, so that each can be switched on from the command line.
    m.block_attention = "none"  # or "se"
    m.se_reduction = 8
    m.non_local_stages = ()
    m.non_local_mode = "embedded_gaussian"
    m.non_local_subsample = False
    m.aa_stages = ()
    m.aa_key_fraction = 0.5
    m.aa_value_fraction = 0.25
    m.aa_heads = 4
    m.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters and norms
    return m


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "resnet_digits",
        batch_size=64,
        total_steps=1500,
        eval_every=500,
        target_metric="validation/accuracy",
    )
    c.data = data_config(name="sklearn_digits", augment=True, train_split=TRAIN_WITHOUT_VALIDATION)
    c.model = model_config()

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.1

    c.optim = adamw_config(2e-3, weight_decay=0.05)
    return c
