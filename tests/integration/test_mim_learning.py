"""Masked image modeling learns the embedded digits through the trainer: a short MAE run in the
default suite, both pretraining experiments in full marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax.train import loop

ROOT = Path(__file__).resolve().parents[2]


def _config(data_dir, experiment: str, *overrides: str):
    config = config_lib.load_config(ROOT / "experiments" / experiment)
    config_lib.apply_overrides(config, [f"--config.data.data_dir={data_dir}", *overrides])
    return config


def _records(workdir: Path, split: str) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_short_mae_run_reconstructs_the_digits(tmp_path):
    # The first logged train loss is the mean over steps 1-5, still in the warm-up (lr <= 1.2e-3):
    # about the initial model's loss, ~2 (an untrained decoder predicts noise); 40 steps bring the
    # test loss to 0.47 (measured).
    config = _config(
        tmp_path / "tfds",
        "mim_digits.py:mae",
        "--config.num_epochs=0",
        "--config.total_steps=40",
        "--config.eval_every=40",
        "--config.batch_size=64",
        "--config.log_every=5",
        "--config.data.augment=false",
        "--config.optim.lr=3e-3",
        "--config.optim.warmup_steps=10",
        "--config.task.num_plot_examples=3",
    )
    workdir = tmp_path / "run"
    result = loop.train(config, workdir)
    initial = _records(workdir, "train")[0]["loss"]
    assert initial > 0.8, initial
    assert result["test/loss"] < 0.6 * initial, (initial, result)
    assert (workdir / "plots" / "reconstructions.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment, ceiling",
    [("mim_digits.py:mae", 0.35), ("mim_digits.py:simmim", 0.50)],  # measured: 0.314 and 0.454
)
def test_pretraining_experiments_reach_their_measured_loss(tmp_path, experiment, ceiling):
    workdir = tmp_path / "run"
    result = loop.train(_config(tmp_path / "tfds", experiment), workdir)
    assert result["test/loss"] < ceiling, result
    test = [r["loss"] for r in _records(workdir, "test")]
    assert test[-1] < test[0], test
