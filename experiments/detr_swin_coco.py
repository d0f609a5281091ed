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

from experiments.detr_r50_coco import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.experiment = "detr_swin_coco"
    # init_from names a converted timm Swin-T (see the docstring); init_into stays "backbone".
    c.model.variant = "swin_T"
    # The ResNet's norm and padding have no counterpart in Swin.
    del c.model.backbone_norm
    del c.model.backbone_padding
    # No frozen stem or stage 1: the whole Swin trains at a tenth of the lr.
    c.optim.lr_multipliers = ml_collections.ConfigDict({"backbone": 0.1})
    return c
