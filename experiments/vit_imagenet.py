"""ViT on ImageNet-1k (ILSVRC-2012) from scratch, Dosovitskiy et al. 2021, Table 3 / Appendix B.1.

Variants decode through the table of the paper's Table 1 (Ti/S/B/L/H with patch 16 or 32); any
model field that is set (not None) here or on the command line overrides the variant's value.

  python launch.py info --config experiments/vit_imagenet.py --config.model.variant=B/16
  python launch.py train --config experiments/vit_imagenet.py --config.data.data_dir=/data/tfds

Trained with DeiT's ImageNet-1k recipe (Touvron et al. 2021, "Training data-efficient image
transformers", Table 9), the one that trains a ViT from scratch on ImageNet-1k alone: AdamW with
lr 5e-4 x batch / 512 (4e-3 at this batch of 4096), weight decay 0.05 (not on biases, norms,
position embeddings or the class token: the by-kind mask), 5 warmup epochs, cosine decay to
1e-5, no gradient clipping, label smoothing 0.1, 300 epochs; bicubic random-resized crops and
flips, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0 (switch
0.5) mixed on the device. Still the ViT paper's (ImageNet row): batch 4096, dropout 0.1 where
DeiT has none and stochastic depth 0.1, no repeated augmentation (DeiT: 3; docs/fidelity.md).
Needs imagenet2012 prepared as array_record (see README, "Real datasets").

Variant `finetune` (`--config experiments/vit_imagenet.py:finetune`): the paper's fine-tuning of
a pretrained ViT-B/16 at 384 px (Appendix B.1.1, Table 4) from a downloaded Hugging Face ViT
directory: set `--config.init_from` to it (the default names `weights/vit-base-patch16-224-in21k`,
a placeholder to replace). The whole model is loaded, its 14x14 position grid resized bicubically
to 24x24 (attn_jax/pretrained/resample.py), the head trained from scratch (21k classes there);
with an ImageNet-1k checkpoint (`vit-base-patch16-224`) `--config.init_from_fresh='()'` keeps its
head. SGD momentum 0.9, no weight decay, gradient clipping at 1, batch 512, 20,000 steps with
500 warmup (the official vit_jax config), cosine decay, lr 0.01 (the middle of the paper's sweep
{0.003, 0.01, 0.03}); no dropout, label smoothing or DeiT augmentation (random crops and flips
only); the converted port's exact GELU and LayerNorm epsilon 1e-12.
"""

import ml_collections

from attn_jax.data import deit_data_config

VARIANTS = ("scratch", "finetune")


def get_config(variant: str = "scratch") -> ml_collections.ConfigDict:
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
    # imagenet2012's own validation split (its test split has no labels).
    c.evals = ml_collections.ConfigDict({"validation": {"split": "validation"}})
    c.init_from = ""  # "<workdir>[:<step>]" to start from (fine-tuning)
    c.init_from_prefix = ""  # the subtree of its parameters that holds this model
    c.init_from_fresh = ()  # path prefixes that keep their fresh init, e.g. ("head",)
    c.plots = True

    c.data = deit_data_config(name="imagenet2012", eval_split="validation", image_size=224)

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
    c.task.label_smoothing = 0.1

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 4e-3  # DeiT's 5e-4 per 512 images
    c.optim.weight_decay = 0.05
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 1_564  # 5 epochs of 1,281,167 images in batches of 4096
    c.optim.end_lr_factor = 0.0025  # 1e-5 / 4e-3
    c.optim.grad_clip_norm = ml_collections.config_dict.placeholder(float)  # none in DeiT

    c.distributed = ml_collections.ConfigDict()
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.coordinator_address = "127.0.0.1:12355"
    if variant == "finetune":
        _finetune(c)
    return c


def _finetune(c: ml_collections.ConfigDict) -> None:
    """The paper's fine-tuning at 384 px from a Hugging Face ViT-B/16 (module docstring)."""
    c.experiment = "vit_imagenet_finetune"
    c.init_from = "weights/vit-base-patch16-224-in21k"  # placeholder: a downloaded HF directory
    c.init_into = ""  # the whole model
    c.init_from_fresh = ("head",)
    c.batch_size = 512
    c.eval_batch_size = 512
    c.num_epochs = 0
    c.total_steps = 20_000
    c.eval_every = 2_000
    c.data.image_size = 384
    c.data.randaugment = None
    c.data.random_erase = 0.0
    c.data.mixup = 0.0
    c.data.cutmix = 0.0
    c.model.variant = "B/16"
    c.model.dropout_rate = 0.0
    c.model.gelu_approximate = False  # the port's "hidden_act": "gelu"
    c.model.layernorm_epsilon = 1e-12  # the port's layer_norm_eps
    c.task.label_smoothing = 0.0
    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.weight_decay = 0.0
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 500
    c.optim.end_lr_factor = 0.0
    c.optim.grad_clip_norm = 1.0
