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

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "mim_linear_probe_digits",
        batch_size=64,
        total_steps=1000,
        eval_every=250,
        target_metric="test/accuracy",
        eval_batch_size=512,
        log_every=50,
    )
    c.init_from = "runs/mim_mae_digits"  # experiments/mim_mae_digits.py's workdir
    c.init_from_prefix = "encoder"
    c.init_from_fresh = ("head",)
    c.data = data_config(name="sklearn_digits", augment=False, train_split="train[:10%]")

    c.model = ml_collections.ConfigDict()
    c.model.name = "vit"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.patch_size = 2
    c.model.hidden_size = 64
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.posemb = "sincos2d"
    c.model.pool = "token"
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = adamw_config(3e-2, weight_decay=0.0, warmup_steps=50, grad_clip_norm=0.0)
    c.optim.lr_multipliers = {"": 0.0, "head": 1.0}
    return c
