"""Hyperparameter sweeps: every run a `launch.py train` subprocess in its own workdir, ranked by the
experiment's target metric in summary.csv and summary.md.

- `local.run_sweep`: a grid (or N random points of it) on this machine, `--parallel` at a time,
  stoppable with Ctrl-C/SIGTERM (runs checkpoint; the summary lists what finished).
- `optuna_backend.run_worker`: one worker of a distributed sweep over an Optuna study in an RDB
  storage (SQLite on one machine, PostgreSQL for many); start the same command anywhere.
- `summary`: the honest ranking (NaN, inf and missing metrics rank last) and the atomic files.
- `children`: how runs are started, stopped, timed out and read back.

    from attn_jax import sweep
    report = sweep.run_sweep(launcher, "experiments/vit_digits.py",
                             ["config.optim.lr=1e-3,3e-4"], Path("runs/sweep"))
"""

from attn_jax.sweep.grid import SweepError, parse_axes, run_name, sweep_points
from attn_jax.sweep.local import SweepReport, run_sweep
from attn_jax.sweep.summary import rank, write_summary

__all__ = [
    "SweepError",
    "SweepReport",
    "parse_axes",
    "rank",
    "run_name",
    "run_sweep",
    "sweep_points",
    "write_summary",
]
