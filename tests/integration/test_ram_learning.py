"""RAM learns the translated digits through the launcher: a short run of experiments/ram_digits.py
(250 steps, 2 glimpses) far above chance (10%), with the glimpse-path figure written; the full
experiment (>= 90%) marked slow."""

from __future__ import annotations

import json

import pytest

CONFIG = "--config=experiments/ram_digits.py"


def test_short_run_learns_translated_digits(train_run):
    workdir, result = train_run(
        CONFIG,
        "--config.total_steps=250",
        "--config.eval_every=250",
        "--config.optim.lr=3e-3",
        "--config.optim.warmup_steps=30",
        "--config.model.num_glimpses=2",
        timeout=600,
    )
    assert result["test/accuracy"] >= 0.5, result  # chance: 10%
    # The learned baseline predicts the reward better than b = 0 (whose error is the accuracy).
    assert result["test/baseline_error"] < 0.8 * result["test/accuracy"], result
    assert (workdir / "plots" / "glimpse_paths.png").stat().st_size > 10_000
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert {"reward", "baseline_error", "reinforce"} <= set(train[-1])


@pytest.mark.slow
def test_full_experiment_reaches_90_percent(train_run):
    _, result = train_run(CONFIG, timeout=1200)
    assert result["test/accuracy"] >= 0.9, result
