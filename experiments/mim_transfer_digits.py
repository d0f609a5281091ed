"""A masked-image-modeling encoder (experiments/mim_digits.py) transferred to digit classification
on 10% of the labels (the MAE recipes, small).

  finetune      Every parameter trained. The classifier is a ViT with exactly the shape of the
                MIM encoders (patch 2, width 64, 4 blocks of 4 heads, MLP 128, MAE's fixed 2D
                sin-cos position embedding, class-token pooling). Layer-wise learning-rate decay
                (BEiT; MAE fine-tunes 12-block ViT-B with 0.65) lets the lower, pretrained blocks
                move less than the head; with 4 blocks a milder 0.9 (the embedding learns at
                0.9^5 = 0.59 of the head's rate) and a higher peak rate (5e-3) did best on a
                validation slice; scratch training did best at 2e-3 without decay.
  linear_probe  The encoder frozen, only the head trained: `optim.lr_multipliers={"": 0.0,
                "head": 1.0}` (the empty pattern matches every path; the longer "head" wins for
                the head): no update, no weight decay, no optimizer state. Dropout, label
                smoothing and augmentation are off, since the frozen encoder's features are what
                is measured; the probe reads the class token after the final LayerNorm. The
                head's rate: 3e-2 for the MAE encoder (3e-3 to 1e-1 all within a percent), 3e-1
                for SimMIM's (1e-2: 44%, 1e-1: 57%, 3e-1: 58% on a validation slice).

Both train on the first 10% of the training split (144 of 1,438 images; `--config.data.
train_split=train[:90%]` for all the labels that are not held out), choose the best checkpoint on
the held-out train[90%:] and report the full test split at that step. `init_from` loads the
pretraining run's encoder (`init_from_prefix="encoder"`: the MIM models hold it under that name;
their decoder and mask token are ignored) and the head starts fresh (`init_from_fresh=("head",)`);
it takes "<workdir>[:<step>]", without a step the best checkpoint of that workdir, else its latest.
experiments/jigsaw_digits.py's encoder loads too (`--config.init_from_prefix=`).

  python launch.py train --config experiments/mim_transfer_digits.py:finetune \\
      --config.init_from=runs/mim_mae_digits --workdir runs/mim_finetune_mae
  python launch.py train --config experiments/mim_transfer_digits.py:finetune \\
      --config.init_from=runs/mim_simmim_digits --workdir runs/mim_finetune_simmim
  python launch.py train --config experiments/mim_transfer_digits.py:finetune --config.init_from= \\
      --config.optim.layer_decay=0 --config.optim.lr=2e-3 --workdir runs/mim_scratch  # baseline
  python launch.py train --config experiments/mim_transfer_digits.py:linear_probe \\
      --config.init_from=runs/mim_mae_digits --workdir runs/mim_probe_mae
  python launch.py train --config experiments/mim_transfer_digits.py:linear_probe \\
      --config.init_from=runs/mim_simmim_digits --config.optim.lr=0.3 \\
      --workdir runs/mim_probe_simmim
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config

VARIANTS = ("finetune", "linear_probe")


def get_config(variant: str = "finetune") -> ml_collections.ConfigDict:
    probe = variant == "linear_probe"
    c = run_config(
        f"mim_{variant}_digits",
        batch_size=64,
        total_steps=1000,
        eval_every=250,
        target_metric="validation/accuracy",
        eval_batch_size=512,
        log_every=50,
    )
    c.init_from = "runs/mim_mae_digits"  # experiments/mim_digits.py:mae's workdir
    c.init_from_prefix = "encoder"
    c.init_from_fresh = ("head",)
    # Labels of 10% of train; the held-out validation part, train[90%:], lies outside it.
    c.data = data_config(name="sklearn_digits", augment=not probe, train_split="train[:10%]")

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
    c.model.dropout_rate = 0.0 if probe else 0.1
    c.model.attention_dropout_rate = 0.0
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0 if probe else 0.1

    if probe:
        c.optim = adamw_config(3e-2, weight_decay=0.0, warmup_steps=50, grad_clip_norm=0.0)
        c.optim.lr_multipliers = {"": 0.0, "head": 1.0}
    else:
        c.optim = adamw_config(5e-3, weight_decay=0.05, warmup_steps=50, grad_clip_norm=1.0)
        c.optim.layer_decay = 0.9
    return c
