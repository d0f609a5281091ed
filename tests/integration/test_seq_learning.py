"""Short runs of the sequence experiments through the launcher: each must learn (loss well below
its start, token accuracy far above chance) and write its attention heatmaps. The full runs and
their measured numbers are in the README."""

from __future__ import annotations

import json

import pytest

SPLIT = "test[:250]"  # metrics are named after the eval split expression


@pytest.mark.parametrize(
    "experiment, steps, min_accuracy",
    [("bahdanau_dates", 150, 0.6), ("transformer_dates", 150, 0.6), ("seq2seq_dates", 150, 0.4)],
)
def test_short_run_learns_dates(train_run, experiment, steps, min_accuracy):
    workdir, result = train_run(
        "--config",
        f"experiments/{experiment}.py",
        f"--config.total_steps={steps}",
        f"--config.eval_every={steps}",
        f"--config.checkpoint_every={steps}",
        "--config.log_every=10",
        f"--config.data.eval_split={SPLIT}",
        f"--config.target_metric={SPLIT}/exact_match",
        timeout=600,
    )
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert losses[-1] < 0.5 * losses[0], losses
    # 71 symbols: chance token accuracy is under 2%.
    assert result[f"{SPLIT}/accuracy"] >= min_accuracy, result
    assert 0.0 <= result[f"{SPLIT}/exact_match"] <= 1.0 and result["best_step"] == steps
    if experiment != "seq2seq_dates":  # plain seq2seq has no attention to draw
        assert (workdir / "plots" / "attention_0.png").stat().st_size > 1000
