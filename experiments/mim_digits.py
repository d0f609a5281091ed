"""Masked-image-modeling pretraining on scikit-learn's handwritten digits, labels unused.

  mae     MAE (He et al. 2022). 75% of the 16 patches are removed at random per image: the
          encoder sees 4 patches and the class token; a narrower decoder (2 blocks of width 48)
          fills in the rest and predicts each removed patch's 2x2 pixels, normalized by the
          patch's mean and variance (norm_pix_loss).
  simmim  SimMIM (Xie et al. 2022). Masks are drawn in 4x4-pixel units (2x2 patches each):
          ceil(4 units * 0.6) = 3 of the 4 quadrants of every image are replaced by the mask
          token, and a 1x1 conv of each patch token predicts its 2x2 pixels; the L1 loss counts
          the masked pixels only.

Both encoders have the shape of experiments/vit_digits.py (8x8 images, 2x2 patches, 4 pre-LN
blocks of width 64, 4 heads, MLP 128, a class token) with MAE's fixed 2D sin-cos position
embedding, so that both fine-tune into one and the same ViT classifier (mim_transfer_digits.py,
`init_from=<this workdir>`, `init_from_prefix="encoder"`). Pretraining reads train[:90%], so the
images that the transfer runs validate on stay unseen; the best checkpoint is kept by the
reconstruction loss on the held-out train[90%:], and test is reported at that step.
plots/reconstructions.png shows inputs, masks and reconstructions.

Measured before the held-out split (seed 0, 300 epochs of all 1,438 training images = 3,371 steps
of 128, about 3-4 minutes on 2 cores): MAE's test loss (norm-pix MSE on the removed patches)
0.450 at step 500, 0.352 at 1,500, 0.314 at the end (train 0.265); the reconstructions (each
patch de-normalized with its input's mean and variance) are blurred but recognizable digits, the
strokes continued through the removed patches. SimMIM's test loss (masked-pixel L1, normalized
pixels) 0.559 at step 500, 0.494 at 1,500, 0.454 at the end (train 0.405); from one visible
quadrant the model draws plausible strokes of a digit in the other three, often not the right
digit: 8x8 digits leave little to infer from a quarter.

  python launch.py train --config experiments/mim_digits.py:mae --workdir runs/mim_mae_digits
  python launch.py train --config experiments/mim_digits.py:simmim --workdir runs/mim_simmim_digits
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config

VARIANTS = ("mae", "simmim")


def get_config(variant: str = "mae") -> ml_collections.ConfigDict:
    c = run_config(
        f"mim_{variant}_digits",
        batch_size=128,
        total_steps=0,
        eval_every=500,
        target_metric="validation/loss",
        target_mode="min",
        eval_batch_size=512,
        log_every=50,
    )
    c.num_epochs = 300
    c.data = data_config(name="sklearn_digits", augment=True, train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = variant
    c.model.encoder = ml_collections.ConfigDict()  # the ViT encoder's fields
    c.model.encoder.patch_size = 2
    c.model.encoder.hidden_size = 64
    c.model.encoder.depth = 4
    c.model.encoder.num_heads = 4
    c.model.encoder.mlp_dim = 128
    c.model.encoder.dropout_rate = 0.0
    if variant == "simmim":
        c.model.encoder.pool = "token"
    c.model.encoder.posemb = "sincos2d"
    if variant == "mae":
        c.model.mask_ratio = 0.75
        c.model.decoder_hidden_size = 48
        c.model.decoder_depth = 2
        c.model.decoder_num_heads = 4
        c.model.decoder_mlp_dim = 96
    else:
        c.model.mask_patch_size = 4
        c.model.mask_ratio = 0.6
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "masked_image"
    c.task.method = variant
    if variant == "mae":
        c.task.norm_pix_loss = True
    c.task.num_plot_examples = 8  # columns of plots/reconstructions.png

    c.optim = adamw_config(2e-3, weight_decay=0.05, warmup_steps=200, b2=0.95)
    return c
