"""Fine-tuning a masked-image-modeling encoder on 10% of the digit labels (the MAE recipe, small).

The classifier is a ViT with exactly the shape of the MIM encoders of experiments/mim_mae_digits.py
and experiments/mim_simmim_digits.py (patch 2, width 64, 4 blocks of 4 heads, MLP 128, MAE's fixed
2D sin-cos position embedding, class-token pooling), trained on the first 10% of the training split
(144 of 1,438 images) and evaluated on the full test split. `init_from` loads the pretraining
run's encoder (`init_from_prefix="encoder"`: the MIM models hold it under that name; their
decoder and mask token are ignored) and the head starts fresh (`init_from_fresh=("head",)`).
Layer-wise learning-rate decay (BEiT; MAE fine-tunes 12-block ViT-B with 0.65) lets the lower,
pretrained blocks move less than the head; with 4 blocks a milder 0.9 (the embedding learns at
0.9^5 = 0.59 of the head's rate) and a higher peak rate (5e-3) did best on a validation slice
(train[80%:]); scratch training did best at 2e-3 without decay.

  python launch.py train --config experiments/mim_finetune_digits.py \\
      --config.init_from=runs/mim_mae_digits --workdir runs/mim_finetune_mae
  python launch.py train --config experiments/mim_finetune_digits.py \\
      --config.init_from=runs/mim_simmim_digits --workdir runs/mim_finetune_simmim
  python launch.py train --config experiments/mim_finetune_digits.py --config.init_from= \\
      --config.optim.layer_decay=0 --config.optim.lr=2e-3 --workdir runs/mim_scratch  # baseline

`init_from` takes "<workdir>[:<step>]"; without a step the best checkpoint of that workdir, else its
latest.
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "mim_finetune_digits",
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
    c.data = data_config(name="sklearn_digits", augment=True, train_split="train[:10%]")

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
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.0
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.1

    c.optim = adamw_config(5e-3, weight_decay=0.05, warmup_steps=50, grad_clip_norm=1.0)
    c.optim.layer_decay = 0.9
    return c
