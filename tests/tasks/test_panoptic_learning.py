"""The DETR experiments of the digit scenes train through the trainer in short versions: DETR with
its mask head (experiments/detr_seg_digit_scenes.py, from scratch here: the full experiment starts
from a detr_digits run) and DETR on a Swin backbone (experiments/detr_swin_digits.py). Each run
must lower its loss and report PQ/SQ/RQ and box and mask AP in [0, 1].

Marked slow: compiling DETR's train and evaluation steps dominates (about 100 s of CPU for 20
steps, measured on 2 busy cores); the fast version, a tiny Swin-backbone DETR with masks learning
one batch in-process with the same task, is in tests/tasks/test_panoptic_task.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax.train import loop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One tfds dir for the module: digit_scenes is prepared once for both runs."""
    return tmp_path_factory.mktemp("tfds")


def _short_config(data_dir, experiment: str, steps: int, *overrides: str):
    config = config_lib.load_config(ROOT / "experiments" / f"{experiment}.py")
    config_lib.apply_overrides(
        config,
        [
            f"--config.data.data_dir={data_dir}",
            f"--config.total_steps={steps}",
            f"--config.eval_every={steps}",
            "--config.log_every=5",
            "--config.batch_size=16",
            "--config.eval_batch_size=32",
            # Small evaluation splits: the metrics' plumbing, not their values, is under test.
            "--config.evals.validation.split=train[90%:91%]",
            "--config.evals.test.split=test[:32]",
            "--config.optim.lr=1e-3",
            "--config.optim.warmup_steps=5",
            *overrides,
        ],
    )
    return config


def _train_losses(workdir: Path) -> list[float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


def _in_unit_interval(value: float) -> bool:
    # pycocotools reports -1 for an area range without ground truth.
    return math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_short_mask_head_run_lowers_its_loss_and_reports_panoptic_quality(tmp_path, data_dir):
    workdir = tmp_path / "run"
    result = loop.train(_short_config(data_dir, "detr_seg_digit_scenes", 20), workdir)
    losses = _train_losses(workdir)
    assert losses[-1] < losses[0], losses
    for split in ("validation", "test"):
        for name in ("PQ", "SQ", "RQ", "mask_AP", "mask_AP50", "AP", "AP50"):
            assert _in_unit_interval(result[f"{split}/{name}"]), (split, name, result)
        assert result[f"{split}/loss_dice"] > 0 and result[f"{split}/loss_mask"] > 0
    assert (workdir / "plots" / "panoptic_overlays.png").stat().st_size > 5_000


@pytest.mark.slow
def test_short_swin_backbone_run_lowers_its_loss(tmp_path, data_dir):
    workdir = tmp_path / "run"
    config = _short_config(data_dir, "detr_swin_digits", 20, "--config.plots=false")
    result = loop.train(config, workdir)
    losses = _train_losses(workdir)
    assert losses[-1] < losses[0], losses
    assert _in_unit_interval(result["test/AP50"]) and _in_unit_interval(result["validation/AP"])
