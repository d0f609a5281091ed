"""The textbook's Keras CIFAR-10 ViT, reproduced faithfully (it reported 72.63% test accuracy).

32x32 input normalized per channel, patch 4 (64 tokens), d_model 64, 8 heads of key_dim 8, 6 pre-LN
blocks with MLP Dense(128, GELU) -> Dense(64, GELU) and dropout 0.1, no class token; head
LayerNorm -> Flatten -> Dense 2048 -> Dense 1024 -> 10 with GELU and dropout 0.5. Adam, batch 128,
10 epochs, as the textbook trained it.

The textbook's output layer applies a softmax and its loss then applies another one
(from_logits=True on probabilities), and Keras initializes every layer with its own defaults.
Our defaults are the correct loss on logits and the official ViT initializers; to reproduce the
textbook's run exactly (Keras initializers, the double softmax, Adam 1e-3, 10 epochs, batch 128):

  python launch.py train --config experiments/vit_cifar10_textbook.py \\
      --config.model.weight_init=keras --config.model.output_softmax=true

Needs cifar10 prepared as array_record in the data dir (see README, "Real datasets").
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, VALIDATION_FROM_TRAIN
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "vit_cifar10_textbook"
    c.seed = 0
    c.batch_size = 128
    c.microbatches = 1  # >1: the batch in that many sequential slices, same update, less memory
    c.eval_batch_size = 500
    c.num_epochs = 10
    c.total_steps = 0
    c.log_every = 50
    c.eval_every = 352  # about once an epoch (45,000 / 128)
    c.checkpoint_every = 352
    c.keep_checkpoints = 2
    c.target_metric = "validation/accuracy"
    c.target_mode = "max"
    c.evals = ml_collections.ConfigDict(
        {"validation": {"split": VALIDATION_FROM_TRAIN}, "test": {"split": "test"}}
    )
    c.init_from = ""  # "<workdir>[:<step>]" to start from (fine-tuning)
    c.init_from_prefix = ""  # the subtree of its parameters that holds this model
    c.init_from_fresh = ()  # path prefixes that keep their fresh init, e.g. ("head",)
    c.plots = True

    # The textbook trains on the normalized images as they are: no augmentation.
    c.data = data_config(name="cifar10", augment=False, train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "vit"
    c.model.variant = "textbook_cifar10"
    c.model.num_classes = 10
    c.model.output_softmax = False
    c.model.weight_init = "official"  # "keras": Keras' default initializers, as the textbook ran
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # Keras Adam defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-7
    c.optim.lr = 1e-3
    c.optim.eps = 1e-7
    c.optim.weight_decay = 0.0
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.grad_clip_norm = ml_collections.config_dict.placeholder(float)

    c.distributed = ml_collections.ConfigDict()
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.coordinator_address = "127.0.0.1:12355"
    return c
