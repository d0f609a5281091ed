"""The Recurrent Attention Model (Mnih et al. 2014) on translated digits, and its baselines: 16x16
digits at random positions on a 32x32 canvas (attn_jax/data/translated_digits).

  ram  Classified after a few glimpses of 8x8 pixels at 3 scales (8, 16 and 32 pixels), trained
       with the hybrid loss (cross-entropy + REINFORCE with a learned baseline,
       attn_jax/tasks/reinforce.py).
  cnn  The "Conv" rows of Mnih et al. 2014, Table 1b, on the whole canvas, with about RAM's
       parameter count (223,064 against 225,549): two 3x3 conv-ReLU-max-pool stages (16 and 32
       channels: 32x32 -> 8x8), a 106-unit ReLU layer, 10 logits (attn_jax/models/cnn.py).
       Narrow convolutions keep the run within minutes on 2 CPU cores: a (32, 64, 64)-channel
       net of the same size costs about 5 times the FLOPs.
  mlp  The "FC" rows, with about RAM's parameter count (222,794): two ReLU layers of 192 and 128
       units, 10 logits.

All three read train[:5176] (the 4 canvases of each of the first 1,294 training digits) with the
same batch, steps and optimizer; the best checkpoint is chosen on the held-out train[5176:] (the
other 144 digits) and test is reported at that step.

  python launch.py train --config experiments/ram_digits.py:ram
  python launch.py train --config experiments/ram_digits.py:cnn
  python launch.py train --config experiments/ram_digits.py:mlp
  python launch.py sweep --config experiments/ram_digits.py \
      --sweep config.model.num_glimpses=1,2,4,6        # test accuracy against the glimpses

Measured before the held-out split (seed 0, 6,000 steps of 128 on all of train, selected on
test, 718 test canvases): test accuracy 94.6 / 97.4 / 97.1 /
97.4% with 1 / 2 / 4 / 6 glimpses; with --config.model.num_scales=2 (the retina no longer covers
the canvas) 88.0 / 97.2 / 97.6 / 97.8%. Same data and budget: MLP 85.4%, CNN 94.3%.

Writes plots/glimpse_paths.png (eval canvases with each glimpse's patches and the path).
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config

VARIANTS = ("ram", "cnn", "mlp")


def get_config(variant: str = "ram") -> ml_collections.ConfigDict:
    c = run_config(
        "ram_digits" if variant == "ram" else f"{variant}_translated_digits",
        batch_size=128,
        total_steps=6000,
        eval_every=1000,
        target_metric="validation/accuracy",
        log_every=100,
    )
    # Four consecutive copies per digit: the first 1,294 digits (sklearn_digits' train[:90%]),
    # held out as whole digits, where a percent slice would cut one digit's copies.
    c.data = data_config(name="translated_digits", augment=False, train_split="train[:5176]")
    c.evals.validation.split = "train[5176:]"

    c.model = ml_collections.ConfigDict()
    c.model.name = variant
    if variant == "ram":
        c.model.variant = ml_collections.config_dict.placeholder(str)
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    if variant == "cnn":
        c.model.features = (16, 32)
        c.model.kernel_size = 3
        c.model.dense = 106
        c.model.dropout_rate = 0.0
    elif variant == "mlp":
        c.model.hidden = (192, 128)
        c.model.dropout_rate = 0.0
    else:
        c.model.num_glimpses = 6
        c.model.glimpse_size = 8
        c.model.num_scales = 3
        c.model.scale = 2
        c.model.glimpse_hidden = 128
        c.model.location_hidden = 128
        c.model.glimpse_features = 256
        c.model.hidden_size = 256
        c.model.core = "rnn"
        c.model.location_std = 0.1
        c.model.policy_gradient_to_core = False

    c.task = ml_collections.ConfigDict()
    c.task.label_smoothing = 0.0
    if variant == "ram":
        c.task.name = "reinforce"
        c.task.reinforce_weight = 1.0
        c.task.baseline_weight = 1.0
    else:
        c.task.name = "classification"

    c.optim = adamw_config(1e-3, weight_decay=1e-4)
    return c
