#!/usr/bin/env python
"""Times the project's own train step (the one `launch.py train` compiles) on a synthetic batch.

Same protocol and JSON fields as the peer benchmarks in ../shared/bench (benchutil.report), so that
`benchmarks/compare.py` can run ours and theirs side by side: a fixed batch resident on the device,
`--warmup` untimed steps (compilation included), then `--steps` steps timed one by one, each
synchronised by fetching the loss, reporting the median. The model, batch and optimizer are the
peers' (below); the step itself is `train/loop.py`'s `make_train_step`: jitted with shardings,
state donated, dropout keys from `fold_in(key, step)`, loss, accuracy and gradient norm in it.

  python benchmarks/train_step.py --model m1          # textbook Keras ViT, CIFAR-10 size, batch 128
  python benchmarks/train_step.py --model m2          # ViT-Ti/16 at 224, 1000 classes, batch 32
  python benchmarks/train_step.py --model m3          # Swin-T at 224, 1000 classes, batch 8

Models (the peers' M1-M3, ../shared/bench/README.md):
  m1: experiments/vit_cifar10_textbook.py (model.variant=textbook_cifar10), batch 128.
  m2: experiments/vit_imagenet.py with variant Ti/16, no dropout, exact GELU, batch 32 (timm's
      VisionTransformer with ViT-Ti/16 settings).
  m3: experiments/swin_imagenet.py with variant T, batch 8, label smoothing 0: timm's
      `swin_tiny_patch4_window7_224` as `timm.create_model` builds it, whose stochastic depth rate
      is timm's default 0.1 (the paper's 0.2 is a training-script argument); pass
      --config.model.drop_path_rate=0 to switch it off.
  b16: experiments/vit_imagenet.py with variant B/16 (DeiT-B: no dropout), batch 256 (no CPU peer;
      the GPU script's ViT-B/16 figure, benchmarks/gpu.sh).
  detr: experiments/detr_r50_coco.py (ResNet-50 DETR, 100 queries), batch 8 of 896 x 1152 canvases
      with an 800 x 1066 image in each (a COCO image at the paper's shortest side 800, padded to
      the pipeline's multiple of 128) and 1-20 random boxes: the whole step, Hungarian matching
      on the device included.
  digits: the default experiment, experiments/vit_digits.py, batch 128 (no peer).
Optimizer as the peers (optax.adamw / torch.optim.AdamW defaults): AdamW lr 1e-3, weight decay 1e-4
on every parameter, constant, no clipping. Any `--config.k=v` is applied on top.

MFU = matmul FLOPs of forward + backward (3x the forward's dot/conv FLOPs, counted from the jaxpr
of the xla attention path, so that a fused kernel's products count too, 1 MAC = 2 FLOP) x img/s
/ --peak-gflops (default: the 75.4 GFLOP/s that ../shared/bench measured on an AVX2 host; pass
this host's figure, e.g. from benchmarks/matmul_peak.py, or on a GPU the datasheet's dense bf16
rate). On a GPU the line also has the device's peak memory in use.
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
        config="experiments/vit_cifar10_textbook.py", batch=128, steps=20, warmup=3, overrides=[]
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
    "b16": dict(
        config="experiments/vit_imagenet.py",
        batch=256,
        steps=10,
        warmup=2,
        overrides=["--config.model.variant=B/16", "--config.model.dropout_rate=0.0"],
    ),
    "detr": dict(
        config="experiments/detr_r50_coco.py",
        batch=8,
        steps=10,
        warmup=2,
        overrides=[],
        canvas=(896, 1152),
        image=(800, 1066),
    ),
    "m3": dict(
        config="experiments/swin_imagenet.py",
        batch=8,
        steps=6,
        warmup=2,
        overrides=[
            "--config.model.variant=T",
            "--config.model.drop_path_rate=0.1",  # timm.create_model's default (see above)
            "--config.task.label_smoothing=0.0",
        ],
    ),
}
# What the peers' optax.adamw(1e-3, weight_decay=1e-4) and torch.optim.AdamW(lr=1e-3,
# weight_decay=1e-4) do: decay on every parameter, eps 1e-8, constant rate, no clipping.
PEER_OPTIM = dict(
    name="adamw",
    lr=1e-3,
    weight_decay=1e-4,
    weight_decay_mask="all",
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    schedule="constant",
    warmup_steps=0,
    grad_clip_norm=None,
    grad_accum_steps=1,
    layer_decay=0.0,
)


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


def peer_config(model: str, overrides: list[str], model_fields: dict | None = None):
    """The experiment's config with the peers' model, batch and optimizer settings, then
    `overrides` (--config.k=v strings) and `model_fields` (model keys the file may not list)."""
    from attn_jax import config as config_lib

    spec = MODELS[model]
    config = config_lib.load_config(ROOT / spec["config"])
    with config.unlocked():
        config.optim = dict(PEER_OPTIM)
    config_lib.apply_overrides(config, [*spec["overrides"], *overrides])
    with config.unlocked():
        config.model.update(model_fields or {})
    return config


def synthetic_batch(exp, batch: int, spec: dict) -> dict:
    """A fixed host batch of `batch` examples in the format of the experiment's task: images and
    labels for classification; padded canvases, pixel masks and 1-20 boxes for detection."""
    import numpy as np

    rng = np.random.default_rng(0)
    if exp.spec.kind != "detection":
        (image,) = exp.init_inputs()
        return {
            "image": rng.standard_normal((batch, *image.shape[1:]), dtype=np.float32),
            "label": rng.integers(0, exp.spec.num_classes, batch).astype(np.int32),
            "mask": np.ones(batch, bool),
        }
    (h, w), (ih, iw) = spec["canvas"], spec["image"]
    n = exp.spec.max_boxes
    pixel_mask = np.zeros((batch, h, w), bool)
    pixel_mask[:, :ih, :iw] = True
    centre = rng.uniform(0.2, 0.8, (batch, n, 2))
    size = rng.uniform(0.05, 0.3, (batch, n, 2))
    count = rng.integers(1, 21, batch)
    return {
        "image": rng.standard_normal((batch, h, w, 3), dtype=np.float32) * pixel_mask[..., None],
        "pixel_mask": pixel_mask,
        "boxes": np.concatenate([centre, size], -1).astype(np.float32),  # cx cy w h of the image
        "labels": rng.integers(0, exp.spec.num_classes, (batch, n)).astype(np.int32),
        "box_mask": np.arange(n)[None, :] < count[:, None],
        "mask": np.ones(batch, bool),
    }


def device_peak_mib() -> float | None:
    """Peak memory the first device's allocator has handed out (None where it does not say:
    XLA:CPU keeps no such count)."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def build(
    model_name: str,
    batch: int,
    overrides: list[str],
    model_fields: dict | None = None,
    spec: dict | None = None,
):
    """(compiled-on-first-call train step, initial state, device batch, experiment) of a model,
    built as `launch.py train` builds them; `overrides` and `model_fields` as `peer_config`."""
    import jax

    from attn_jax.train import loop
    from attn_jax.train import sharding as shard_lib
    from attn_jax.train.optim import make_optimizer

    config = peer_config(model_name, overrides, model_fields)
    exp = loop.build_experiment(config)  # reads no data, only the registry
    tx, schedule = make_optimizer(config.optim, 1000)
    mesh = shard_lib.make_mesh()
    init_fn = loop.make_init_fn(exp.model, tx, exp.init_inputs())
    _, state_sharding = loop._state_shardings(init_fn, mesh)
    state = jax.jit(init_fn, out_shardings=state_sharding)(jax.random.key(0))
    train_step = loop.make_train_step(
        exp.model,
        exp.task,
        tx,
        schedule,
        mesh,
        state_sharding,
        microbatches=int(config.get("microbatches", 1)),
    )
    host_batch = synthetic_batch(exp, batch, spec=spec or MODELS[model_name])
    device_batch = shard_lib.to_global(host_batch, shard_lib.batch_sharding(mesh))
    return train_step, state, device_batch, exp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="m1")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--peak-gflops", type=float, default=75.4)
    parser.add_argument(
        "--canvas",
        help="detection: padded canvas and image in it, HxW:hxw (default 896x1152:800x1066)",
    )
    own, overrides = [], []
    for arg in sys.argv[1:]:
        (overrides if arg.startswith("--config.") else own).append(arg)
    args = parser.parse_args(own)
    spec = dict(MODELS[args.model])
    if args.canvas:
        try:
            canvas, image = (
                tuple(int(v) for v in part.split("x")) for part in args.canvas.split(":")
            )
        except ValueError:
            parser.error(f"--canvas {args.canvas!r}: write HxW:hxw, e.g. 896x1152:800x1066")
        spec.update(canvas=canvas, image=image)
    batch = args.batch or spec["batch"]
    steps, warmup = args.steps or spec["steps"], args.warmup or spec["warmup"]

    import flax
    import jax

    from attn_jax.models import count_params

    train_step, state, device_batch, exp = build(args.model, batch, overrides, spec=spec)
    model = exp.model
    # One example of the batch: what the forward's FLOPs are counted on.
    inputs = [device_batch["image"][:1]]
    if "pixel_mask" in device_batch:
        inputs.append(device_batch["pixel_mask"][:1])

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
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    # Counted on the xla attention path: a fused kernel (cuDNN on a GPU) is one custom call in
    # the jaxpr, and its QK^T and AV products would drop out of the count.
    counted = model.clone(attention_impl="xla") if hasattr(model, "attention_impl") else model
    fwd = matmul_flops(
        lambda p, *x: counted.apply({"params": p}, *x, train=False)[0], state.params, *inputs
    )
    med = statistics.median(times)
    achieved = 3 * fwd * batch / med / 1e9
    result = {
        "peer": "attn_jax",
        "variant": "launch.py train step",
        "model": args.model,
        "batch": batch,
        "microbatches": int(exp.config.get("microbatches", 1)),
        "steps_timed": len(times),
        "step_ms_median": round(med * 1e3, 2),
        "step_ms_min": round(min(times) * 1e3, 2),
        "step_ms_max": round(max(times) * 1e3, 2),
        "img_per_s_median": round(batch / med, 2),
        "img_per_s_min": round(batch / max(times), 2),
        "img_per_s_max": round(batch / min(times), 2),
        "first_step_s": round(warm[0], 2) if warm else None,
        "peak_rss_mib": round(peak_rss, 1),
        "device_peak_mib": device_peak_mib(),
        "device": jax.devices()[0].device_kind,
        "dtype": str(exp.config.model.get("dtype", "float32")),
        "threads": f"XLA:CPU default (cores={len(os.sched_getaffinity(0))})",
        "cpus_visible": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "framework_version": jax.__version__,
        "flax_version": flax.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "params": count_params(state.params),
        "devices": jax.device_count(),
        "train_gflop_per_image_analytic": round(3 * fwd / 1e9, 4),
        "achieved_gflops": round(achieved, 2),
        "peak_gflops_ref": args.peak_gflops,
        "mfu": round(achieved / args.peak_gflops, 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from attn_jax.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
