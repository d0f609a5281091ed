"""Evaluators by name, each on its split and period: validation selects the best checkpoint and
test is reported at that step."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import pytest

from attn_jax import config as config_lib
from attn_jax.eval.evaluators import Evaluator, EvaluatorConfigError, build_evaluators
from attn_jax.tasks.classification import Classification
from attn_jax.train import loop
from attn_jax.train.metric_writers import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def digits(tmp_path, *overrides):
    config = config_lib.load_config(ROOT / "experiments" / "vit_digits.py")
    config.evals = ml_collections.ConfigDict(
        {
            "validation": {"split": "train[90%:]", "every": 4, "type": "task"},
            "test": {"split": "test", "every": 8, "type": "classification"},
        }
    )
    config_lib.apply_overrides(
        config,
        [
            f"--config.data.data_dir={tmp_path / 'tfds'}",
            "--config.data.train_split=train[:90%]",
            "--config.total_steps=12",
            "--config.batch_size=32",
            "--config.eval_batch_size=128",
            "--config.model.hidden_size=16",
            "--config.model.mlp_dim=32",
            "--config.model.depth=1",
            "--config.log_every=4",
            "--config.checkpoint_every=4",
            "--config.plots=false",
            "--config.target_metric=validation/accuracy",
            *overrides,
        ],
    )
    return config


def test_each_evaluator_runs_on_its_period_and_test_is_reported_at_the_best_step(tmp_path):
    result = loop.train(digits(tmp_path), tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if r["split"] == "validation"] == [4, 8, 12]
    assert [r["step"] for r in rows if r["split"] == "test"] == [8, 12]
    best = result["best"]
    assert best["step"] == result["best_step"]
    by_step = {r["step"]: r for r in rows if r["split"] == "validation"}
    assert best["validation/accuracy"] == max(r["accuracy"] for r in by_step.values())
    assert "test/accuracy" in best and "test/loss" in best
    if best["step"] in (8, 12):  # test ran there: the same numbers as its row
        row = next(r for r in rows if r["split"] == "test" and r["step"] == best["step"])
        assert best["test/accuracy"] == row["accuracy"]

    only_test = loop.evaluate(tmp_path / "run", evals=("test",))
    assert set(only_test) == {"step", "test/loss", "test/accuracy"}
    both = loop.evaluate(tmp_path / "run", best=True)
    assert both["step"] == best["step"] and both["validation/accuracy"] == pytest.approx(
        best["validation/accuracy"]
    )


def test_a_target_of_no_evaluator_and_a_wrong_type_are_config_errors(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="is not reported"):
        loop.train(digits(tmp_path, "--config.target_metric=dev/accuracy"), tmp_path / "a")
    config = digits(tmp_path, "--config.evals.test.type=miou")
    with pytest.raises(EvaluatorConfigError, match="does not fit the task, which measures"):
        build_evaluators(config, Classification(num_classes=10))


def test_a_config_without_evals_evaluates_its_eval_split(tmp_path):
    config = config_lib.load_config(ROOT / "experiments" / "vit_digits.py")
    with config.unlocked():  # as an older config.json
        if "evals" in config:
            del config["evals"]
    (ev,) = build_evaluators(config, Classification(num_classes=10))
    assert ev == Evaluator("test", "test", config.eval_every, "task", config.eval_batch_size)
    assert ev.due(config.eval_every, 10**6) and ev.due(7, 7) and not ev.due(1, 10**6)
