"""Which pretext task gives the best features on the digits: jigsaw, colorization, MAE, SimMIM.

One protocol for all four (experiments/mim_transfer_digits.py): each pretraining reads
train[:90%] without labels; then, on the labels of train[:10%] (144 digits),

  finetune      every parameter, lr 5e-3, layer decay 0.9 (the recipe chosen for MAE on
                validation, kept for all), seeds 0, 1, 2;
  linear_probe  the encoder frozen; the head's rate chosen among PROBE_LRS on the validation
                accuracy of seed 0, then seeds 0, 1, 2 at that rate.

Every run selects its checkpoint on validation (train[90%:]) and reports test there. "scratch"
is the same classifier from a random encoder (fine-tuned at its own validation-chosen lr 2e-3
without layer decay; the probe reads the random encoder).

  python scripts/pretext_table.py [--root runs/pretext] [--only jigsaw,mae] [--seeds 0,1,2]
      [--set num_epochs=0 --set total_steps=20]   # a quick check of the whole table

A finished run is not trained again (the launcher returns its result from the workdir), so an
interrupted table resumes where it stopped. Prints one JSON line per run and the README table.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path

from attn_jax.sweep.children import last_json_line

REPO = Path(__file__).resolve().parent.parent
TRANSFER = "experiments/mim_transfer_digits.py"
# name: (pretraining config, the subtree of its parameters that holds the ViT encoder)
PRETEXTS = {
    "jigsaw": ("experiments/jigsaw_digits.py", ""),
    "colorization": ("experiments/colorization_digits.py", "encoder"),
    "mae": ("experiments/mim_digits.py:mae", "encoder"),
    "simmim": ("experiments/mim_digits.py:simmim", "encoder"),
}
PROBE_LRS = (3e-2, 3e-1)


def launch(common: list[str], config: str, workdir: Path, *overrides: str) -> dict:
    """`launch.py train`'s result line; `common` (the --set values) apply to every run."""
    cmd = [sys.executable, "launch.py", "train", "--config", config, "--workdir", str(workdir)]
    cmd += [f"--config.{o}" for o in (*common, *overrides)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    result = last_json_line(done.stdout)
    if done.returncode or result is None:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return result


def selected(result: dict) -> tuple[float, float]:
    """(validation accuracy, test accuracy) at the checkpoint chosen on validation."""
    best = result["best"]
    return best["validation/accuracy"], best["test/accuracy"]


def transfer(train, root: Path, name: str, variant: str, seeds, init, extra=()) -> dict:
    runs = {}

    def run(seed, *more):
        tag = "_".join([name, variant, f"s{seed}", *(m.split("=")[-1] for m in more)])
        res = train(f"{TRANSFER}:{variant}", root / tag, *init, f"seed={seed}", *extra, *more)
        val, test = selected(res)
        print(json.dumps({"run": tag, "validation": val, "test": test}), flush=True)
        return val, test

    if variant == "linear_probe":
        by_lr = {lr: run(seeds[0], f"optim.lr={lr}") for lr in PROBE_LRS}
        lr = max(by_lr, key=lambda k: by_lr[k][0])
        runs[seeds[0]] = by_lr[lr]
        runs.update({s: run(s, f"optim.lr={lr}") for s in seeds[1:]})
        chosen = f"lr {lr:g}"
    else:
        runs = {s: run(s) for s in seeds}
        chosen = ""
    tests = [t for _, t in runs.values()]
    return {
        "tests": tests,
        "mean": statistics.mean(tests),
        "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "chosen": chosen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/pretext")
    parser.add_argument("--only", default=",".join(["scratch", *PRETEXTS]))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=V",
        help="a config override for every run, e.g. total_steps=20 for a quick check",
    )
    args = parser.parse_args()
    root = (REPO / args.root).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.only.split(",")
    unknown = [n for n in names if n != "scratch" and n not in PRETEXTS]
    if unknown:
        parser.error(f"--only {','.join(unknown)}: not one of scratch, {', '.join(PRETEXTS)}")
    train = functools.partial(launch, args.set)
    rows = {}
    for name in names:
        if name == "scratch":
            init = ["init_from="]
            ft_extra = ("optim.lr=2e-3", "optim.layer_decay=0")
        else:
            config, prefix = PRETEXTS[name]
            pre = train(config, root / f"{name}_pretrain")
            print(json.dumps({"run": f"{name}_pretrain", "best": pre.get("best")}), flush=True)
            init = [f"init_from={root / f'{name}_pretrain'}", f"init_from_prefix={prefix}"]
            ft_extra = ()
        rows[name] = {
            "finetune": transfer(train, root, name, "finetune", seeds, init, ft_extra),
            "linear_probe": transfer(train, root, name, "linear_probe", seeds, init),
        }
        print(json.dumps({"pretext": name, **rows[name]}), flush=True)

    print("\n| pretraining | fine-tune, 10% labels | linear probe, 10% labels |")
    print("|---|---|---|")
    for name, r in rows.items():
        cells = []
        for v in ("finetune", "linear_probe"):
            x = r[v]
            each = " / ".join(f"{100 * t:.1f}" for t in x["tests"])
            how = f", {x['chosen']}" if x["chosen"] else ""
            cells.append(f"{100 * x['mean']:.1f} +- {100 * x['std']:.1f}% ({each}{how})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
