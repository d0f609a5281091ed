"""The resnet_digits ResNet with one non-local block (Wang et al. 2018, embedded Gaussian, eq. 3 and
6) before the last block of stage 2 (4x4 map, 64 channels), as the paper's single-block ablation
places it before the last block of a middle stage; same data, optimizer and budget.

No subsampling: the 4x4 map has only 16 positions.

  python launch.py train --config experiments/nonlocal_digits.py --workdir runs/nonlocal_digits

Writes plots/non_local_attention.png: the block's weights for three query pixels.
"""

import ml_collections

from experiments.resnet_digits import get_config as resnet_config


def get_config() -> ml_collections.ConfigDict:
    c = resnet_config()
    c.experiment = "nonlocal_digits"
    c.model.non_local_stages = (2,)
    return c
