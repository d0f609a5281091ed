#!/usr/bin/env python
"""Our train step against the peers', side by side in one run: the only speed claim we make.

  python benchmarks/compare.py --model m1|m2|m3|all [--rounds 2] [--steps N] [--warmup N] [--peak]

For each model, every side runs as its own subprocess, alternating ours and theirs round after
round (A B C A B C ...), so that a host that slows down or speeds up during the run touches all
sides alike:

  attn_jax     benchmarks/train_step.py          the step `launch.py train` compiles
  plain_flax   <peers>/bench_jax.py              flax.linen written plainly, same XLA (m1, m2)
  torch_eager  <peers>/bench_torch.py            PyTorch eager; timm's ViT-Ti (m2) and Swin-T (m3)

`<peers>` is ../shared/bench beside the repository (--peers-dir to change it). Each model prints
ONE JSON line on stdout: per side the median img/s (the median over rounds of each run's median
step), the runs' img/s, peak RSS MiB (the largest of its runs) and the parameter count, which must
equal the peers' published one (M1 10,707,274; M2 5,717,416; M3 28,288,354); the ratios of ours
to each peer and to the fastest peer (> 1: we are faster); the date, the CPU model and the flags
that decide the kernels (AVX2/AVX-512/bf16/AMX), the load average before and after, and the
library versions. `--ours-xla-flags "F"` (repeatable) adds our step under extra XLA flags as
sides attn_jax+flags1, ... (reported as variants_over_ours). `--peak` also measures each
framework's fp32 matmul peak in the same run (benchmarks/matmul_peak.py) and reports how much of
it each side's train step reaches. Progress goes to stderr. Exit status 1 when a side fails or a
parameter count differs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attn_jax.errors import UserError  # noqa: E402

# The peers' published parameter counts (../shared/bench/README.md, "Models").
EXPECTED_PARAMS = {"m1": 10_707_274, "m2": 5_717_416, "m3": 28_288_354}
# Forward + backward matmul GFLOP per image, the peers' analytic figures (flops.py), used when a
# side does not report its own.
TRAIN_GFLOP_PER_IMAGE = {"m1": 0.1585, "m2": 7.52, "m3": 26.9}
SIDES = {
    # name: (script, where it lives, models it runs, framework whose matmul peak bounds it)
    "attn_jax": ("train_step.py", "ours", ("m1", "m2", "m3"), "jax"),
    "plain_flax": ("bench_jax.py", "peers", ("m1", "m2"), "jax"),
    "torch_eager": ("bench_torch.py", "peers", ("m1", "m2", "m3"), "torch"),
}
# CPU flags that decide which kernels the frameworks can use.
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "timm")


class CompareError(UserError):
    """A setup problem of the comparison (peer scripts missing), in one line."""


class SideFailed(Exception):
    """A benchmark subprocess exited non-zero or printed no result."""


def host_info() -> dict:
    """CPU model, the kernel-relevant flags present, visible cores and memory of this host."""
    info = {"cpu": platform.processor() or platform.machine(), "flags": []}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            info["cpu"] = value.strip()
        elif key == "flags":
            present = set(value.split())
            info["flags"] = [f for f in CPU_FLAGS if f in present]
            break
    info["cpus_visible"] = len(os.sched_getaffinity(0))
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["mem_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def side_command(side: str, model: str, args, peers_dir: Path) -> list[str]:
    script, where, _, _ = SIDES[side.split("+")[0]]
    folder = Path(__file__).resolve().parent if where == "ours" else peers_dir
    cmd = [args.python, str(folder / script), "--model", model]
    for flag in ("steps", "warmup", "batch"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    if side == "attn_jax":
        cmd += args.ours_arg
    return cmd


def run_json(cmd: list[str], timeout: float, what: str, env: dict | None = None) -> dict:
    """Runs cmd (with `env` added to the environment) and returns the last JSON object it
    printed on stdout."""
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        raise SideFailed(f"{what} ran past --timeout {timeout:.0f} s") from None
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if done.returncode == 0:
                return result
    last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise SideFailed(f"{what} failed (exit {done.returncode}): {last[:300]}")


def summarise(model: str, runs: dict[str, list[dict]], peaks: dict[str, list[float]]) -> dict:
    """The JSON line of one model from every side's run results."""
    sides = {}
    gflop_per_image = next(
        (
            r["train_gflop_per_image_analytic"]
            for r in runs.get("attn_jax", [])
            if r.get("train_gflop_per_image_analytic")
        ),
        TRAIN_GFLOP_PER_IMAGE[model],
    )
    for side, results in runs.items():
        rates = [r["img_per_s_median"] for r in results]
        params = {r.get("params") for r in results}
        row = {
            "img_per_s": round(statistics.median(rates), 3),
            "runs_img_per_s": rates,
            "step_ms": round(statistics.median(r["step_ms_median"] for r in results), 1),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "params": params.pop() if len(params) == 1 else sorted(params, key=str),
        }
        row["params_ok"] = row["params"] == EXPECTED_PARAMS[model]
        framework = SIDES[side.split("+")[0]][3]
        if peaks.get(framework):
            achieved = row["img_per_s"] * gflop_per_image
            row["achieved_gflops"] = round(achieved, 2)
            row["fraction_of_own_matmul_peak"] = round(
                achieved / statistics.median(peaks[framework]), 3
            )
        sides[side] = row
    ours = sides.get("attn_jax", {}).get("img_per_s")
    peers = {name: row for name, row in sides.items() if not name.startswith("attn_jax")}
    line = {
        "model": model,
        "params_expected": EXPECTED_PARAMS[model],
        "train_gflop_per_image": gflop_per_image,
        "sides": sides,
    }
    if ours and peers:
        line["ours_over"] = {name: round(ours / row["img_per_s"], 3) for name, row in peers.items()}
        # Round by round, from runs next to each other: how steady the ratio is.
        line["ours_over_by_round"] = {
            name: [
                round(a / b, 3)
                for a, b in zip(
                    sides["attn_jax"]["runs_img_per_s"], row["runs_img_per_s"], strict=True
                )
            ]
            for name, row in peers.items()
        }
        fastest = max(peers, key=lambda name: peers[name]["img_per_s"])
        line["fastest_peer"] = fastest
        line["ours_over_fastest_peer"] = line["ours_over"][fastest]
    variants = [name for name in sides if name.startswith("attn_jax+")]
    if ours and variants:
        line["variants_over_ours"] = {
            name: round(sides[name]["img_per_s"] / ours, 3) for name in variants
        }
    if peaks:
        line["matmul_peak_gflops"] = {k: round(statistics.median(v), 1) for k, v in peaks.items()}
    return line


