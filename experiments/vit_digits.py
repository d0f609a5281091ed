"""The default experiment: a small ViT on scikit-learn's 8x8 handwritten digits (embedded dataset).

8x8 images, 2x2 patches -> 16 tokens + a class token; 4 pre-LN blocks of width 64. Random shifts
of up to one pixel make the training images go a long way but slow the fit: the recipe is a high
peak learning rate (3e-3) and 300 epochs, about four minutes on 2 CPU cores; with 120 epochs or
lr 1e-3 it stays at 89-97% depending on the seed (README, "Experiments").

Training reads train[:90%] (1,294 images); the best checkpoint is chosen by the accuracy on the
held-out train[90%:] (144 images, "validation"), and the test split (359) is reported at that step.

  python launch.py train                                     # this config
  python launch.py train --config.optim.lr=3e-4 --workdir runs/a
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "vit_digits",
        batch_size=128,  # global, over all devices and processes
        total_steps=0,
        eval_every=300,
        target_metric="validation/accuracy",
        eval_batch_size=512,
        log_every=20,
    )
    c.num_epochs = 300  # converted to steps with the size of data.train_split
    # config.microbatches > 1: the batch in that many sequential slices, same update, less memory

    c.data = data_config(name="sklearn_digits", augment=True, train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "vit"
    c.model.variant = ml_collections.config_dict.placeholder(str)
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.patch_size = 2
    c.model.hidden_size = 64
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 128
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.0
    c.model.pool = "token"
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.1

    # layer_decay: layer-wise lr decay when fine-tuning (e.g. 0.75); 0: off
    c.optim = adamw_config(3e-3, weight_decay=0.05, warmup_steps=100)
    return c
