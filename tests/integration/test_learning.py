"""The default experiment learns the embedded digits: a short run in the README test command, the
full run (the README's first command, >= 97% test accuracy) marked slow."""

from __future__ import annotations

import json

import pytest


def test_short_run_learns_the_digits(train_run):
    # 300 steps of 64 without augmentation: ~13 epochs, far above chance (10%).
    _, result = train_run(
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
def test_default_experiment_reaches_97_percent(train_run):
    workdir, result = train_run(timeout=900)
    assert result["test/accuracy"] >= 0.97, result
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    test = [r["accuracy"] for r in records if r["split"] == "test"]
    assert test[-1] == result["test/accuracy"] and test[0] < test[-1]
