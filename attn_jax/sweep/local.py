"""The local sweep: a grid (or N random points of it) on this machine, `--parallel` runs at once,
each a `launch.py train` subprocess in its own workdir, ranked in summary.{csv,md}.

Runs are separate processes so that a crash, an out-of-memory kill or a bad value in one of them
cannot take the others down. One loop in the main thread starts, watches and stops them: the
summary is rewritten after every finished run, `--run-timeout` stops a run that takes too long,
and SIGINT/SIGTERM to the sweep launch nothing more, stop the running runs the way a scheduler
would (SIGTERM, so each checkpoints; SIGKILL after `stop_grace` seconds) and leave the summary of
what finished.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from attn_jax import config as config_lib
from attn_jax.sweep import children, grid, summary


@dataclasses.dataclass
class SweepReport:
    """What a sweep did.

    Attributes:
      records: one dict per finished run, ranked (see `summary.rank`).
      best: the best run's record, or None when no run has a finite target.
      stopped: the sweep was stopped (SIGINT/SIGTERM) before every run finished.
      not_started: names of the runs a stopped sweep never launched.
      out_dir: the folder holding summary.csv and summary.md.
    """

    records: list[dict]
    best: dict | None
    stopped: bool
    not_started: list[str]
    out_dir: Path


def train_command(
    launcher: Path,
    config_path: str,
    workdir: Path,
    overrides: Sequence[str],
    point: dict[str, object],
) -> list[str]:
    """`python launch.py train` for one point; the point's values win over shared overrides."""
    return [
        sys.executable,
        str(launcher),
        "train",
        "--config",
        str(config_path),
        "--workdir",
        str(workdir),
        *overrides,
        *grid.override_args(point),
    ]


def run_record(
    name: str,
    index: int,
    point: dict[str, object],
    child: children.Child,
    target: str,
    run_timeout: float | None = None,
) -> dict:
    """The summary row of a finished child: status, metrics of its last JSON line, error."""
    rc = child.returncode
    assert rc is not None, "run_record needs a finished child"
    result = child.final_result()
    status = children.classify(rc, result, child.stop_reason)
    metrics = {k: v for k, v in (result or {}).items() if "/" in k}
    # Strict JSON writes NaN/inf as null and names them under "nonfinite": keep what they were.
    nonfinite = (result or {}).get("nonfinite")
    for key, text in (nonfinite if isinstance(nonfinite, dict) else {}).items():
        if key in metrics and metrics[key] is None:
            metrics[key] = children.as_number(text)
    step = (result or {}).get("step")
    if not isinstance(step, int):
        step = children.last_step(child.workdir)
    if status == "ok":
        value = metrics.get(target)
        error = "" if children.is_finite(value) else f"{target} is {_describe(value)}"
    elif status in ("failed", "diverged"):
        error = child.last_error_line() if rc != 0 else "exited 0 without a JSON line on stdout"
    elif status == "timeout":
        error = f"over --run-timeout {run_timeout:g} s at step {step}"
    else:
        who = "the sweep" if child.stop_reason else children.describe_exit(rc)
        error = f"stopped by {who} at step {step}; `train --workdir` on it resumes it"
    return {
        "run": name,
        "index": index,
        "status": status,
        **point,
        **metrics,
        "step": step,
        "error": error,
        "workdir": str(child.workdir),
    }


def _describe(value: object) -> str:
    return "missing from its result" if value is None else f"{value} (not finite)"


