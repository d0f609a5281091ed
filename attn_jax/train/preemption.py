"""Stopping a run cleanly: SIGTERM (what SLURM, Kubernetes and cloud preemption send), SIGINT
(Ctrl-C) and a wall-clock limit (`config.max_runtime`) all become one request that the loop reads
between steps, so the step in flight finishes and a checkpoint of exactly that step is written.

One process: Python signal handlers set a flag; a second Ctrl-C interrupts at once.

Several processes must stop at the same step, or the next collective waits forever for the
processes that left. JAX's distributed runtime has a preemption service for this: its SIGTERM
handler (installed in C++ by `jax.distributed.initialize`) tells the coordination service, which
picks a step that every process reaches, and `reached_preemption_sync_point(step)` turns true at
that step on all of them. SIGINT and the wall-clock limit are routed through it by sending SIGTERM
to this process, so Python never replaces the runtime's SIGTERM handler.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

import jax


class StopRequest:
    """Whether the loop should stop after the current step, and why.

    Use as a context manager around the loop: handlers are installed on entry and the previous
    ones restored on exit.
    """

    def __init__(self, *, max_runtime: float = 0.0):
        self.max_runtime = float(max_runtime)
        self.reason: str | None = None
        self._multi = jax.process_count() > 1
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None
        self._started = time.monotonic()

    # -- installing ------------------------------------------------------------------------------
    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            signals = (signal.SIGINT,) if self._multi else (signal.SIGINT, signal.SIGTERM)
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        if self.max_runtime > 0:
            self._timer = threading.Timer(self.max_runtime, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.reason is not None and not self._multi:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self._request(f"{signal.Signals(signum).name} received")

    def _on_timeout(self) -> None:
        self._request(f"config.max_runtime of {self.max_runtime:g} s reached")

    def _request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self._multi:
            # Through the runtime's preemption service, which makes every process agree on the
            # step; its own SIGTERM handler is the one that must see this.
            os.kill(os.getpid(), signal.SIGTERM)

    # -- asking ----------------------------------------------------------------------------------
    def should_stop(self, step: int) -> bool:
        """True once a stop was requested (on every process at the same `step`, when several).

        Must be called after every step by every process in a multi-process run.
        """
        if not self._multi:
            return self.reason is not None
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(step):
            self.reason = self.reason or "SIGTERM received by a process of the job"
            return True
        return False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started
