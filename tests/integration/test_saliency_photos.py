"""experiments/saliency_photos.py through `launch.py run`, the launcher's path for experiments
that train nothing: the Itti-Koch saliency maps of scikit-learn's two photographs as PNG files,
the usual JSON line, and one-line errors for configs that are not programs (and for a program's
config given to `train`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax.config import ConfigError
from attn_jax.programs import PROGRAMS, ProgramError, load_program_config

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_run_writes_the_saliency_maps_of_the_sklearn_photos(tmp_path):
    workdir = tmp_path / "saliency"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "run",
            "--config",
            "experiments/saliency_photos.py",
            "--workdir",
            str(workdir),
            "--config.sources=('sklearn',)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["program"] == "saliency" and result["images"] == ["china", "flower"]
    assert result["plots"] == 4 and result["workdir"] == str(workdir)
    for name in ("china", "flower"):
        row, col = result["first_fixation"][name]
        assert 0 <= row < 427 and 0 <= col < 640  # both photos are 427 x 640
        for kind in ("maps", "overlay"):
            assert (workdir / "plots" / f"{name}_{kind}.png").read_bytes()[:8] == PNG
    config = json.loads((workdir / "config.json").read_text())
    assert config["program"] == "saliency" and config["sources"] == ["sklearn"]


def test_configs_that_are_not_programs_are_one_line_errors():
    assert "saliency" in PROGRAMS
    with pytest.raises(ProgramError, match="sets no `program`.*launch.py train"):
        load_program_config(ROOT / "experiments" / "vit_digits.py")
    with pytest.raises(ProgramError, match="did you mean 'saliency'"):
        load_program_config(
            ROOT / "experiments" / "saliency_photos.py", ["--config.program=salency"]
        )
    with pytest.raises(ConfigError, match="unknown config key config.source"):
        load_program_config(ROOT / "experiments" / "saliency_photos.py", ["--config.source=x"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_program_config(ROOT / "experiments" / "no_such_file.py")
    # What `launch.py train` loads: a program config says to use `run`, not which keys it lacks.
    with pytest.raises(ConfigError, match="trains nothing.*python launch.py run --config"):
        config_lib.load_config(ROOT / "experiments" / "saliency_photos.py")
