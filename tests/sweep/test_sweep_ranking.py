"""The ranking is honest (NaN, inf and missing metrics never win) and the summary files are
replaced atomically."""

import math
import os

import pytest
from sweep_helpers import read_csv

from attn_jax.sweep import summary

T = "validation/accuracy"


def _runs(values, statuses=None):
    statuses = statuses or ["ok"] * len(values)
    records = []
    for i, (v, s) in enumerate(zip(values, statuses, strict=True)):
        record = {"run": f"r{i}", "index": i, "status": s}
        if v != "missing":
            record[T] = v
        records.append(record)
    return records


@pytest.mark.parametrize("mode", ["max", "min"])
def test_nonfinite_missing_and_diverged_rank_below_every_finite_run(mode):
    values = [0.5, math.nan, math.inf, "missing", None, -math.inf, 0.7, 0.99]
    statuses = ["ok"] * 7 + ["diverged"]  # a diverged run's last finite eval does not count
    records = _runs(values, statuses)
    ranked = summary.rank(list(reversed(records)), T, mode)  # input order must not matter
    finite = ["r6", "r0"] if mode == "max" else ["r0", "r6"]
    assert [r["run"] for r in ranked] == finite + ["r1", "r2", "r3", "r4", "r5", "r7"]
    assert summary.best(ranked, T)["run"] == finite[0]


def test_nothing_finite_keeps_run_order_and_names_the_metrics_the_runs_have():
    records = [
        {"run": "b", "index": 1, "status": "ok", "test/accuracy": 0.9},
        {"run": "a", "index": 0, "status": "diverged", T: None},
    ]
    ranked = summary.rank(records, T, "max")
    assert [r["run"] for r in ranked] == ["a", "b"]
    assert summary.best(ranked, T) is None
    message = summary.missing_target_message(ranked, T)
    assert message.count("\n") == 0 and T in message and "test/accuracy" in message
    assert summary.missing_target_message(_runs([0.1]), T) is None


def test_ties_keep_run_order():
    ranked = summary.rank(_runs([0.5, 0.7, 0.5, 0.7]), T, "max")
    assert [r["run"] for r in ranked] == ["r1", "r3", "r0", "r2"]


def test_summary_columns_ranks_and_nonfinite_cells(tmp_path):
    records = summary.rank(
        [
            {"run": "a", "index": 0, "status": "ok", "lr": "1e-3", T: 0.5, "test/loss": 1.0},
            {"run": "b", "index": 1, "status": "ok", "lr": "3e-4", T: math.nan, "step": 7},
            {"run": "c", "index": 2, "status": "failed", "lr": "1", "error": "boom | bang"},
        ],
        T,
        "max",
    )
    summary.write_summary(records, tmp_path, ["lr"], T)
    rows = read_csv(tmp_path / "summary.csv")
    assert list(rows[0]) == [
        "rank",
        "run",
        "status",
        "lr",
        T,
        "test/loss",
        "step",
        "error",
        "workdir",
    ]
    assert [(r["rank"], r["run"], r[T]) for r in rows] == [
        ("1", "a", "0.5"),
        ("", "b", "nan"),
        ("", "c", ""),
    ]
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == f"| rank | run | status | lr | {T} | step | error |"
    assert md[2].startswith("| 1 | a | ok | 1e-3 | 0.5000 |")
    assert md[3].startswith("| - | b | ok | 3e-4 | nan | 7 |")
    assert md[4].endswith("| boom / bang |")  # a pipe in an error must not split the table


def test_a_failed_write_leaves_the_previous_summary_whole(tmp_path, monkeypatch):
    summary.write_summary(_runs([0.5]), tmp_path, [], T)
    before = (tmp_path / "summary.csv").read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        summary.write_summary(_runs([0.5, 0.9]), tmp_path, [], T)
    assert (tmp_path / "summary.csv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.md"]
