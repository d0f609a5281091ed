"""CLIP (Radford et al. 2021) trained from scratch on the digit captions (embedded dataset), then
evaluated zero-shot: each test digit is classified by the prompts of held-out templates, never
seen in training ("a photo of the number seven.", "there is a 7 in this image.", ...).

The 8x8 digits are upsampled to 16x16 and cut into 4x4 patches (16 tokens + class token); both
towers have 3 pre-LN blocks of width 128 (4 heads), QuickGELU, a joint embedding of 64 and the
learned temperature of the paper (init 1/0.07, multiplier clipped at 100). Each training image is
paired with one of its five captions, drawn afresh every epoch.

  python launch.py train --config experiments/clip_digits.py --workdir runs/clip_digits

Writes plots/clip_similarity.png (cosine similarities of 8 test images with their captions).
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "clip_digits",
        batch_size=128,
        total_steps=0,
        eval_every=220,
        target_metric="validation/zero_shot_accuracy",
        eval_batch_size=128,
        log_every=20,
    )
    c.num_epochs = 40
    c.data = data_config(
        name="digit_captions", augment=True, image_size=16, train_split=TRAIN_WITHOUT_VALIDATION
    )

    c.model = ml_collections.ConfigDict()
    c.model.name = "clip"
    c.model.variant = ml_collections.config_dict.placeholder(str)
    c.model.vocab_size = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.context_length = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.embed_dim = 64
    c.model.patch_size = 4
    c.model.vision_width = 128
    c.model.vision_layers = 3
    c.model.vision_heads = 4
    c.model.text_width = 128
    c.model.text_layers = 3
    c.model.text_heads = 4
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "contrastive"

    # Sec. 2.5 trains with Adam(W), beta2 0.98 and decoupled weight decay on the weights only.
    c.optim = adamw_config(1e-3, weight_decay=0.1, warmup_steps=50, b2=0.98, grad_clip_norm=1.0)
    return c
