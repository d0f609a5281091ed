"""DETR with the paper's backbone (Carion et al. 2020: ResNet-50, frozen batch norm, trained at lr
1e-5) on the embedded digit scenes: 1 to 6 handwritten digits per 64x64 canvas, boxes and labels
of 10 classes, evaluated with COCO AP (pycocotools).

The backbone starts from a downloaded ResNet-50 (a torchvision or timm state dict), converted by
attn_jax/pretrained/resnet.py and placed under the model's `backbone`: its convolutions as
parameters, its batch norms' affine terms and running statistics as the frozen norms' constants.
The grey canvases meet the RGB stem by summing its kernel over the colours (what the RGB stem
computes on a grey image repeated three times; the init_from log line says so). The backbone
learns at a tenth of the base lr (1e-5) as in the paper; the transformer is the digits preset's
(2 + 2 layers of width 64, 10 queries); the loss is the paper's (Hungarian matching on class
probability, L1 and GIoU with weights 1, 5, 2, no-object weight 0.1, auxiliary losses). On
64x64 canvases ResNet-50's stride 32 leaves a 2x2 map: this experiment exercises the paper's
recipe end to end rather than competing with detr_digits (stride 8).

  python launch.py train --config experiments/detr_r50_digits.py \\
      --config.init_from=resnet50.safetensors --config.init_into=backbone

Without init_from the backbone starts from its random initialisation and its frozen norms from
the identity, which is not the paper's experiment.
"""

import ml_collections

from experiments.detr_digits import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.experiment = "detr_r50_digits"
    c.batch_size = 32
    c.total_steps = 10_000
    c.eval_every = 1_000
    c.checkpoint_every = 1_000
    c.eval_batch_size = 64
    c.init_into = "backbone"

    c.model.backbone = "resnet50"
    # The digits preset narrows its ResNet; here the backbone is the published ResNet-50.
    c.model.backbone_stage_sizes = (3, 4, 6, 3)
    c.model.backbone_width = 64
    c.model.backbone_norm = "frozen_batch"
    c.model.backbone_padding = "symmetric"  # torch's, which converted weights need

    c.optim.lr = 1e-4
    c.optim.warmup_steps = 200
    # The paper's backbone lr, 1e-5; 0.0 freezes the backbone entirely.
    c.optim.lr_multipliers = ml_collections.ConfigDict({"backbone": 0.1})
    return c
