"""The chapter's figure of the sinusoidal positional encoding (Vaswani et al. 2017, sec. 3.5): an
experiment that trains nothing.

`program = "positional_encoding"` makes `launch.py run` call attn_jax/programs/
positional_encoding.py: plots/positional_encoding.png shows PE as a heat map over position and
dimension, the matrix of dot products between positions (a function of the offset alone, so
constant along each diagonal) and the dot product against the offset; positional_encoding.txt
holds the caption. Seconds on a CPU.

  python launch.py run --config experiments/positional_encoding_figure.py --workdir runs/pe_figure
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "positional_encoding_figure"
    c.program = "positional_encoding"
    c.length = 64  # positions
    c.d_model = 128  # dimensions
    return c
