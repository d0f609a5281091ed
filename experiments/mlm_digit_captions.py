"""BERT-style masked language modeling (Devlin et al. 2019, sec. 3.1) on the captions of the digit
captions dataset (embedded; the images are read but not used).

The encoder is CLIP's text tower without the causal mask (PAD keys masked instead): 3 pre-LN
blocks of width 128, 4 heads, exact GELU, dropout 0.1, and BERT's head (Dense -> GELU -> LayerNorm
-> logits through the tied token embedding). 15% of the ordinary tokens are chosen, 80% of those
become [MASK], 10% a random word, 10% stay; the loss and the reported accuracy are over the chosen
positions only. Evaluation masks each test caption (caption 0 of each image) the same way every
time. Whether a masked digit word is "three" or "3" cannot be told from the rest of a caption,
so accuracy stays below 1 by construction.

  python launch.py train --config experiments/mlm_digit_captions.py --workdir runs/mlm_captions
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "mlm_digit_captions",
        batch_size=128,
        total_steps=0,
        eval_every=220,
        target_metric="validation/accuracy",
        eval_batch_size=128,
        log_every=20,
    )
    c.num_epochs = 40
    c.data = data_config(name="digit_captions", train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "text_mlm"
    c.model.variant = ml_collections.config_dict.placeholder(str)
    c.model.vocab_size = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.context_length = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.width = 128
    c.model.layers = 3
    c.model.num_heads = 4
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.1
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "masked_language"
    c.task.mask_prob = 0.15

    c.optim = adamw_config(1e-3, weight_decay=0.01, warmup_steps=50, b2=0.98)
    return c
