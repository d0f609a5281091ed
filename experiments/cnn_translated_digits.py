"""The convolutional baseline of experiments/ram_digits.py: a CNN on the whole 32x32 canvas of
translated digits (the "Conv" rows of Mnih et al. 2014, Table 1b), with about RAM's parameter
count (223,064 against 225,549) and the same data, batch, steps and optimizer.

  python launch.py train --config experiments/cnn_translated_digits.py

Two 3x3 conv-ReLU-max-pool stages (16 and 32 channels: 32x32 -> 8x8), a 106-unit ReLU layer, 10
logits (attn_jax/models/cnn.py, model "cnn"). Narrow convolutions keep the run within minutes on
2 CPU cores: a (32, 64, 64)-channel net of the same size costs about 5 times the FLOPs.
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "cnn_translated_digits",
        batch_size=128,
        total_steps=6000,
        eval_every=1000,
        target_metric="test/accuracy",
        log_every=100,
    )
    c.data = data_config(name="translated_digits", augment=False)

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.features = (16, 32)
    c.model.kernel_size = 3
    c.model.dense = 106
    c.model.dropout_rate = 0.0

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = adamw_config(1e-3, weight_decay=1e-4)
    return c
