"""Experiment configs, one `get_config()` per file (a package, so that one experiment derives
from another with `from experiments.x import get_config`).

A file with named variants (big_vision's `get_config(arg)`) lists them in `VARIANTS`; the
launcher reads `--config experiments/FILE.py:VARIANT`, and without the suffix the first one.
"""
