"""DETR (Carion et al. 2020) with a Swin-T backbone (Liu et al. 2021, Table 1) on COCO 2017
detection, from an ImageNet-trained timm Swin-T: experiments/detr_r50_coco.py's recipe (6 + 6
layers, d = 256, 8 heads, FFN 2048, dropout 0.1, 100 queries, auxiliary losses, AdamW at 1e-4 with
the backbone at a tenth, weight decay 1e-4, gradients clipped at 0.1, 300 epochs with the lr
divided by 10 after 200) with the ResNet-50 replaced by Swin-T ("swin_T" preset of
DETR_VARIANTS): its stride-32 stage-4 map (768 channels), layer-normed, feeds the input projection.

  python launch.py info  --config experiments/detr_swin_coco.py
  python launch.py train --config experiments/detr_swin_coco.py --config.data.data_dir=/data/tfds \
      --config.init_from=/path/to/timm/swin_tiny_patch4_window7_224

Backbone weights: `config.init_from` names a timm Swin-T checkpoint directory (a Hugging Face hub
download of timm/swin_tiny_patch4_window7_224.ms_in1k: model.safetensors and config.json), which
attn_jax/pretrained/swin.py converts, and `config.init_into = "backbone"` places the converted
Swin under DETR's "backbone" subtree (its classifier head is not used); the transformer, the heads
and the stage norm start fresh. These two keys, reference checkpoints in `init_from` and
`init_into`, come from the extension of `config.init_from` made alongside this experiment
(attn_jax/train/checkpoint.py); without a checkpoint the backbone trains from scratch, which is not
the intended experiment. Swin-T's drop-path rate is the preset's 0.2; the backbone's stochastic
depth and its learning rate follow the dense-prediction recipes of Liu et al. (sec. 4.2) only in
spirit: no layer-wise decay here.

Classes: tfds' coco/2017 has 80 contiguous labels (num_classes is taken from the dataset).
Needs coco/2017 prepared for tfds (README, "Real datasets") and accelerators.
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "detr_swin_coco",
        batch_size=16,
        total_steps=0,
        eval_every=7_393,  # one epoch of 118,287 images at 16 per step
        target_metric="validation/AP",
        eval_batch_size=16,
        log_every=100,
        validation_split="validation",
        test_split=None,
    )
    c.num_epochs = 300
    c.data = data_config(name="coco", eval_split="validation", augment=True)
    # A converted timm Swin-T (see the docstring), loaded into DETR's "backbone" subtree.
    c.init_from = ""
    c.init_into = "backbone"

    c.model = ml_collections.ConfigDict()
    c.model.name = "detr"
    c.model.variant = "swin_T"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: the dataset's
    c.model.num_queries = 100
    c.model.dropout_rate = 0.1
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "detection"
    c.task.eos_coef = 0.1
    c.task.aux_loss = True

    c.optim = adamw_config(1e-4, weight_decay=1e-4, warmup_steps=0, grad_clip_norm=0.1)
    c.optim.weight_decay_mask = "all"
    c.optim.schedule = "step"
    c.optim.lr_drop_fraction = 200 / 300
    c.optim.lr_drop_factor = 0.1
    c.optim.lr_multipliers = ml_collections.ConfigDict({"backbone": 0.1})
    return c
