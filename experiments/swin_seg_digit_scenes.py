"""A Swin backbone (Liu et al. 2021) for segmentation of the embedded digit scenes.

The four stages of a small Swin (2x2 patches, windows of 4, strides 2/4/8/16 on the 64x64 scenes)
feed a multi-level decoder in the manner of SETR-MLA: each map is reduced to a common width, added
top-down, refined, brought to the finest stride, concatenated and classified ("swin_digits"
preset of `SETR_VARIANTS`). Compare with the ViT encoders of experiments/setr_digit_scenes.py:

  python launch.py train --config experiments/swin_seg_digit_scenes.py
"""

import ml_collections

from experiments.setr_digit_scenes import get_config as setr_config


def get_config() -> ml_collections.ConfigDict:
    c = setr_config()
    c.experiment = "swin_seg_digit_scenes"
    c.model = ml_collections.ConfigDict()
    c.model.name = "setr"
    c.model.variant = "swin_digits"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)
    c.model.decoder = "mla"
    # The Swin encoder's fields, merged into the variant's.
    c.model.encoder = ml_collections.ConfigDict()
    c.model.encoder.drop_path_rate = 0.1
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters
    return c
