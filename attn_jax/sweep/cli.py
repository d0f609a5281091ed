"""`launch.py sweep`: its arguments and what it prints and returns.

    # this machine
    python launch.py sweep --config F --sweep config.optim.lr=1e-3,3e-4 [--parallel 2]
        [--random N] [--run-timeout S]
    # one worker of a distributed sweep (start the same command on every machine)
    python launch.py sweep --backend optuna [--storage URL] [--study NAME]
        [--sampler grid|random|tpe] [--trials N] [--pruner median|none]
        --config F --sweep ... --workdir DIR
    # the ranked summary of a study, written into DIR
    python launch.py sweep --summary --backend optuna [--storage URL] --study NAME --workdir DIR

Exit status: 0 every run finished; 1 some run failed, diverged or timed out; 2 a usage error;
75 (EXIT_PREEMPTED) stopped by SIGINT/SIGTERM: the runs checkpointed, rerunning resumes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from attn_jax.errors import EXIT_PREEMPTED
from attn_jax.sweep import grid, local

EPILOG = """\
  --config.group.key=value   override any config value in every run (repeatable)

Local: each run is `launch.py train` in WORKDIR/<index>_<values>; summary.csv and summary.md are
rewritten after every finished run, ranked by config.target_metric (NaN/inf/missing last).
Ctrl-C or SIGTERM: no new run starts, running ones get SIGTERM (they checkpoint; SIGKILL after
--stop-grace) and the summary lists them as stopped; exit status 75.

Optuna (pip install -e '.[sweep]'): start the same command on any number of machines; the
workers share the study in --storage (default sqlite:///WORKDIR/study.db; PostgreSQL for many
machines: postgresql://user@host/db). A grid runs each point exactly once; a lost worker's trial
is re-queued after 3 missed heartbeats (--heartbeat) and resumed by another worker.
"""


def add_sweep_parser(sub: argparse._SubParsersAction, default_config: Path) -> None:
    """Adds the `sweep` command to the launcher's sub-parsers."""
    p = sub.add_parser(
        "sweep",
        help="run a grid (or random points) of configs, ranked summary; locally or on Optuna",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=str(default_config))
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="config.KEY=V1,V2",
        help="one axis (repeatable); with --sampler random|tpe also KEY=loguniform:LO:HI, "
        "uniform:LO:HI or int:LO:HI",
    )
    p.add_argument("--workdir", help="sweep directory (default: runs/sweep_<experiment>)")
    p.add_argument("--backend", choices=("local", "optuna"), default="local")
    p.add_argument("--parallel", type=int, default=1, help="runs at once (local)")
    p.add_argument("--random", type=int, help="run N random points of the grid (local)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random")
    p.add_argument(
        "--run-timeout", type=float, metavar="SECONDS", help="stop a run after this long: timeout"
    )
    p.add_argument(
        "--stop-grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="time a run gets to checkpoint after SIGTERM before SIGKILL (default 60)",
    )
    p.add_argument("--launcher", help=argparse.SUPPRESS)  # tests run the sweep on a fake trainer
    optuna = p.add_argument_group("optuna backend")
    optuna.add_argument("--storage", metavar="URL", help="default sqlite:///WORKDIR/study.db")
    optuna.add_argument("--study", metavar="NAME", help="default sweep_<experiment>")
    optuna.add_argument("--sampler", choices=("grid", "random", "tpe"), default="grid")
    optuna.add_argument("--trials", type=int, help="random/tpe: runs in all, all workers together")
    optuna.add_argument("--pruner", choices=("none", "median"), default="none")
    optuna.add_argument(
        "--pruner-startup-trials",
        type=int,
        default=5,
        help="trials that finish before the median pruner prunes (default 5)",
    )
    optuna.add_argument(
        "--pruner-warmup-steps", type=int, default=0, help="steps never pruned (default 0)"
    )
    optuna.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="SECONDS",
        help="a worker silent for 3 heartbeats loses its trial to a retry (default 30)",
    )
    optuna.add_argument(
        "--summary",
        action="store_true",
        help="only write WORKDIR/summary.{csv,md} from the study, run nothing",
    )


def _failed(records: Sequence[dict]) -> list[str]:
    """Runs that need a look: not finished well, and not merely stopped, pruned or pending."""
    return [r["run"] for r in records if r["status"] in ("failed", "diverged", "timeout")]


def run_command(args: argparse.Namespace, overrides: Sequence[str], launcher: Path) -> int:
    """Runs `launch.py sweep`, prints the summary table (stderr) and one JSON line (stdout).

    Returns:
      The exit status (see the module docstring).
    """
    name = Path(args.config).stem
    out = Path(args.workdir) if args.workdir else Path("runs") / f"sweep_{name}"
    launcher = Path(args.launcher).resolve() if args.launcher else launcher
    if args.summary and args.backend != "optuna":
        raise grid.SweepError("--summary reads an Optuna study; add --backend optuna --study NAME")
    if args.backend == "optuna" and args.parallel != 1:
        raise grid.SweepError(
            "--parallel is for the local backend; with --backend optuna start one worker per run "
            "at once (the same command, any machine)"
        )
    if not args.summary and not args.sweep:
        raise grid.SweepError("give at least one --sweep config.KEY=V1,V2")
    extra: dict = {}
    if args.backend == "optuna":
        from attn_jax.sweep import optuna_backend

        study = args.study or f"sweep_{name}"
        if args.summary:
            report = optuna_backend.summarize(args.storage, study, out)
        else:
            report = optuna_backend.run_worker(
                launcher,
                args.config,
                args.sweep,
                out,
                overrides=overrides,
                storage_url=args.storage,
                study_name=study,
                sampler=args.sampler,
                trials=args.trials,
                pruner=args.pruner,
                pruner_startup_trials=args.pruner_startup_trials,
                pruner_warmup_steps=args.pruner_warmup_steps,
                run_timeout=args.run_timeout,
                stop_grace=args.stop_grace,
                heartbeat=args.heartbeat,
            )
        extra = {
            "study": report.study,
            "storage": report.storage,
            "trials_here": report.trials_here,
        }
    else:
        report = local.run_sweep(
            launcher,
            args.config,
            args.sweep,
            out,
            overrides=overrides,
            parallel=args.parallel,
            random_points=args.random,
            seed=args.seed,
            run_timeout=args.run_timeout,
            stop_grace=args.stop_grace,
        )
        extra = {"not_started": report.not_started}
    print((out / "summary.md").read_text(), file=sys.stderr)
    failed = _failed(report.records)
    result = {
        "backend": args.backend,
        "runs": len(report.records),
        "failed": failed,
        "stopped": report.stopped,
        "summary": str(out / "summary.csv"),
        "best": report.best["run"] if report.best else None,
        **extra,
    }
    print(json.dumps(result), flush=True)
    if report.stopped:
        return EXIT_PREEMPTED
    return 1 if failed else 0
