"""The resnet_digits ResNet with attention-augmented 3x3 convolutions (Bello et al. 2019, eq. 5,
2D relative position logits, eq. 4) in stages 2 and 3 (4x4 and 2x2 maps); same data, optimizer and
budget.

kappa = 2 upsilon as in the paper, with upsilon = 0.25 and 4 heads so that each head is at least
4 wide at 64 channels (d_k = 32, d_v = 16 at 64 channels; 64, 32 at 128).

  python launch.py train --config experiments/aaconv_digits.py --workdir runs/aaconv_digits

Writes plots/aaconv_attention.png: the first AA-conv's head-averaged weights for three queries.
"""

import ml_collections

from experiments.resnet_digits import get_config as resnet_config


def get_config() -> ml_collections.ConfigDict:
    c = resnet_config()
    c.experiment = "aaconv_digits"
    c.model.aa_stages = (2, 3)
    return c
