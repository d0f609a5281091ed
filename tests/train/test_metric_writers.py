"""metrics.jsonl is strict JSON, survives a torn last line, and a resume rewrites it atomically
and purges TensorBoard's replayed steps."""

from __future__ import annotations

import json
import math

import pytest

from attn_jax.train import metric_writers
from attn_jax.train.metric_writers import MetricWriter, read_metrics, strict_record


def strict_loads(line: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_become_null_with_the_reason():
    record = strict_record({"step": 3, "loss": float("nan"), "x": {"y": float("-inf")}, "ok": 1.5})
    assert record["loss"] is None and record["x"]["y"] is None and record["ok"] == 1.5
    assert record["nonfinite"] == {"loss": "nan", "x.y": "-inf"}
    strict_loads(json.dumps(record, allow_nan=False))


def test_the_file_is_strict_json_and_a_torn_last_line_is_dropped(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(1, "train", {"loss": math.inf, "accuracy": 0.5}, echo=False)
    writer.write(2, "train", {"loss": 1.0, "accuracy": 0.5}, echo=False)
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [strict_loads(x)["step"] for x in lines] == [1, 2]
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "split": "tra')  # a kill in the middle of a write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    resumed = MetricWriter(tmp_path, resume_step=1)
    resumed.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_purges_tensorboard_after_the_checkpoint(tmp_path, monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, logdir, **kwargs):
            seen.update(kwargs)

        def close(self):
            pass

    import tensorboardX

    monkeypatch.setattr(tensorboardX, "SummaryWriter", Recorder)
    MetricWriter(tmp_path, resume_step=40).close()
    assert seen["purge_step"] == 41
    MetricWriter(tmp_path).close()
    assert seen["purge_step"] is None


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_finite_values_keep_their_type(value):
    import numpy as np

    record = metric_writers.strict_record(
        {"a": 2, "b": True, "c": "s", "d": value, "e": np.float32(0.25), "f": [1.0, value]}
    )
    assert record["a"] == 2 and record["b"] is True and record["c"] == "s"
    assert record["d"] is None and record["e"] == 0.25 and record["f"] == [1.0, None]
    assert set(record["nonfinite"]) == {"d", "f[1]"}
