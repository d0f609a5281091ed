#!/usr/bin/env python
"""Times the project's own train step (the one `launch.py train` compiles) on a synthetic batch.

Same protocol and JSON fields as the peer benchmarks in ../shared/bench (benchutil.report), so the
rows can be put side by side: a fixed batch resident on the device, `--warmup` untimed steps
(compilation included), then `--steps` steps timed one by one, each synchronised by fetching the
loss, reporting the median. Optimizer as the peers: AdamW lr 1e-3, weight decay 1e-4, constant.

  python benchmarks/train_step.py --model m1          # textbook Keras ViT, CIFAR-10 size, batch 128
  python benchmarks/train_step.py --model m2          # ViT-Ti/16 at 224, 1000 classes, batch 32
  python benchmarks/train_step.py --model m1 --peers ../shared/bench/results   # adds a table

Models:
  m1: experiments/vit_cifar10_textbook.py (model.variant=textbook_cifar10), batch 128.
  digits: the default experiment, experiments/vit_digits.py, batch 128 (no peer rows).
  m2: experiments/vit_imagenet.py with model.variant=Ti/16, no dropout, exact GELU, batch 32.
Any `--config.k=v` is applied on top (e.g. --config.model.dropout_rate=0).

MFU = matmul FLOPs of forward + backward (3x the forward's dot/conv FLOPs, counted from the jaxpr,
1 MAC = 2 FLOP) x img/s / --peak-gflops (75.4: the best fp32 matmul measured on this machine kind).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "digits": dict(config="experiments/vit_digits.py", batch=128, steps=50, warmup=3, overrides=[]),
    "m1": dict(
        config="experiments/vit_cifar10_textbook.py",
        batch=128,
        steps=20,
        warmup=3,
        overrides=[],
    ),
    "m2": dict(
        config="experiments/vit_imagenet.py",
        batch=32,
        steps=8,
        warmup=2,
        overrides=[
            "--config.model.variant=Ti/16",
            "--config.model.dropout_rate=0.0",
            "--config.model.gelu_approximate=false",
        ],
    ),
}
PEER_OPTIM = [
    "--config.optim.name=adamw",
    "--config.optim.lr=1e-3",
    "--config.optim.weight_decay=1e-4",
    "--config.optim.schedule=constant",
    "--config.optim.warmup_steps=0",
]


def matmul_flops(fn, *args) -> float:
    """FLOPs of the dot_general and convolution equations in fn's jaxpr (1 MAC = 2 FLOP)."""
    import jax
    import jax.extend
    import numpy as np

    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                out = eqn.outvars[0].aval.shape
                total += 2.0 * np.prod(out) * np.prod([lhs[d] for d in lhs_contract])
            elif eqn.primitive.name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape  # kernel; its out-feature dim is one of them
                out = eqn.outvars[0].aval.shape
                dn = eqn.params["dimension_numbers"]
                out_feat = rhs[dn.rhs_spec[0]]
                total += 2.0 * np.prod(out) * np.prod(rhs) / out_feat
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                total += count(sub)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="m1")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--peak-gflops", type=float, default=75.4)
    parser.add_argument("--peers", help="folder of peer result JSON files to print beside ours")
    own, overrides = [], []
    for arg in sys.argv[1:]:
        (overrides if arg.startswith("--config.") else own).append(arg)
    args = parser.parse_args(own)
    spec = MODELS[args.model]
    batch = args.batch or spec["batch"]
    steps, warmup = args.steps or spec["steps"], args.warmup or spec["warmup"]

    import jax
    import jax.numpy as jnp
    import numpy as np

    from attn_jax import config as config_lib
    from attn_jax.models import count_params
    from attn_jax.train import loop
    from attn_jax.train import sharding as shard_lib
    from attn_jax.train.optim import make_optimizer

    config = config_lib.load_config(ROOT / spec["config"])
    config_lib.apply_overrides(config, [*spec["overrides"], *PEER_OPTIM, *overrides])
    exp = loop.build_experiment(config)  # reads no data, only the registry
    model, task = exp.model, exp.task
    num_classes = exp.spec.num_classes
    tx, schedule = make_optimizer(config.optim, 1000)
    mesh = shard_lib.make_mesh()
    (image,) = exp.init_inputs()  # an image classification experiment
    input_shape = image.shape
    init_fn = loop.make_init_fn(model, tx, exp.init_inputs())
    _, state_sharding = loop._state_shardings(init_fn, mesh)
    state = jax.jit(init_fn, out_shardings=state_sharding)(jax.random.key(0))
    microbatches = int(config.get("microbatches", 1))
    train_step = loop.make_train_step(
        model, task, tx, schedule, mesh, state_sharding, microbatches=microbatches
    )

    rng = np.random.default_rng(0)
    host_batch = {
        "image": rng.standard_normal((batch, *input_shape[1:]), dtype=np.float32),
        "label": rng.integers(0, num_classes, batch).astype(np.int32),
        "mask": np.ones(batch, bool),
    }
    device_batch = shard_lib.to_global(host_batch, shard_lib.batch_sharding(mesh))

    def step() -> float:
        nonlocal state
        state, metrics = train_step(state, device_batch)
        return float(metrics["loss"])

    times, warm = [], []
    for phase, n in (("warmup", warmup), ("step", steps)):
        for i in range(n):
            t = time.perf_counter()
            loss = step()
            dt = time.perf_counter() - t
            (warm if phase == "warmup" else times).append(dt)
            print(f"  {phase:6s} {i}: {dt * 1e3:9.1f} ms  loss={loss:.4f}", file=sys.stderr)

    fwd = matmul_flops(
        lambda p, x: model.apply({"params": p}, x, train=False)[0],
        state.params,
        jnp.zeros(input_shape, jnp.float32),
    )
    med = statistics.median(times)
    achieved = 3 * fwd * batch / med / 1e9
    result = {
        "peer": "attn_jax",
        "variant": "launch.py train step",
        "model": args.model.upper(),
        "batch": batch,
        "microbatches": microbatches,
        "steps_timed": len(times),
        "step_ms_median": round(med * 1e3, 2),
        "step_ms_min": round(min(times) * 1e3, 2),
        "step_ms_max": round(max(times) * 1e3, 2),
        "img_per_s_median": round(batch / med, 2),
        "img_per_s_min": round(batch / max(times), 2),
        "img_per_s_max": round(batch / min(times), 2),
        "first_step_s": round(warm[0], 2) if warm else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "threads": f"XLA:CPU default (cores={os.cpu_count()})",
        "cpus_visible": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "params": count_params(state.params),
        "devices": jax.device_count(),
        "train_gflop_per_image_analytic": round(3 * fwd / 1e9, 4),
        "achieved_gflops": round(achieved, 2),
        "peak_gflops_ref": args.peak_gflops,
        "mfu": round(achieved / args.peak_gflops, 4),
    }
    if args.peers:
        _print_peers(Path(args.peers), result)
    print(json.dumps(result))
    return 0


def _print_peers(folder: Path, ours: dict) -> None:
    rows = [ours]
    for path in sorted(folder.glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(r, dict) and str(r.get("model", "")).upper() == ours["model"]:
            rows.append(r)
    rows.sort(key=lambda r: -r.get("img_per_s_median", 0))
    print("| peer | variant | img/s | step ms | MFU | peak RSS MiB |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        mfu = r.get("mfu")
        print(
            f"| {r.get('peer')} | {r.get('variant')} | {r.get('img_per_s_median')} | "
            f"{r.get('step_ms_median')} | {f'{mfu:.1%}' if mfu else '-'} | "
            f"{r.get('peak_rss_mib')} |",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
