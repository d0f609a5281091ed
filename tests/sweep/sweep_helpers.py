"""Helpers of the sweep tests: the fake trainer's command lines, waiting, reading summaries."""

from __future__ import annotations

import csv
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAKE_LAUNCHER = HERE / "fake_launcher.py"
FAKE_CONFIG = HERE / "fake_experiment.py"


def sweep_command(*args: str) -> list[str]:
    """`launch.py sweep` on the fake trainer and its experiment."""
    return [
        sys.executable,
        str(ROOT / "launch.py"),
        "sweep",
        "--launcher",
        str(FAKE_LAUNCHER),
        "--config",
        str(FAKE_CONFIG),
        *args,
    ]


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> object:
    """Polls `condition` until it is truthy; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def process_ended(pid: int) -> bool:
    """True once `pid` has exited (gone, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def kill_leftover_runs(sweep_dir: Path) -> None:
    """Kills fake runs a failing test left behind (by the pids they recorded)."""
    for starts in Path(sweep_dir).glob("*/starts"):
        for pid in starts.read_text().split():
            if not process_ended(int(pid)) and "fake_launcher" in _cmdline(int(pid)):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def run_pids(sweep_dir: Path) -> dict[str, list[int]]:
    """{run name: pids of its starts}, from the fake trainer's `starts` files."""
    return {
        starts.parent.name: [int(x) for x in starts.read_text().split()]
        for starts in Path(sweep_dir).glob("*/starts")
    }
