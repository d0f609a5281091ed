"""DETR-R50 on COCO 2017 detection, Carion et al. 2020, "End-to-End Object Detection with
Transformers", sec. 4 and appendix A.4, with the official repository's defaults.

  python launch.py info  --config experiments/detr_r50_coco.py
  python launch.py train --config experiments/detr_r50_coco.py --config.data.data_dir=/data/tfds \
      --config.init_from=resnet50.pth   # torchvision's ImageNet ResNet-50 (or timm's)

The recipe: ResNet-50 with frozen batch norm, its stem and stage 1 frozen, the rest of the
backbone at lr 1e-5 and the transformer and heads at 1e-4; AdamW with weight decay 1e-4 on every
parameter (torch's AdamW decays biases and norms too); gradients clipped to a global norm of 0.1;
6 + 6 layers, d = 256, 8 heads, FFN 2048, dropout 0.1, 100 queries; auxiliary decoding losses;
300 epochs with the learning rate divided by 10 after 200 (the paper's best model: 500 epochs,
drop at 400, 42.0 AP). Batches hold 2 images per device as in the official main.py: 16 on one
8-GPU node (the README's recipe), set batch_size to 2 x the device count (the paper used 16 GPUs
with 4 images each, 64).

Classes: the paper's head has 92 outputs (num_classes = 91 = the largest COCO category id + 1,
plus "no object"); tfds' coco/2017 relabels the 80 categories contiguously, so num_classes is left
unset here and taken from the dataset (80): 41,521,941 parameters, 41,299,541 trainable.
`launch.py info ... --config.model.num_classes=91` shows the paper's 41,524,768 (41,302,368
trainable, the number the official main.py prints); training needs the dataset's count.

Backbone weights: DETR starts from torchvision's ImageNet-trained ResNet-50 whose batch-norm
statistics and affine terms become frozen constants. `--config.init_from=<state dict>` (a
torchvision or timm resnet50 .pth/.safetensors, converted by attn_jax/pretrained/resnet.py) fills
the subtree `init_into = "backbone"`: the convolutions as parameters, the four vectors of each
batch norm as the constants of the 'batch_stats' collection; the log prints one line of what was
loaded (the classifier `fc` is ignored). The stem and stage 1 stay frozen at those weights and
the rest of the backbone trains at 1e-5, as the official code does (its Backbone trains only
layer2-4, at lr_backbone 1e-5). Without init_from the frozen norms are the identity and the frozen
stem and stage 1 stay at their random initialization, which is not the paper's experiment; to
train from scratch instead, use `--config.model.backbone_norm=batch` and drop the freezing
patterns.
Needs coco/2017 prepared for tfds (README, "Real datasets") and accelerators.
"""

import ml_collections

from attn_jax.config import adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "detr_r50_coco",
        batch_size=16,
        total_steps=0,
        eval_every=7_393,  # one epoch of 118,287 images at 16 per step
        target_metric="validation/AP",
        validation_split="validation",  # coco's own; its test split has no annotations
        test_split=None,
        eval_batch_size=16,
        log_every=100,
    )
    c.num_epochs = 300
    c.data = data_config(name="coco", eval_split="validation", augment=True)
    c.init_into = "backbone"  # where --config.init_from's ResNet-50 goes

    c.model = ml_collections.ConfigDict()
    c.model.name = "detr"
    c.model.variant = "R50"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: the dataset's
    c.model.num_queries = 100
    c.model.dropout_rate = 0.1
    c.model.backbone_norm = "frozen_batch"
    c.model.backbone_padding = "symmetric"  # torch's, which converted weights need
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
    # Longest prefix wins: the backbone at a tenth of the lr (1e-5), its pretrained stem and
    # stage 1 frozen (the official code trains layer2-4 only).
    c.optim.lr_multipliers = ml_collections.ConfigDict(
        {"backbone": 0.1, "backbone/stem": 0.0, "backbone/stage1": 0.0}
    )
    return c
