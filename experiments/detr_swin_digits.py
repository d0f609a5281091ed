"""DETR (Carion et al. 2020) with a Swin Transformer backbone (Liu et al. 2021) on the embedded
digit scenes: the same detection task and transformer as experiments/detr_digits.py, with the
ResNet replaced by a two-stage Swin of the same strides ("swin_digits" preset of DETR_VARIANTS:
4x4 patches, windows of 4, widths 32 and 64, depths 2-2; an 8x8 map from the 64x64 scenes,
layer-normed before DETR's input projection). Compare with the ResNet of detr_digits.py:

  python launch.py train --config experiments/detr_swin_digits.py

plots/detections.png draws the predicted boxes next to the ground truth.

Measured: not yet (the full run is as long as detr_digits', about an hour on 2 CPU cores).
"""

import ml_collections

from experiments.detr_digits import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.experiment = "detr_swin_digits"
    c.model.variant = "swin_digits"
    # Swin fields over the preset's (patch_size, window, embed_dim, depths, num_heads, ...).
    c.model.backbone_swin = ml_collections.ConfigDict()
    c.model.backbone_swin.drop_path_rate = 0.1
    return c
