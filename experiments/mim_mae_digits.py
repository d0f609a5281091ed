"""MAE (He et al. 2022) pretraining on scikit-learn's handwritten digits, labels unused.

The encoder has the shape of experiments/vit_digits.py (8x8 images, 2x2 patches, 4 pre-LN blocks
of width 64, 4 heads, MLP 128, a class token) with MAE's fixed 2D sin-cos position embedding, so
that this run and experiments/mim_simmim_digits.py fine-tune into one and the same ViT classifier
(`init_from=<this workdir>`, `init_from_prefix="encoder"`). 75% of the 16 patches are removed at
random per image: the encoder sees 4 patches and the class token; a narrower decoder (2 blocks of
width 48) fills in the rest and predicts each removed patch's 2x2 pixels, normalized by the
patch's mean and variance (norm_pix_loss). The best checkpoint is kept by the test
reconstruction loss; plots/reconstructions.png shows inputs, masks and reconstructions.

Measured (seed 0, 300 epochs = 3,371 steps of 128; 155 s of CPU time, 3 minutes on 2 cores, 21
minutes on 2 cores shared with other runs): test loss (norm-pix MSE on the removed patches) 0.450
at step 500, 0.352 at 1,500, 0.314 at the end (train 0.265). The reconstructions (each patch
de-normalized with its input's mean and variance) are blurred but recognizable digits, the strokes
continued through the removed patches.

  python launch.py train --config experiments/mim_mae_digits.py --workdir runs/mim_mae_digits
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "mim_mae_digits",
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
    c.model.name = "mae"
    c.model.encoder = ml_collections.ConfigDict()  # the ViT encoder's fields
    c.model.encoder.patch_size = 2
    c.model.encoder.hidden_size = 64
    c.model.encoder.depth = 4
    c.model.encoder.num_heads = 4
    c.model.encoder.mlp_dim = 128
    c.model.encoder.dropout_rate = 0.0
    c.model.encoder.posemb = "sincos2d"
    c.model.mask_ratio = 0.75
    c.model.decoder_hidden_size = 48
    c.model.decoder_depth = 2
    c.model.decoder_num_heads = 4
    c.model.decoder_mlp_dim = 96
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "masked_image"
    c.task.method = "mae"
    c.task.norm_pix_loss = True
    c.task.num_plot_examples = 8  # columns of plots/reconstructions.png

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=200, b2=0.95)
    return c
