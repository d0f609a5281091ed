#!/usr/bin/env python
"""Per-device memory of a ViT train step under each parameter sharding, and the largest ViT preset
whose step fits a per-device budget - from the compiled step's memory analysis on forced host
devices (nothing is allocated: the state and batch are abstract).

  python benchmarks/sharding.py --model vit_b16 --devices 8 --sharding fsdp
  python benchmarks/sharding.py --devices 8 --sharding fsdp_tp --model-axis 2 --budget-gib 16

For each model it prints one JSON line: the parameter and optimizer bytes per device (from the
shardings), and XLA's memory analysis of the compiled train step per device (arguments, outputs,
temporaries, and their peak sum, with the state donated as in training); then a last line with the
largest preset of --models whose peak fits --budget-gib. Batch: --batch-per-device images at 224.
XLA:CPU's buffer assignment stands in for the accelerator's: the same program, so the same
sharded argument sizes; temporaries differ by backend, so leave headroom.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "vit_ti16": "Ti/16",
    "vit_s16": "S/16",
    "vit_b16": "B/16",
    "vit_l16": "L/16",
    "vit_h14": "H/14",
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(PRESETS), help="one preset (default: --models)")
    p.add_argument("--models", default="vit_b16,vit_l16,vit_h14", help="presets, smallest first")
    p.add_argument("--devices", type=int, default=8, help="forced host devices")
    p.add_argument("--sharding", default="fsdp", choices=("replicated", "fsdp", "fsdp_tp"))
    p.add_argument("--model-axis", type=int, default=1, help="devices on the model axis (fsdp_tp)")
    p.add_argument("--batch-per-device", type=int, default=1)
    p.add_argument("--budget-gib", type=float, default=16.0, help="per-device memory budget")
    return p.parse_args()


def measure(preset: str, args) -> dict:
    import jax
    import jax.numpy as jnp

    from attn_jax import config as config_lib
    from attn_jax.train import loop
    from attn_jax.train import sharding as shard_lib

    config = config_lib.load_config(ROOT / "experiments" / "vit_imagenet.py")
    config_lib.apply_overrides(
        config,
        [
            f"--config.model.variant={PRESETS[preset]}",
            f"--config.batch_size={args.batch_per_device * args.devices}",
            f"--config.sharding={args.sharding}",
            f"--config.mesh.model={args.model_axis}",
            "--config.model.num_classes=1000",
        ],
    )
    exp = loop.build_experiment(config, with_data=False)
    mesh = shard_lib.mesh_from_config(config)
    tx, schedule = loop.make_optimizer(config.optim, exp.total_steps)
    init_fn = loop.make_init_fn(exp.model, tx, exp.init_inputs())
    abstract, shardings = loop._shardings_for(config, exp, init_fn, mesh)
    state_bytes = per_device = 0
    for leaf in jax.tree_util.tree_leaves(abstract):
        nbytes = leaf.size * leaf.dtype.itemsize
        state_bytes += nbytes
        shard = leaf.sharding.shard_shape(leaf.shape)
        per_device += int(jnp.prod(jnp.asarray(shard))) * leaf.dtype.itemsize if shard else nbytes
    b = config.batch_size
    h, w, c = exp.spec.image_shape
    batch_sharding = shard_lib.batch_sharding(mesh)
    batch = {
        "image": jax.ShapeDtypeStruct((b, h, w, c), jnp.float32, sharding=batch_sharding),
        "label": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=batch_sharding),
        "mask": jax.ShapeDtypeStruct((b,), jnp.bool_, sharding=batch_sharding),
    }
    step = loop.make_train_step(exp.model, exp.task, tx, schedule, mesh, shardings)
    began = time.perf_counter()
    compiled = step.lower(abstract, batch).compile()
    mem = compiled.memory_analysis()
    args_b, out_b, temp_b = (
        mem.argument_size_in_bytes,
        mem.output_size_in_bytes,
        mem.temp_size_in_bytes,
    )
    alias = getattr(mem, "alias_size_in_bytes", 0)
    # Donated state: outputs reuse the arguments' buffers (alias), so the peak is args + temps +
    # the outputs that are not aliased.
    peak = args_b + temp_b + out_b - alias
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(abstract.params))
    return {
        "model": preset,
        "variant": PRESETS[preset],
        "params": int(n_params),
        "devices": args.devices,
        "sharding": args.sharding,
        "mesh": dict(mesh.shape),
        "batch_per_device": args.batch_per_device,
        "state_bytes_total": int(state_bytes),
        "state_bytes_per_device": int(per_device),
        "compiled_per_device": {
            "arguments": int(args_b),
            "outputs": int(out_b),
            "aliased": int(alias),
            "temporaries": int(temp_b),
            "peak": int(peak),
        },
        "peak_gib_per_device": round(peak / 2**30, 3),
        "compile_s": round(time.perf_counter() - began, 1),
    }


def main() -> int:
    args = parse()
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(ROOT))
    models = [args.model] if args.model else args.models.split(",")
    fits = None
    for preset in models:
        row = measure(preset, args)
        print(json.dumps(row), flush=True)
        if row["peak_gib_per_device"] <= args.budget_gib:
            fits = preset
    print(
        json.dumps(
            {
                "largest_fitting": fits,
                "budget_gib": args.budget_gib,
                "sharding": args.sharding,
                "devices": args.devices,
                "batch_per_device": args.batch_per_device,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
