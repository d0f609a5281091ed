"""Hyperparameter sweeps: a grid (or N random points of it), one `launch.py train` subprocess per
point in its own workdir, and a summary ranked by the experiment's target metric.

Runs are separate processes so that a crash, an out-of-memory kill or a bad value in one of them
cannot take the others down; a failed run is recorded with the last line of its error output.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from attn_jax import config as config_lib


def parse_axes(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """['config.optim.lr=1e-3,3e-4', ...] -> [('optim.lr', ['1e-3', '3e-4']), ...]."""
    axes = []
    for spec in specs:
        key, values = config_lib.parse_override(spec if spec.startswith("--") else "--" + spec)
        choices = [v for v in values.split(",") if v != ""]
        if not choices:
            raise config_lib.ConfigError(f"--sweep {spec} lists no values; write key=v1,v2")
        axes.append((key, choices))
    return axes


def sweep_points(
    axes: list[tuple[str, list[str]]], random_points: int | None = None, seed: int = 0
) -> list[dict[str, str]]:
    grid = [
        dict(zip([k for k, _ in axes], combo, strict=True))
        for combo in itertools.product(*[v for _, v in axes])
    ]
    if random_points:
        rng = random.Random(seed)
        grid = rng.sample(grid, min(random_points, len(grid)))
    return grid


def run_name(index: int, point: dict[str, str]) -> str:
    parts = [f"{k.split('.')[-1]}={v}" for k, v in point.items()]
    return re.sub(r"[^A-Za-z0-9_.=,-]", "_", f"{index:03d}_" + ",".join(parts))


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _run_one(
    launcher: Path, config_path: str, overrides: Sequence[str], point: dict[str, str], workdir: Path
) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(launcher),
        "train",
        "--config",
        config_path,
        "--workdir",
        str(workdir),
    ]
    cmd += list(overrides) + [f"--config.{k}={v}" for k, v in point.items()]
    with (workdir / "stdout.log").open("w") as out, (workdir / "stderr.log").open("w") as err:
        rc = subprocess.run(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL).returncode
    metrics = _last_json((workdir / "stdout.log").read_text())
    record = {"run": workdir.name, **point, "workdir": str(workdir)}
    if rc == 0 and metrics is not None:
        record.update(status="ok", error="", **metrics)
    else:
        lines = [ln for ln in (workdir / "stderr.log").read_text().splitlines() if ln.strip()]
        record.update(status="failed", error=lines[-1].strip() if lines else f"exit status {rc}")
    return record


def rank(records: list[dict], target: str, mode: str) -> list[dict]:
    """Succeeded runs best first by `target`, then failed runs."""
    ok = [r for r in records if r["status"] == "ok" and isinstance(r.get(target), int | float)]
    bad = [r for r in records if r not in ok]
    ok.sort(key=lambda r: r[target], reverse=(mode == "max"))
    return ok + bad


def write_summary(records: list[dict], out_dir: Path, axes_keys: list[str], target: str) -> None:
    metric_keys = sorted({k for r in records for k in r if "/" in k})
    columns = [
        "rank",
        "run",
        "status",
        *axes_keys,
        target,
        *[k for k in metric_keys if k != target],
        "error",
        "workdir",
    ]
    with (out_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for i, r in enumerate(records, 1):
            writer.writerow({"rank": i if r["status"] == "ok" else "", **r})
    head = ["rank", "run", "status", *axes_keys, target, "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(records, 1):
        cells = [str(i) if r["status"] == "ok" else "-", r["run"], r["status"]]
        cells += [str(r.get(k, "")) for k in axes_keys]
        value = r.get(target)
        cells.append(f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "")
        cells.append(r.get("error", "").replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


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
) -> list[dict]:
    """Runs every point; returns the ranked records and writes summary.{csv,md} into out_dir."""
    base = config_lib.load_config(config_path)
    config_lib.apply_overrides(base, overrides)
    axes = parse_axes(sweep_specs)
    points = sweep_points(axes, random_points, seed)
    for key, _ in axes:  # a misspelt key fails the sweep; a bad *value* fails only its run
        config_lib.check_key(base, key)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(point, out_dir / run_name(i, point)) for i, point in enumerate(points)]
    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        futures = [pool.submit(_run_one, launcher, config_path, overrides, p, w) for p, w in jobs]
        records = []
        for (_, workdir), fut in zip(jobs, futures, strict=True):
            record = fut.result()
            status = record["status"]
            value = record.get(base.target_metric, record.get("error"))
            print(f"[sweep] {workdir.name}: {status} {value}", file=sys.stderr, flush=True)
            records.append(record)
    ranked = rank(records, base.target_metric, base.get("target_mode", "max"))
    write_summary(ranked, out_dir, [k for k, _ in axes], base.target_metric)
    return ranked
