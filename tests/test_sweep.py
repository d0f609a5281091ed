"""Sweep axes, grid expansion, random points and run names (sweeps that run: tests/sweep/ on a
fake trainer, tests/integration/test_launch.py on the real one)."""

import pytest

from attn_jax import sweep
from attn_jax.config import ConfigError


def test_grid_is_the_product_of_axes():
    axes = sweep.parse_axes(["config.optim.lr=1e-3,3e-4", "--config.model.depth=2,4"])
    assert axes == [("optim.lr", ["1e-3", "3e-4"]), ("model.depth", ["2", "4"])]
    points = sweep.sweep_points(axes)
    assert len(points) == 4 and {"optim.lr": "3e-4", "model.depth": "2"} in points


def test_random_points_are_distinct_seeded_subset():
    axes = sweep.parse_axes(["config.a=1,2,3", "config.b=4,5,6"])
    pts = sweep.sweep_points(axes, random_points=4, seed=1)
    assert len(pts) == 4 and len({tuple(p.items()) for p in pts}) == 4
    assert pts == sweep.sweep_points(axes, random_points=4, seed=1)
    assert len(sweep.sweep_points(axes, random_points=99)) == 9  # capped at the grid size


def test_bad_axis_spec():
    with pytest.raises(ConfigError):
        sweep.parse_axes(["optim.lr=1"])
    with pytest.raises(ConfigError, match="lists no values"):
        sweep.parse_axes(["config.optim.lr="])


def test_rank_puts_failed_runs_last():
    recs = [
        {"run": "a", "status": "ok", "test/accuracy": 0.5},
        {"run": "b", "status": "failed", "error": "boom"},
        {"run": "c", "status": "ok", "test/accuracy": 0.9},
    ]
    assert [r["run"] for r in sweep.rank(recs, "test/accuracy", "max")] == ["c", "a", "b"]
    assert [r["run"] for r in sweep.rank(recs, "test/accuracy", "min")] == ["a", "c", "b"]


def test_ranges_only_where_a_sampler_draws():
    axes = sweep.parse_axes(
        ["config.optim.lr=loguniform:1e-4:1e-2", "config.model.depth=int:2:8"], allow_ranges=True
    )
    assert [(k, v.kind, v.low, v.high) for k, v in axes] == [
        ("optim.lr", "loguniform", 1e-4, 1e-2),
        ("model.depth", "int", 2, 8),
    ]
    with pytest.raises(sweep.SweepError, match="list values for a grid"):
        sweep.parse_axes(["config.optim.lr=loguniform:1e-4:1e-2"])
    with pytest.raises(sweep.SweepError, match="LOW < HIGH"):
        sweep.parse_axes(["config.optim.lr=loguniform:0:1"], allow_ranges=True)
    with pytest.raises(sweep.SweepError, match="given twice"):
        sweep.parse_axes(["config.a=1", "config.a=2"])


def test_run_names_sort_by_index_and_stay_file_names():
    assert sweep.run_name(3, {"optim.lr": 0.000123456789, "data.name": "a/b"}) == (
        "003_lr=0.0001235,name=a_b"
    )
