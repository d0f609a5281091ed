"""ViT on ImageNet-1k (ILSVRC-2012) from scratch, Dosovitskiy et al. 2021, Table 3 / Appendix B.1.

Variants decode through the table of the paper's Table 1 (Ti/S/B/L/H with patch 16 or 32); any
model field that is set (not None) here or on the command line overrides the variant's value.

  python launch.py info --config experiments/vit_imagenet.py --config.model.variant=B/16
  python launch.py train --config experiments/vit_imagenet.py --config.data.data_dir=/data/tfds

Hyperparameters follow the paper's ImageNet row (Adam b1 0.9 b2 0.999, batch 4096, lr 3e-3,
weight decay 0.3 decoupled, 10k warmup steps, cosine decay, global-norm clip 1, 300 epochs,
dropout 0.1). Needs imagenet2012 prepared as array_record (see README, "Real datasets").
"""

import ml_collections

from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "vit_imagenet"
    c.seed = 0
    c.batch_size = 4096
    c.microbatches = 1  # >1: the batch in that many sequential slices, same update, less memory
    c.eval_batch_size = 1024
    c.num_epochs = 300
    c.total_steps = 0
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.target_metric = "validation/accuracy"
    c.target_mode = "max"
    c.init_from = ""  # "<workdir>[:<step>]" to start from (fine-tuning)
    c.init_from_prefix = ""  # the subtree of its parameters that holds this model
    c.init_from_fresh = ()  # path prefixes that keep their fresh init, e.g. ("head",)
    c.plots = True

    c.data = data_config(name="imagenet2012", eval_split="validation", augment=True, image_size=224)

    c.model = ml_collections.ConfigDict()
    c.model.name = "vit"
    c.model.variant = "B/16"
    c.model.num_classes = 1000
    for field in ("patch_size", "hidden_size", "depth", "num_heads", "mlp_dim"):
        c.model[field] = ml_collections.config_dict.placeholder(int)
    c.model.dropout_rate = 0.1
    c.model.pool = ml_collections.config_dict.placeholder(str)
    # None: the official ViT's tanh GELU; false: the exact erf GELU of PyTorch/timm and Keras.
    c.model.gelu_approximate = ml_collections.config_dict.placeholder(bool)
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "classification"
    c.task.label_smoothing = 0.0

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 3e-3
    c.optim.weight_decay = 0.3
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 10_000
    c.optim.end_lr_factor = 0.0
    c.optim.grad_clip_norm = 1.0
    c.optim.grad_accum_steps = 1

    c.distributed = ml_collections.ConfigDict()
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.coordinator_address = "127.0.0.1:12355"
    return c
