#!/usr/bin/env python
"""attn_jax launcher: train, evaluate, sweep and inspect experiments.

  python launch.py train [--config experiments/vit_digits.py] [--workdir runs/x] [--config.k=v ...]
  python launch.py eval  --workdir runs/x [--step N | --best]
  python launch.py sweep --config F --sweep config.optim.lr=1e-3,3e-4 [--sweep ...] [--parallel 2]
  python launch.py info  [--config F] [--config.k=v ...]
  python launch.py run   --config F [--workdir runs/x] [--config.k=v ...]   (no training)
  python launch.py predict classify|detect|rank-captions --weights DIR --image FILE [--json] ...

F is FILE.py, or FILE.py:VARIANT for a file with named variants (experiments/rnn_dates.py:bahdanau).
Any config value can be overridden with --config.group.key=value. `train` on a workdir that holds
checkpoints resumes from the latest one. `run` executes an experiment that trains nothing (its
config names a `program`, e.g. experiments/saliency_photos.py). `predict` runs a downloaded
pretrained checkpoint (ViT, Swin, DETR, CLIP) on one image (`launch.py predict --help`). Each
command ends with one JSON line on stdout (`predict` with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "experiments" / "vit_digits.py"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="keep library log messages")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{train,eval,sweep,info,run,predict}"
    )
    over = "  --config.group.key=value   override any config value (repeatable)"

    p = sub.add_parser(
        "train",
        help="train an experiment, or resume it in its workdir",
        epilog=over,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        help=f"experiment file, FILE.py or FILE.py:VARIANT for a file with named variants "
        f"(default: the workdir's config.json, else "
        f"{DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parent.parent)})",
    )
    p.add_argument("--workdir", help="run directory (default: runs/<experiment>)")

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint of a workdir with its evaluators (config.evals)",
        epilog=over,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="a kept step (default: the latest)")
    which.add_argument("--best", action="store_true", help="the best checkpoint by target_metric")
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="NAME",
        help="only this evaluator of config.evals (repeatable; default: all)",
    )

    from attn_jax.sweep.cli import add_sweep_parser

    add_sweep_parser(sub, DEFAULT_CONFIG)

    p = sub.add_parser(
        "info",
        help="parameter count and forward FLOPs per example",
        epilog=over,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG))

    p = sub.add_parser(
        "run",
        help="run an experiment that trains nothing (its config names a `program`)",
        epilog=over,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="experiment file with a `program` field")
    p.add_argument("--workdir", help="output directory (default: runs/<experiment>)")

    from attn_jax.pretrained.predict import add_predict_parser

    add_predict_parser(sub)
    return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates '--config.k=v' (and '--config.k v') from the launcher's own arguments."""
    own, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" not in arg and i + 1 < len(argv):
                arg, i = f"{arg}={argv[i + 1]}", i + 1
            overrides.append(arg)
        else:
            own.append(arg)
        i += 1
    return own, overrides


def _load(config_path: str | None, workdir: Path | None, overrides: list[str]):
    from attn_jax import config as config_lib

    if config_path is None and workdir is not None and (workdir / "config.json").exists():
        config = config_lib.load_json(workdir / "config.json")
        # The process layout belongs to an invocation, not to the run: a run trained by several
        # processes resumes in one unless this command line says otherwise.
        config_lib.reset_distributed(config)
    else:
        config = config_lib.load_config(config_path or DEFAULT_CONFIG)
    config_lib.apply_overrides(config, overrides)
    return config


def main(argv: list[str] | None = None) -> int:
    own, overrides = _split_overrides(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(own)

    from absl import logging as absl_logging

    from attn_jax.errors import EXIT_DIVERGED, EXIT_USER_ERROR, UserError

    # orbax and tfds log routine steps as absl warnings; --verbose keeps them.
    if not args.verbose:
        absl_logging.set_verbosity(absl_logging.ERROR)

    try:
        if args.command == "train":
            from attn_jax.train import loop
            from attn_jax.train.workdir import default_workdir

            workdir = Path(args.workdir) if args.workdir else None
            config = _load(args.config, workdir, overrides)
            if workdir is None:
                workdir = default_workdir(config)
                if workdir.name != config.get("experiment", "experiment"):
                    print(
                        f"runs/{config.get('experiment')} holds a run of another config; "
                        f"training in {workdir}",
                        file=sys.stderr,
                    )
            try:
                result = loop.train(config, workdir)
            except loop.RunStopped as stopped:
                diverged = stopped.exit_code == EXIT_DIVERGED
                print(f"error: {stopped}" if diverged else str(stopped), file=sys.stderr)
                print(_json_line({**stopped.result, "workdir": str(workdir)}))
                return stopped.exit_code
            result["workdir"] = str(workdir)
        elif args.command == "eval":
            from attn_jax.train import loop

            result = loop.evaluate(
                args.workdir,
                step=args.step,
                best=args.best,
                overrides=tuple(overrides),
                evals=tuple(args.eval),
            )
        elif args.command == "sweep":
            from attn_jax.sweep.cli import run_command

            return run_command(args, overrides, Path(__file__).resolve())
        elif args.command == "predict":
            from attn_jax.pretrained.predict import format_json, run_predict

            result = run_predict(args)
            if args.json:
                print(format_json(result))
            return 0
        elif args.command == "run":
            from attn_jax import programs

            config = programs.load_program_config(args.config, overrides)
            workdir = Path(args.workdir) if args.workdir else Path("runs") / config.experiment
            result = programs.run_program(config, workdir)
            result["workdir"] = str(workdir)
        else:
            from attn_jax.train import loop

            result = loop.info(_load(args.config, None, overrides))
            print(
                f"{result['experiment']}: {result['params']:,} parameters, "
                f"{result['flops'] / 1e9:.4g} GFLOPs forward per example",
                file=sys.stderr,
            )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(_json_line(result))
    return 0


def _json_line(result: dict) -> str:
    """Strict JSON (NaN/inf as null, named under "nonfinite"), as every parser accepts."""
    from attn_jax.train.metric_writers import strict_record

    return json.dumps(strict_record(result), allow_nan=False)


if __name__ == "__main__":
    sys.exit(main())
