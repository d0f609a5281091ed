"""`launch.py info` describes every experiment on a machine where no dataset is prepared: a model
is built from its config, never from its data (catalog datasets need no download, embedded ones
are not built)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax.train import loop

ROOT = Path(__file__).resolve().parents[2]
# Every file, and every variant of a file with variants ("experiments/x.py:variant").
EXPERIMENTS = config_lib.experiment_specs(ROOT / "experiments")


def is_training(path: str) -> bool:
    return "program" not in config_lib.import_config(path)


@pytest.mark.parametrize(
    "path",
    [p for p in EXPERIMENTS if is_training(p)],
    ids=lambda p: Path(p).name.replace(".py", ""),
)
def test_info_needs_no_prepared_dataset(path, tmp_path, monkeypatch):
    empty = tmp_path / "no_datasets"
    empty.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
    config = config_lib.load_config(path)
    config.data.data_dir = str(empty)
    # Without the FLOP count: that second trace reads no data either, and
    # test_launch.py::test_info_reports_published_vit_b16_count checks it through the launcher.
    result = loop.info(config, flops=False)
    assert result["params"] > 0 and result["total_steps"] > 0
    assert result["experiment"] == config.experiment
    assert not any(empty.iterdir()), f"info wrote into the data dir: {list(empty.iterdir())}"
