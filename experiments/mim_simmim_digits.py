"""SimMIM (Xie et al. 2022) pretraining on scikit-learn's handwritten digits, labels unused.

The encoder has the shape of experiments/vit_digits.py (8x8 images, 2x2 patches, 4 pre-LN blocks
of width 64, 4 heads, MLP 128, a class token) with MAE's fixed 2D sin-cos position embedding, so
that this run and experiments/mim_mae_digits.py fine-tune into one and the same ViT classifier
(`init_from=<this workdir>`, `init_from_prefix="encoder"`). Masks are drawn in 4x4-pixel units
(2x2 patches each): ceil(4 units * 0.6) = 3 of the 4 quadrants of every image are replaced by the
mask token, and a 1x1 conv of each patch token predicts its 2x2 pixels; the L1 loss counts the
masked pixels only. The best checkpoint is kept by the test reconstruction loss;
plots/reconstructions.png shows inputs, masks and reconstructions.

Measured (seed 0, 300 epochs = 3,371 steps of 128; 160 s of CPU time, 4 minutes on 2 cores, 24
minutes on 2 cores shared with other runs): test loss (masked-pixel L1, normalized
pixels) 0.559 at step 500, 0.494 at 1,500, 0.454 at the end (train 0.405). From one visible
quadrant the model draws plausible strokes of a digit in the other three, often not the right
digit: 8x8 digits leave little to infer from a quarter.

  python launch.py train --config experiments/mim_simmim_digits.py --workdir runs/mim_simmim_digits
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "mim_simmim_digits",
        batch_size=128,
        total_steps=0,
        eval_every=500,
        target_metric="test/loss",
        target_mode="min",
        eval_batch_size=512,
        log_every=50,
    )
    c.num_epochs = 300
    c.data = data_config(name="sklearn_digits", augment=True)

    c.model = ml_collections.ConfigDict()
    c.model.name = "simmim"
    c.model.encoder = ml_collections.ConfigDict()  # the ViT encoder's fields
    c.model.encoder.patch_size = 2
    c.model.encoder.hidden_size = 64
    c.model.encoder.depth = 4
    c.model.encoder.num_heads = 4
    c.model.encoder.mlp_dim = 128
    c.model.encoder.dropout_rate = 0.0
    c.model.encoder.pool = "token"
    c.model.encoder.posemb = "sincos2d"
    c.model.mask_patch_size = 4
    c.model.mask_ratio = 0.6
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "masked_image"
    c.task.method = "simmim"
    c.task.num_plot_examples = 8  # columns of plots/reconstructions.png

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=200, b2=0.95)
    return c
