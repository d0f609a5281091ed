"""The attention ResNets learn the embedded digits through the trainer: a short in-process run of
a tiny ResNet that carries every mechanism at once (SE in each block, a non-local block, AA-conv in
the second stage), far above chance (10%), with its attention figures written; the four full
experiments (>= 97%) marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax.train import loop

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path, experiment: str, *overrides: str):
    config = config_lib.load_config(ROOT / "experiments" / f"{experiment}.py")
    config_lib.apply_overrides(config, [f"--config.data.data_dir={tmp_path / 'tfds'}", *overrides])
    return config


def test_short_run_with_every_mechanism_learns_the_digits(tmp_path):
    config = _config(
        tmp_path,
        "aaconv_digits",
        "--config.total_steps=250",
        "--config.eval_every=250",
        "--config.optim.lr=3e-3",
        "--config.optim.warmup_steps=20",
        "--config.data.augment=false",
        "--config.model.stage_sizes=(1, 1)",
        "--config.model.width=16",
        "--config.model.aa_stages=(2,)",
        "--config.model.block_attention=se",
        "--config.model.non_local_stages=(1,)",
    )
    workdir = tmp_path / "run"
    result = loop.train(config, workdir)
    assert result["test/accuracy"] >= 0.85, result
    assert result["train/loss"] < 1.2, result
    for figure in ("aaconv_attention.png", "non_local_attention.png", "se_excitation.png"):
        assert (workdir / "plots" / figure).stat().st_size > 5_000, figure


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment", ["resnet_digits", "se_resnet_digits", "nonlocal_digits", "aaconv_digits"]
)
def test_full_experiment_reaches_97_percent(tmp_path, experiment):
    result = loop.train(_config(tmp_path, experiment), tmp_path / "run")
    assert result["test/accuracy"] >= 0.97, result
