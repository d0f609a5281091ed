"""A spatial transformer network (Jaderberg et al. 2015, sec. 4.1, "ST-CNN Aff") on distorted
digits: the CNN of experiments/cnn_digits.py, with the same data, optimizer and budget, behind an
affine spatial transformer whose localisation net (two 5x5 conv-ReLU-max-pool stages of 8 and 16
channels, a 32-unit ReLU layer, 6 outputs initialised to the identity) learns to undo the
rotation, scale and translation before the classifier sees the digit.

  python launch.py train --config experiments/stn_digits.py --workdir runs/stn_digits
  python launch.py train --config experiments/stn_digits.py --workdir runs/stn_digits_s1 \
      --config.seed=1

Writes plots/stn_transforms.png: eval canvases (top) and what the classifier sees (bottom).
"""

import importlib.util
from pathlib import Path

import ml_collections

_spec = importlib.util.spec_from_file_location(
    "_cnn_digits", Path(__file__).with_name("cnn_digits.py")
)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config() -> ml_collections.ConfigDict:
    c = _base.get_config()
    c.experiment = "stn_digits"
    c.model.name = "stn"
    c.model.loc_features = (8, 16)
    c.model.loc_kernel_size = 5
    c.model.loc_dense = 32
    return c
