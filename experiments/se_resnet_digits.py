"""The resnet_digits ResNet with a squeeze-and-excitation block in every residual block (Hu et al.
2018, eqs. 2-4, on the residual branch before the addition); same data, optimizer and budget.

r = 8 instead of the paper's 16: the first stage has 32 channels, and r = 16 would leave a
two-unit bottleneck.

  python launch.py train --config experiments/se_resnet_digits.py --workdir runs/se_resnet_digits

Writes plots/se_excitation.png: the mean gate per class and channel in each stage's last block.
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location(
    "_resnet_digits", Path(__file__).with_name("resnet_digits.py")
)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config() -> ml_collections.ConfigDict:
    c = _base.get_config()
    c.experiment = "se_resnet_digits"
    c.model.block_attention = "se"
    return c
