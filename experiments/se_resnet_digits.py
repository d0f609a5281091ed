"""The resnet_digits ResNet with a squeeze-and-excitation block in every residual block (Hu et al.
2018, eqs. 2-4, on the residual branch before the addition); same data, optimizer and budget.

r = 8 instead of the paper's 16: the first stage has 32 channels, and r = 16 would leave a
two-unit bottleneck.

  python launch.py train --config experiments/se_resnet_digits.py --workdir runs/se_resnet_digits

Writes plots/se_excitation.png: the mean gate per class and channel in each stage's last block.
"""

import ml_collections

from experiments.resnet_digits import get_config as resnet_config


def get_config() -> ml_collections.ConfigDict:
    c = resnet_config()
    c.experiment = "se_resnet_digits"
    c.model.block_attention = "se"
    return c
