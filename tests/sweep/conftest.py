"""Sweep tests run the sweep for real (subprocesses, signals, databases) on a fake trainer that
speaks the trainer's protocol in a fraction of a second and imports no JAX."""

from __future__ import annotations

import signal
import subprocess

import pytest
from sweep_helpers import ROOT, kill_leftover_runs


@pytest.fixture
def spawn():
    """spawn(cmd, **popen_kwargs) -> Popen; whatever is still running at the end is killed."""
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("cwd", ROOT)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(cmd, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@pytest.fixture
def sweep_dir(tmp_path):
    """The sweep folder; fake runs a failed test left running are killed afterwards."""
    path = tmp_path / "sweep"
    yield path
    kill_leftover_runs(path)
