"""Launcher runs as a researcher makes them: `python launch.py train ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from xla_env import xla_flags

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def train_run(tmp_path):
    """train_run(*overrides, timeout=...) -> (workdir, final JSON); a fresh data dir per test."""

    def run(*overrides: str, timeout: int):
        env = dict(
            os.environ,
            TFDS_DATA_DIR=str(tmp_path / "tfds"),
            XLA_FLAGS=xla_flags(1, optimize=True),  # a learning run: execution-bound
        )
        workdir = tmp_path / "run"
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "launch.py"),
                "train",
                "--workdir",
                str(workdir),
                *overrides,
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return workdir, json.loads(proc.stdout.strip().splitlines()[-1])

    return run
