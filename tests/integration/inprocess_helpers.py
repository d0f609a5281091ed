"""Helpers of the in-process learning tests: an experiment's config over a test's tfds dir, and
the records of one split in a run's metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from attn_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[2]


def experiment_config(data_dir, experiment: str, *overrides: str):
    """experiments/<experiment>.py with its data in `data_dir` and `overrides` applied."""
    config = config_lib.load_config(ROOT / "experiments" / f"{experiment}.py")
    config_lib.apply_overrides(config, [f"--config.data.data_dir={data_dir}", *overrides])
    return config


def split_records(workdir: Path, split: str) -> list[dict]:
    """The metrics.jsonl records of `split` ("train", "validation", ...), in order."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]
