"""Jigsaw-puzzle pretraining (Noroozi & Favaro 2016) on scikit-learn's handwritten digits, labels
unused.

Each 8x8 digit is cut into 2x2 tiles of 4x4 pixels, the tiles are reordered by one of all 24
permutations (their minimal Hamming distance is 2; attn_jax/tasks/jigsaw.py), and a ViT predicts
which permutation it was. The ViT has exactly the shape of the masked-image-modeling encoders
(patch 2, width 64, 4 blocks of 4 heads, MLP 128, MAE's fixed 2D sin-cos position embedding, a
class token), so experiments/mim_transfer_digits.py (finetune, linear_probe) loads it; its
parameters sit at the top of the tree rather than under "encoder", and its 24-way head is
replaced:

  python launch.py train --config experiments/jigsaw_digits.py --workdir runs/jigsaw_digits
  python launch.py train --config experiments/mim_transfer_digits.py:finetune \\
      --config.init_from=runs/jigsaw_digits --config.init_from_prefix= --workdir runs/ft_jigsaw
  python launch.py train --config experiments/mim_transfer_digits.py:linear_probe \\
      --config.init_from=runs/jigsaw_digits --config.init_from_prefix= --workdir runs/lp_jigsaw

Pretraining reads train[:90%]; the best checkpoint is chosen by the puzzle accuracy on the held-out
train[90%:] (validation), and test is reported at that step. Chance is 1/24 = 4.2%.

Measured (2026-12-04, about 8 min on 2 CPU cores shared with other runs): test puzzle accuracy
79.7% at step 3,033 (validation 68.8%); as features for the digit classifier, the README's pretext
table (scripts/pretext_table.py): fine-tune 77.9 +- 1.9%, linear probe 61.6 +- 0.3% on 10% labels.
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "jigsaw_digits",
        batch_size=128,
        total_steps=0,
        eval_every=500,
        target_metric="validation/accuracy",
        eval_batch_size=512,
        log_every=50,
    )
    c.num_epochs = 300
    c.data = data_config(name="sklearn_digits", augment=True, train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "vit"
    c.model.num_classes = 24  # one logit per permutation of task.num_permutations
    c.model.patch_size = 2
    c.model.hidden_size = 64
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.posemb = "sincos2d"
    c.model.pool = "token"
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "jigsaw"
    c.task.grid = 2  # 2x2 tiles of the 8x8 digits
    c.task.num_permutations = 24  # all of them

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=200, b2=0.95)
    return c
