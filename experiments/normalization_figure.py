"""The chapter's figure of layer norm against batch norm, on real token activations: an experiment
that trains nothing.

`program = "normalization"` makes `launch.py run` call attn_jax/programs/normalization.py: the
residual stream [B, T, D] after one block of the default experiment's ViT (experiments/
vit_digits.py, freshly initialized unless `init_from` names a trained run) on a batch of test
digits, normalized by layer norm (per token, over the features) and by batch norm (per feature,
over the batch's tokens). plots/normalization_axes.png shows which entries share a mean and a
variance, plots/normalization_statistics.png the outputs and the means and standard deviations
before and after; each has a .txt caption. Seconds on a CPU.

  python launch.py run --config experiments/normalization_figure.py --workdir runs/norm_figure
  python launch.py run --config experiments/normalization_figure.py \\
      --config.init_from=runs/vit_digits --workdir runs/norm_figure_trained
"""

import ml_collections

from experiments.vit_digits import get_config as vit_config


def get_config() -> ml_collections.ConfigDict:
    base = vit_config()
    c = ml_collections.ConfigDict()
    c.experiment = "normalization_figure"
    c.program = "normalization"
    c.model = base.model  # the default experiment's ViT
    c.data = base.data
    c.data.augment = False
    c.block = 1  # the residual stream after this block (0-based)
    c.batch_size = 16  # test digits in the batch: B
    c.seed = 0
    c.init_from = ""  # "<workdir>[:<step>]" of a vit_digits run; "": fresh weights
    return c
