"""Linear probe of a masked-image-modeling encoder: the encoder frozen, only the head trained.

The ViT of experiments/mim_finetune_digits.py loads the pretraining run's encoder
(`init_from_prefix="encoder"`, head fresh) and `optim.lr_multipliers={"": 0.0, "head": 1.0}`
freezes every parameter but the head (the empty pattern matches every path; the longer "head" wins
for the head): no update, no weight decay, no optimizer state. Dropout is off, since the frozen
encoder's features are what is measured. The probe reads the class token after the final
LayerNorm; 10% of the training labels by default, `--config.data.train_split=train` for all.
The head's rate was picked on a validation slice (train[80%:]): 3e-2 for the MAE encoder (3e-3 to
1e-1 all within a percent), 3e-1 for SimMIM's (1e-2: 44%, 1e-1: 57%, 3e-1: 58% on that slice).

  python launch.py train --config experiments/mim_linear_probe_digits.py \\
      --config.init_from=runs/mim_mae_digits --workdir runs/mim_probe_mae
  python launch.py train --config experiments/mim_linear_probe_digits.py \\
      --config.init_from=runs/mim_mae_digits --config.data.train_split=train \\
      --workdir runs/mim_probe_mae_all
  python launch.py train --config experiments/mim_linear_probe_digits.py \\
      --config.init_from=runs/mim_simmim_digits --config.optim.lr=0.3 \\
      --workdir runs/mim_probe_simmim
"""

import ml_collections

from experiments.mim_finetune_digits import get_config as finetune_config


def get_config() -> ml_collections.ConfigDict:
    # The fine-tuning classifier and its data, with the encoder frozen and no regularization.
    c = finetune_config()
    c.experiment = "mim_linear_probe_digits"
    c.data.augment = False
    c.model.dropout_rate = 0.0
    c.task.label_smoothing = 0.0
    c.optim.lr = 3e-2
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 0.0
    c.optim.layer_decay = 0.0
    c.optim.lr_multipliers = {"": 0.0, "head": 1.0}
    return c
