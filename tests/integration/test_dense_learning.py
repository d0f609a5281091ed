"""Segmentation and detection learn the embedded digit scenes through the trainer: short runs of
SETR and DETR and the full experiments, all marked slow. Their fast versions are in tests/tasks/:
a tiny SETR learns two-class squares (test_segmentation_task.py); DETR's matched loss falls and ten
steps on four devices equal one device (test_detection_task.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from attn_jax import config as config_lib
from attn_jax.train import loop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One tfds dir for the module: digit_scenes is prepared once for both readings."""
    return tmp_path_factory.mktemp("tfds")


def _config(data_dir, experiment: str, *overrides: str):
    config = config_lib.load_config(ROOT / "experiments" / f"{experiment}.py")
    config_lib.apply_overrides(config, [f"--config.data.data_dir={data_dir}", *overrides])
    return config


def _train_records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


@pytest.mark.slow
def test_short_setr_run_segments_the_digits(tmp_path, data_dir):
    # Predicting background everywhere scores mIoU ~0.08 (its IoU ~0.9, ten digit classes at 0);
    # 8x8 patches (64 tokens) keep the run short, the full experiment uses 4x4.
    config = _config(
        data_dir,
        "setr_digit_scenes",
        "--config.num_epochs=0",
        "--config.total_steps=200",
        "--config.eval_every=200",
        "--config.log_every=10",
        "--config.model.encoder.patch_size=8",
        "--config.optim.lr=2e-3",
        "--config.optim.warmup_steps=30",
    )
    workdir = tmp_path / "run"
    result = loop.train(config, workdir)
    assert result["test/miou"] >= 0.15, result
    records = _train_records(workdir)
    assert records[-1]["loss"] < 0.5 * records[0]["loss"], records
    assert (workdir / "plots" / "segmentation_overlays.png").stat().st_size > 5_000


@pytest.mark.slow
def test_short_detr_run_moves_boxes_toward_the_digits(tmp_path, data_dir):
    # On the four host devices of tests/conftest.py: matching runs on each device, so no device
    # waits for another's host callback (which could starve past XLA:CPU's rendezvous timeout).
    config = _config(
        data_dir,
        "detr_digits",
        "--config.total_steps=100",
        "--config.eval_every=100",
        "--config.log_every=10",
        "--config.batch_size=32",
        "--config.optim.lr=1e-3",
        "--config.optim.warmup_steps=20",
    )
    assert jax.device_count() == 4  # the trainer's mesh spans them all
    workdir = tmp_path / "run"
    result = loop.train(config, workdir)
    records = _train_records(workdir)
    first, last = records[0], records[-1]
    # The matched losses fall: boxes move toward their targets (L1 and GIoU) and the set loss drops.
    assert last["loss"] < 0.75 * first["loss"], (first, last)
    assert last["loss_bbox"] < 0.5 * first["loss_bbox"], (first, last)
    assert last["loss_giou"] < first["loss_giou"], (first, last)
    assert 0.0 <= result["test/AP50"] <= 1.0 and "test/AP" in result, result
    assert (workdir / "plots" / "detections.png").stat().st_size > 5_000


@pytest.mark.slow
def test_setr_digit_scenes_reaches_its_readme_miou(tmp_path, data_dir):
    result = loop.train(_config(data_dir, "setr_digit_scenes"), tmp_path / "run")
    assert result["test/miou"] >= 0.75, result  # 0.805 measured (README)


@pytest.mark.slow
def test_detr_digits_reaches_ap50_of_0_7(tmp_path, data_dir):
    result = loop.train(_config(data_dir, "detr_digits"), tmp_path / "run")
    assert result["test/AP50"] >= 0.7, result  # 0.965 measured (README)
