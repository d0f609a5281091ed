"""The plain CNN baseline of experiments/stn_digits.py: the same classifier, data, optimizer and
budget without the spatial transformer in front (Jaderberg et al. 2015, Table 1, "CNN" against
"ST-CNN"), on distorted digits (attn_jax/data/distorted_digits: scikit-learn's digits rotated by
+-45 degrees, scaled by 0.7..1.2 and moved by up to 4 pixels on a 24x24 canvas, the paper's "RTS").

Two conv-ReLU-max-pool stages (32 and 64 channels, 3x3), a 128-unit ReLU layer, 10 logits
(attn_jax/models/cnn.py); 2,000 steps of 64 (about 22 epochs of the 5,752 training canvases).

  python launch.py train --config experiments/cnn_digits.py --workdir runs/cnn_digits
  python launch.py train --config experiments/cnn_digits.py --workdir runs/cnn_digits_s1 \
      --config.seed=1
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "cnn_digits",
        batch_size=64,
        total_steps=2000,
        eval_every=500,
        target_metric="test/accuracy",
        log_every=100,
    )
    c.data = data_config(name="distorted_digits", augment=False)

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.features = (32, 64)
    c.model.kernel_size = 3
    c.model.dense = 128
    c.model.dropout_rate = 0.0

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = adamw_config(1e-3, weight_decay=1e-4)
    return c