def compare_model(model: str, args, peers_dir: Path) -> dict:
    sides = [s for s, spec in SIDES.items() if model in spec[2]]
    # Our step again under other XLA flags, e.g. attn_jax+flags1, right after our own run.
    extra_flags = {f"attn_jax+flags{i + 1}": f for i, f in enumerate(args.ours_xla_flags)}
    sides[1:1] = list(extra_flags)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    peaks: dict[str, list[float]] = {}
    load_before = os.getloadavg()
    started = time.time()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    for round_index in range(args.rounds):
        for side in sides:
            what = f"{side} {model} (round {round_index + 1}/{args.rounds})"
            env = None
            if side in extra_flags:
                env = {
                    "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {extra_flags[side]}".strip()
                }
            result = run_json(side_command(side, model, args, peers_dir), args.timeout, what, env)
            runs[side].append(result)
            print(
                f"{what}: {result['img_per_s_median']} img/s, "
                f"{result['peak_rss_mib']:.0f} MiB, params {result.get('params')}",
                file=sys.stderr,
                flush=True,
            )
        if args.peak:
            for framework in ("jax", "torch"):
                cmd = [args.python, str(Path(__file__).with_name("matmul_peak.py"))]
                result = run_json([*cmd, "--backend", framework], args.timeout, f"{framework} peak")
                peaks.setdefault(framework, []).append(result["gflops"])
                print(f"{framework} matmul peak: {result['gflops']} GFLOP/s", file=sys.stderr)
    line = summarise(model, runs, peaks)
    line.update(
        date=date,
        host=host_info(),
        load_avg_1min_before_after=[round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        minutes=round((time.time() - started) / 60, 1),
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        versions=versions(),
        XLA_FLAGS=os.environ.get("XLA_FLAGS", ""),
    )
    if extra_flags:
        line["variant_xla_flags"] = extra_flags
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("m1", "m2", "m3", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--steps", type=int, help="timed steps per run (default: per model)")
    parser.add_argument("--warmup", type=int, help="untimed steps per run (default: per model)")
    parser.add_argument("--batch", type=int, help="override every side's batch")
    parser.add_argument("--peers-dir", type=Path, default=ROOT.parent / "shared" / "bench")
    parser.add_argument("--python", default=sys.executable, help="interpreter of every side")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--peak", action="store_true", help="also measure the matmul peaks")
    parser.add_argument(
        "--ours-xla-flags",
        action="append",
        default=[],
        help="also run our step with these XLA_FLAGS added, as side attn_jax+flagsN",
    )
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        help="extra argument for train_step.py, e.g. --ours-arg=--config.microbatches=2",
    )
    args = parser.parse_args()
    try:
        if args.rounds < 2:
            raise CompareError(
                f"--rounds {args.rounds}: a comparison alternates the sides at least twice; "
                "pass --rounds 2 or more"
            )
        missing = [
            s for s in ("bench_jax.py", "bench_torch.py") if not (args.peers_dir / s).is_file()
        ]
        if missing:
            raise CompareError(
                f"peer benchmarks {', '.join(missing)} not found in {args.peers_dir}; pass "
                "--peers-dir DIR (the shared/bench folder that holds them)"
            )
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models = ("m1", "m2", "m3") if args.model == "all" else (args.model,)
    status = 0
    for model in models:
        try:
            line = compare_model(model, args, args.peers_dir.resolve())
        except SideFailed as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps(line), flush=True)
        wrong = {s: r["params"] for s, r in line["sides"].items() if not r["params_ok"]}
        if wrong:
            print(
                f"error: {model}: parameter counts {wrong} differ from the peers' "
                f"{EXPECTED_PARAMS[model]:,}; the sides do not run the same model",
                file=sys.stderr,
            )
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
