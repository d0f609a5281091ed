"""A spatial transformer network (Jaderberg et al. 2015, sec. 4.1, "ST-CNN Aff") and its plain CNN
baseline (Table 1, "CNN" against "ST-CNN") on distorted digits (attn_jax/data/distorted_digits:
scikit-learn's digits rotated by +-45 degrees, scaled by 0.7..1.2 and moved by up to 4 pixels on a
24x24 canvas, the paper's "RTS"), with the same classifier, data, optimizer and budget.

  stn  The CNN behind an affine spatial transformer whose localisation net (two 5x5
       conv-ReLU-max-pool stages of 8 and 16 channels, a 32-unit ReLU layer, 6 outputs
       initialised to the identity) learns to undo the rotation, scale and translation before
       the classifier sees the digit. Writes plots/stn_transforms.png: eval canvases (top) and
       what the classifier sees (bottom).
  cnn  The classifier alone: two conv-ReLU-max-pool stages (32 and 64 channels, 3x3), a
       128-unit ReLU layer, 10 logits (attn_jax/models/cnn.py).

2,000 steps of 64 (about 25 epochs of train[:5176], the 4 canvases of each of the first 1,294
training digits); the best checkpoint is chosen on the held-out train[5176:] (the other 144
digits) and test is reported at that step.

  python launch.py train --config experiments/stn_digits.py:stn --workdir runs/stn_digits
  python launch.py train --config experiments/stn_digits.py:cnn --workdir runs/cnn_digits
  python launch.py train --config experiments/stn_digits.py:stn --workdir runs/stn_digits_s1 \\
      --config.seed=1
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config

VARIANTS = ("stn", "cnn")


def get_config(variant: str = "stn") -> ml_collections.ConfigDict:
    c = run_config(
        f"{variant}_digits",
        batch_size=64,
        total_steps=2000,
        eval_every=500,
        target_metric="validation/accuracy",
        log_every=100,
    )
    # Four consecutive copies per digit: the first 1,294 digits (sklearn_digits' train[:90%]),
    # held out as whole digits, where a percent slice would cut one digit's copies.
    c.data = data_config(name="distorted_digits", augment=False, train_split="train[:5176]")
    c.evals.validation.split = "train[5176:]"

    c.model = ml_collections.ConfigDict()
    c.model.name = variant
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.features = (32, 64)
    c.model.kernel_size = 3
    c.model.dense = 128
    c.model.dropout_rate = 0.0
    if variant == "stn":
        c.model.loc_features = (8, 16)
        c.model.loc_kernel_size = 5
        c.model.loc_dense = 32

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = adamw_config(1e-3, weight_decay=1e-4)
    return c
