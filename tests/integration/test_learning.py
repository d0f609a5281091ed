"""The default experiment learns the embedded digits: a short run in the README test command, the
full run (the README's first command, >= 97% test accuracy) marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _train(tmp_path, *overrides, timeout):
    env = dict(
        os.environ,
        TFDS_DATA_DIR=str(tmp_path / "tfds"),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "train", "--workdir", str(workdir), *overrides],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, json.loads(proc.stdout.strip().splitlines()[-1])


def test_short_run_learns_the_digits(tmp_path):
    # 300 steps of 64 without augmentation: ~13 epochs, far above chance (10%).
    _, result = _train(
        tmp_path,
        "--config.num_epochs=0",
        "--config.total_steps=300",
        "--config.batch_size=64",
        "--config.data.augment=false",
        "--config.optim.warmup_steps=30",
        "--config.eval_every=300",
        "--config.checkpoint_every=300",
        "--config.plots=false",
        timeout=600,
    )
    assert result["test/accuracy"] >= 0.85, result
    assert result["train/loss"] < 1.0, result


@pytest.mark.slow
def test_default_experiment_reaches_97_percent(tmp_path):
    workdir, result = _train(tmp_path, timeout=900)
    assert result["test/accuracy"] >= 0.97, result
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    test = [r["accuracy"] for r in records if r["split"] == "test"]
    assert test[-1] == result["test/accuracy"] and test[0] < test[-1]
