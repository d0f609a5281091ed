"""TransFG (He et al. 2022, "TransFG: A Transformer Architecture for Fine-Grained Recognition")
against the plain ViT of the same size on distorted digits (attn_jax/data/distorted_digits:
scikit-learn's digits rotated by +-45 degrees, scaled by 0.7..1.2 and moved by up to 4 pixels on a
24x24 canvas), where a few strokes tell a turned 6 from a 9 or a 1 from a 7: details decide.

  transfg  4x4 patches with slide step 3 (7 x 7 = 49 overlapping patches over the first 22 of
           the 24 pixels; the digits rarely reach the border; sec. 3.1), 3 blocks,
           the part selection module (sec. 3.2: each of the 4 heads picks the patch its class
           token attends to most through the product of the first 3 layers' attention), a
           fourth block on [class; 4 parts], and the contrastive loss (sec. 3.3, alpha 0.4)
           added to the cross-entropy (task "transfg"). Writes plots/transfg_parts.png: eval
           canvases with the selected patches boxed.
  vit      the ViT of the same width, depth, heads and MLP: 4x4 patches without overlap (6 x 6 =
           36), 4 blocks on all tokens, cross-entropy only (task "classification").

Both read train[:5176] (the 4 canvases of each of the first 1,294 training digits), choose the
best checkpoint on the held-out train[5176:] (the other 144 digits, whole) and report test at
that step; same optimizer, label smoothing and budget.

  python launch.py train --config experiments/transfg_digits.py:transfg --workdir runs/transfg
  python launch.py train --config experiments/transfg_digits.py:vit --workdir runs/transfg_vit
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config

VARIANTS = ("transfg", "vit")


def get_config(variant: str = "transfg") -> ml_collections.ConfigDict:
    c = run_config(
        f"transfg_digits_{variant}",
        batch_size=64,
        total_steps=2000,
        eval_every=500,
        target_metric="validation/accuracy",
        log_every=50,
    )
    # Four consecutive copies per digit: held out as whole digits (as experiments/stn_digits.py).
    c.data = data_config(name="distorted_digits", augment=False, train_split="train[:5176]")
    c.evals.validation.split = "train[5176:]"

    c.model = ml_collections.ConfigDict()
    c.model.name = variant
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.patch_size = 4
    c.model.hidden_size = 64
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.dropout_rate = 0.1
    c.model.attention_impl = "auto"

    c.task = ml_collections.ConfigDict()
    c.task.label_smoothing = 0.1
    if variant == "transfg":
        c.model.slide_step = 3
        c.task.name = "transfg"
        c.task.contrastive_weight = 1.0
        c.task.margin = 0.4
    else:
        c.model.pool = "token"
        c.task.name = "classification"

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=100)
    return c