def run_sweep(
    launcher: Path,
    config_path: str,
    sweep_specs: Sequence[str],
    out_dir: Path,
    *,
    overrides: Sequence[str] = (),
    parallel: int = 1,
    random_points: int | None = None,
    seed: int = 0,
    run_timeout: float | None = None,
    stop_grace: float = 60.0,
    poll_interval: float = 0.1,
    log: TextIO | None = None,
) -> SweepReport:
    """Runs every point of the grid and writes summary.{csv,md} into `out_dir` as runs finish.

    Args:
      launcher: the script run as `python <launcher> train ...` for each point (launch.py).
      config_path: the experiment file every run trains.
      sweep_specs: the `--sweep config.KEY=V1,V2` axes.
      out_dir: the sweep folder; run i trains in out_dir/<run_name(i, point)>.
      overrides: `--config.k=v` applied to every run (the points' values win).
      parallel: runs at once.
      random_points: run this many distinct random points of the grid instead of all.
      seed: seed of `random_points`.
      run_timeout: seconds after which a run is stopped and recorded as `timeout`.
      stop_grace: seconds a run gets to checkpoint after SIGTERM before it is SIGKILLed.
      poll_interval: seconds between looks at the running children.
      log: where progress lines go (stderr by default).

    Returns:
      A SweepReport; `stopped` is True when SIGINT/SIGTERM ended the sweep early.

    Raises:
      ConfigError, SweepError: a bad experiment file, axis, key or option, before any run.
    """
    log = log or sys.stderr
    if parallel < 1:
        raise grid.SweepError(f"--parallel must be at least 1; got {parallel}")
    if run_timeout is not None and run_timeout <= 0:
        raise grid.SweepError(
            f"--run-timeout must be a positive number of seconds; got {run_timeout}"
        )
    base = config_lib.load_config(config_path)
    config_lib.apply_overrides(base, overrides)
    axes = grid.parse_axes(sweep_specs)
    grid.check_keys(base, axes)
    target, mode = base.target_metric, base.get("target_mode", "max")
    axes_keys = [k for k, _ in axes]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    pending = deque(enumerate(grid.sweep_points(axes, random_points, seed)))
    running: list[tuple[int, dict, str, children.Child]] = []
    records: list[dict] = []
    not_started: list[str] | None = None  # set when a stop is first seen
    with children.StopSignals() as stop:
        while pending or running:
            if stop and not_started is None:
                not_started = [grid.run_name(i, p) for i, p in pending]
                pending.clear()
                print(
                    f"[sweep] {stop.name}: stopping {len(running)} running run(s) (SIGTERM, "
                    f"SIGKILL after {stop_grace:g} s); {len(not_started)} not started",
                    file=log,
                    flush=True,
                )
            for *_, child in running:
                if stop:
                    child.terminate("stopped")
                    if stop.count > 1:  # asked twice: the user does not want to wait
                        child.kill()
                elif run_timeout is not None and child.elapsed() > run_timeout:
                    child.terminate("timeout")
                child.enforce(stop_grace)
            while pending and len(running) < parallel and not stop:
                index, point = pending.popleft()
                name = grid.run_name(index, point)
                cmd = train_command(launcher, config_path, out_dir / name, overrides, point)
                running.append((index, point, name, children.Child(cmd, out_dir / name)))
            finished = [entry for entry in running if entry[3].poll() is not None]
            for entry in finished:
                running.remove(entry)
                index, point, name, child = entry
                record = run_record(name, index, point, child, target, run_timeout)
                records.append(record)
                shown = record["error"] or record.get(target)
                print(f"[sweep] {name}: {record['status']} {shown}", file=log, flush=True)
                summary.write_summary(
                    summary.rank(records, target, mode), out_dir, axes_keys, target
                )
            if running and not finished:
                time.sleep(poll_interval)

    not_started = not_started or []
    ranked = summary.rank(records, target, mode)
    summary.write_summary(ranked, out_dir, axes_keys, target)
    message = summary.missing_target_message(ranked, target)
    if message:
        print(f"[sweep] {message}", file=log, flush=True)
    return SweepReport(
        records=ranked,
        best=summary.best(ranked, target),
        stopped=bool(stop) and (bool(not_started) or any(r["status"] == "stopped" for r in ranked)),
        not_started=not_started,
        out_dir=out_dir,
    )
