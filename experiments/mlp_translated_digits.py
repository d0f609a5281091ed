"""The fully connected baseline of experiments/ram_digits.py: an MLP on the whole 32x32 canvas of
translated digits (the "FC" rows of Mnih et al. 2014, Table 1b), with about RAM's parameter count
(222,794 against 225,549) and the same data, batch, steps and optimizer.

  python launch.py train --config experiments/mlp_translated_digits.py

Two ReLU layers of 192 and 128 units, 10 logits (attn_jax/models/cnn.py, model "mlp").
"""

import ml_collections

from attn_jax.config import run_config
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

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.end_lr_factor = 0.0
    c.optim.grad_clip_norm = 1.0
    c.optim.grad_accum_steps = 1
    return c
