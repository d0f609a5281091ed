"""The fully connected baseline of experiments/ram_digits.py: an MLP on the whole 32x32 canvas of
translated digits (the "FC" rows of Mnih et al. 2014, Table 1b), with about RAM's parameter count
(222,794 against 225,549) and the same data, batch, steps and optimizer.

  python launch.py train --config experiments/mlp_translated_digits.py

Two ReLU layers of 192 and 128 units, 10 logits (attn_jax/models/cnn.py, model "mlp").
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "mlp_translated_digits",
        batch_size=128,
        total_steps=6000,
        eval_every=1000,
        target_metric="test/accuracy",
        log_every=100,
    )
    c.data = data_config(name="translated_digits", augment=False)

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.hidden = (192, 128)
    c.model.dropout_rate = 0.0

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = adamw_config(1e-3, weight_decay=1e-4)
    return c
