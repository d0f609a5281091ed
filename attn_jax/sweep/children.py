"""The `launch.py train` processes of a sweep, one per run.

They are started so that they cannot outlive the sweep and are not hit by the terminal's Ctrl-C
(the sweep decides what happens to them), stopped the way a cluster scheduler stops a job
(SIGTERM, so the trainer writes its preemption checkpoint and exits 75; SIGKILL after a grace
period), and read back only through what the trainer's protocol promises: the exit code, the
last JSON line on stdout, the last error line on stderr and `metrics.jsonl`.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from attn_jax.errors import EXIT_DIVERGED, EXIT_PREEMPTED

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_TAIL_BYTES = 1 << 16  # stderr of a long run is mostly progress bars: its end is what matters


def _parent_death_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel send SIGTERM to the child when the sweep dies.

    Without it a SIGKILLed sweep (OOM killer, `kill -9`, a lost ssh session) leaves its runs
    training unsupervised. Linux only; elsewhere children of a killed sweep keep running.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: between fork and exec the child may only do async-signal-safe
    # work, so the hook must not load libraries or allocate.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))
        if os.getppid() != parent:  # the sweep died before prctl: no signal would ever come
            os._exit(EXIT_PREEMPTED)

    return hook


class Child:
    """One run's process and why the sweep stopped it, if it did.

    The kernel delivers the parent-death signal when the *thread* that started the child exits,
    so children are started (and polled) from the sweep's main thread only.
    """

    def __init__(self, cmd: Sequence[str], workdir: Path, *, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stop_reason: str | None = None  # "stopped", "timeout", "pruned", ...
        self.started = time.monotonic()
        self._term_sent: float | None = None
        self._killed = False
        self.returncode: int | None = None
        with (self.workdir / "stdout.log").open("w") as out:
            with (self.workdir / "stderr.log").open("w") as err:
                self.proc = subprocess.Popen(
                    list(cmd),
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    # Its own process group: the terminal's Ctrl-C reaches the sweep only.
                    process_group=0,
                    preexec_fn=_parent_death_hook(),
                )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> int | None:
        """The exit code once the run has ended (its whole process group is gone by then)."""
        if self.returncode is not None:
            return self.returncode
        # Look without reaping: while the exited child is a zombie its pid (= its process group
        # id) cannot be reused, so killing the group cannot hit an unrelated process.
        try:
            exited = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere: its pid may be reused, leave it alone
            self.returncode = self.proc.wait()
            return self.returncode
        if exited is None:
            return None
        self._signal_group(signal.SIGKILL)  # helpers it left behind (data loaders, compilers)
        self.returncode = self.proc.wait()
        return self.returncode

    def terminate(self, reason: str) -> None:
        """Asks the run to stop (SIGTERM: checkpoint, exit 75); the first reason given is kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._term_sent is None and self.returncode is None:
            self._term_sent = time.monotonic()
            self._send(signal.SIGTERM)

    def enforce(self, grace: float) -> None:
        """SIGKILLs a run that has not exited `grace` seconds after its SIGTERM."""
        if (
            self._term_sent is not None
            and not self._killed
            and self.returncode is None
            and time.monotonic() - self._term_sent > grace
        ):
            self.kill()

    def kill(self) -> None:
        self._killed = True
        self._signal_group(signal.SIGKILL)

    def _send(self, sig: int) -> None:
        if self.returncode is not None:
            return
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def _signal_group(self, sig: int) -> None:
        if self.returncode is not None:  # reaped: the group id may belong to someone else now
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # -- what the run left ------------------------------------------------------------------------
    def final_result(self) -> dict | None:
        """The trainer's last JSON line on stdout (null for non-finite values), if any."""
        return last_json_line(_tail(self.workdir / "stdout.log"))

    def last_error_line(self) -> str:
        """The line that says why the run failed: its last `error: ...`, else its last line."""
        lines = [ln.strip() for ln in _tail(self.workdir / "stderr.log").splitlines() if ln.strip()]
        for line in reversed(lines):
            if line.startswith("error:"):
                return line[len("error:") :].strip()
        if lines:
            return lines[-1]
        return describe_exit(self.returncode)


def describe_exit(returncode: int | None) -> str:
    """ "exit status 2", or "killed by SIGKILL" for a negative (signal) return code."""
    if returncode is not None and returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - _TAIL_BYTES, 0))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def last_json_line(text: str) -> dict | None:
    """The last line of `text` that is a JSON object (the trainer's result line), or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def as_number(value: object) -> float | None:
    """A metric value as a float (NaN/inf kept), or None when absent or not a number.

    The trainer writes non-finite values as null (strict JSON) or, in older metrics.jsonl files,
    as the strings "nan"/"inf".
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def is_finite(value: object) -> bool:
    """Whether a metric value is a finite number (None, NaN, inf and text are not)."""
    number = as_number(value)
    return number is not None and math.isfinite(number)


def classify(returncode: int, result: dict | None, stop_reason: str | None) -> str:
    """The run's status from how it ended: ok, failed, diverged, stopped, timeout or pruned.

    A run the sweep stopped for a timeout or a pruner keeps that reason whatever it exits with;
    one stopped because the sweep itself is stopping is `stopped` only if it exited as preempted
    (75) or by a signal: anything else (a crash, a config error) is what really ended it.
    """
    if stop_reason in ("timeout", "pruned"):
        return stop_reason
    if returncode == 0 and result is not None:
        return "ok"
    if returncode == EXIT_PREEMPTED or (stop_reason is not None and returncode < 0):
        return "stopped"
    if returncode == EXIT_DIVERGED:
        return "diverged"
    return "failed"


class MetricsTail:
    """New records of a run's metrics.jsonl since the last read (a resumed run rewrites it)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict]:
        """The complete records written since the last call (a partial last line waits)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:  # truncated by a resume: read it again from the start
            self._offset, self._partial = 0, b""
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def last_step(workdir: Path) -> int | None:
    """The last step a run logged in its metrics.jsonl (where a stopped run got to)."""
    for line in reversed(_tail(Path(workdir) / "metrics.jsonl").splitlines()):
        try:
            step = json.loads(line).get("step")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


class StopSignals:
    """SIGINT and SIGTERM to the sweep, as a count its loop reads instead of an exception.

    The sweep must get to stop its runs and write its summary, so the signal only sets a flag;
    the first asks the runs to checkpoint and stop, a second one kills them at once. Installed
    only from the main thread (Python delivers signals there); the previous handlers come back
    on exit.
    """

    def __init__(self) -> None:
        self.count = 0
        self.name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.count += 1
        self.name = self.name or signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.count > 0
