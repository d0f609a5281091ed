#!/usr/bin/env python
"""Times `scaled_dot_product_attention`'s paths on the current device and checks that they agree.

Paths: "explicit" (weights materialised, what `return_weights=True` or attention dropout takes),
"xla" (`jax.nn.dot_product_attention(implementation="xla")`) and, on an NVIDIA GPU, "cudnn" (the
fused flash kernel; half precision only). Each is jitted on forward + backward (the gradient of
sum(out * cotangent) w.r.t. q, k, v), run `--warmup` times, then timed `--steps` times with the
result fetched, median reported. The largest absolute difference of each path's output and
gradients from the explicit path is printed with it, so a fast path that is wrong shows.

  python benchmarks/attention_kernels.py                         # ViT-B/16-like shapes
  python benchmarks/attention_kernels.py --seq 4096 --batch 4 --causal

One JSON line per path: path, dtype, shape, ms (median fwd+bwd), tflops (4 matmuls of
2*B*H*Tq*Tk*Dh each, x3 for fwd+bwd; causal halves them), max_abs_diff_out, max_abs_diff_grad.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from attn_jax.attention.dot_product import scaled_dot_product_attention  # noqa: E402


def make_fn(path: str, causal: bool):
    def attend(q, k, v):
        if path == "explicit":
            out, _ = scaled_dot_product_attention(q, k, v, is_causal=causal, return_weights=True)
            return out
        return scaled_dot_product_attention(q, k, v, is_causal=causal, implementation=path)

    def fwd_bwd(q, k, v, cot):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(cot)

    return jax.jit(fwd_bwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=197)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bf16 on GPU)")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    platform = jax.devices()[0].platform
    dtype = jnp.dtype(args.dtype or ("bfloat16" if platform == "gpu" else "float32"))
    shape = (args.batch, args.seq, args.heads, args.head_dim)
    kq, kk, kv, kc = jax.random.split(jax.random.key(0), 4)
    q, k, v, cot = (jax.random.normal(key, shape, dtype) for key in (kq, kk, kv, kc))
    paths = ["explicit", "xla"] + (["cudnn"] if platform == "gpu" else [])
    flops = 3 * 4 * 2 * args.batch * args.heads * args.seq**2 * args.head_dim
    flops /= 2 if args.causal else 1

    reference = None
    for path in paths:
        fn = make_fn(path, args.causal)
        try:
            for _ in range(args.warmup):
                result = jax.block_until_ready(fn(q, k, v, cot))
        except Exception as e:  # noqa: BLE001 - a kernel this device lacks is reported, not fatal
            print(json.dumps({"path": path, "error": str(e).splitlines()[0][:200]}))
            continue
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            result = jax.block_until_ready(fn(q, k, v, cot))
            times.append(time.perf_counter() - t0)
        out, grads = result
        if reference is None:
            reference = (out.astype(jnp.float32), [g.astype(jnp.float32) for g in grads])
        diff_out = float(jnp.max(jnp.abs(out.astype(jnp.float32) - reference[0])))
        diff_grad = max(
            float(jnp.max(jnp.abs(g.astype(jnp.float32) - r)))
            for g, r in zip(grads, reference[1], strict=True)
        )
        ms = statistics.median(times) * 1e3
        row = {
            "path": path,
            "device": jax.devices()[0].device_kind,
            "dtype": dtype.name,
            "shape": list(shape),
            "causal": args.causal,
            "ms": round(ms, 3),
            "tflops": round(flops / (ms * 1e-3) / 1e12, 2),
            "max_abs_diff_out": diff_out,
            "max_abs_diff_grad": diff_grad,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
