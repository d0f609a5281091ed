#!/usr/bin/env python
"""Time and memory of the attention implementations, one configuration per process.

Implementations (`--impl`, comma-separated):
  explicit   logits, float32 softmax, weights materialised, einsum (`return_weights=True` path)
  xla        `jax.nn.dot_product_attention(implementation="xla")`
  cudnn      the cuDNN flash kernel (NVIDIA GPUs; half precision)
  blockwise  `attention/blockwise.py`: tiles of an online softmax, linear memory, custom VJP
Each (implementation, length) runs in a subprocess of its own, so that `peak_rss_mib` (the process
high-water mark, `ru_maxrss`) belongs to that configuration alone. A configuration whose compiled
step XLA plans to need more than `--mem-cap-gib` of scratch is not run: its line says so, with the
planned size (XLA's memory analysis, measured without running).

  python benchmarks/attention_kernels.py --impl blockwise --seq 16384 --batch 1 --heads 8 \\
      --head-dim 64 --backward
  python benchmarks/attention_kernels.py --impl xla,blockwise --seq 1024,2048,4096,8192,16384 \\
      --batch 1 --heads 8 --head-dim 64 --backward
  python benchmarks/attention_kernels.py --impl explicit,xla,cudnn --batch 4 --seq 4096 --causal

One JSON line per configuration: impl, device, dtype, shape [B, T, H, Dh], causal, backward, ms
(median of --steps), gflops (GFLOP/s of 4 B H T^2 Dh FLOP forward, 2.5x that more with the
backward's five products; causal halves both), compile_s, xla_temp_mib (the scratch XLA planned),
rss_before_mib (inputs made, nothing compiled), peak_rss_mib, and, when the explicit path fits in
--check-mib, max_abs_diff_out / max_abs_diff_grad against it (computed after the RSS was read).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPLS = ("explicit", "xla", "cudnn", "blockwise")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def attention_fn(impl: str, causal: bool, block: int):
    from attn_jax.attention.blockwise import blockwise_dot_product_attention
    from attn_jax.attention.dot_product import scaled_dot_product_attention

    def attend(q, k, v):
        if impl == "explicit":
            out, _ = scaled_dot_product_attention(q, k, v, is_causal=causal, return_weights=True)
            return out
        if impl == "blockwise":
            return blockwise_dot_product_attention(
                q, k, v, is_causal=causal, block_q=block, block_k=block
            )
        return scaled_dot_product_attention(q, k, v, is_causal=causal, implementation=impl)

    return attend


def step_fn(attend, backward: bool):
    import jax

    def forward(q, k, v, cot):
        del cot
        return attend(q, k, v)

    def forward_backward(q, k, v, cot):
        out, vjp = jax.vjp(attend, q, k, v)
        return out, vjp(cot)

    return jax.jit(forward_backward if backward else forward)


def run_one(args) -> dict:
    """Measures one configuration in this process."""
    import jax
    import jax.numpy as jnp

    platform = jax.devices()[0].platform
    dtype = jnp.dtype(args.dtype or ("bfloat16" if platform == "gpu" else "float32"))
    shape = (args.batch, args.seq, args.heads, args.head_dim)
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, cot = (jax.random.normal(key, shape, dtype) for key in keys)
    jax.block_until_ready((q, k, v, cot))
    row = {
        "impl": args.impl,
        "device": jax.devices()[0].device_kind,
        "dtype": dtype.name,
        "shape": list(shape),
        "causal": args.causal,
        "backward": args.backward,
    }
    if args.impl == "blockwise":
        row["block"] = args.block
    row["rss_before_mib"] = round(peak_rss_mib(), 1)
    fn = step_fn(attention_fn(args.impl, args.causal, args.block), args.backward)
    t = time.perf_counter()
    try:
        compiled = fn.lower(q, k, v, cot).compile()
    except Exception as e:  # noqa: BLE001 - a kernel this device lacks is reported, not fatal
        return dict(row, error=str(e).splitlines()[0][:200])
    row["compile_s"] = round(time.perf_counter() - t, 2)
    planned = compiled.memory_analysis().temp_size_in_bytes
    row["xla_temp_mib"] = round(planned / 2**20, 1)
    if planned > args.mem_cap_gib * 2**30:
        row["skipped"] = (
            f"XLA plans {planned / 2**30:.1f} GiB of scratch > --mem-cap-gib {args.mem_cap_gib}"
        )
        return row
    for _ in range(args.warmup):
        result = jax.block_until_ready(compiled(q, k, v, cot))
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        result = jax.block_until_ready(compiled(q, k, v, cot))
        times.append(time.perf_counter() - t)
    row["peak_rss_mib"] = round(peak_rss_mib(), 1)
    ms = statistics.median(times) * 1e3
    flops = 4 * args.batch * args.heads * args.seq**2 * args.head_dim
    flops *= (3.5 if args.backward else 1.0) / (2 if args.causal else 1)
    row.update(ms=round(ms, 2), gflops=round(flops / (ms * 1e-3) / 1e9, 1))
    weights_mib = args.batch * args.heads * args.seq**2 * 4 / 2**20
    if args.impl != "explicit" and weights_mib <= args.check_mib:
        reference = step_fn(attention_fn("explicit", args.causal, args.block), args.backward)
        expected = reference(q, k, v, cot)
        got, want = (x if args.backward else (x, ()) for x in (result, expected))
        row["max_abs_diff_out"] = float(
            jnp.max(jnp.abs(got[0].astype(jnp.float32) - want[0].astype(jnp.float32)))
        )
        if args.backward:
            row["max_abs_diff_grad"] = max(
                float(jnp.max(jnp.abs(g.astype(jnp.float32) - w.astype(jnp.float32))))
                for g, w in zip(got[1], want[1], strict=True)
            )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="explicit,xla,blockwise", help=f"comma list of {IMPLS}")
    parser.add_argument("--seq", default="197", help="comma list of lengths")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: bf16 on GPU)")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--block", type=int, default=256, help="blockwise tile (block_q=block_k)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mem-cap-gib", type=float, default=8.0)
    parser.add_argument("--check-mib", type=float, default=512.0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    args = parser.parse_args()
    impls = args.impl.split(",")
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        parser.error(f"unknown --impl {unknown}; choose from {IMPLS}")
    lengths = [int(s) for s in args.seq.split(",")]
    if len(impls) == 1 and len(lengths) == 1:
        args.seq = lengths[0]
        print(json.dumps(run_one(args)), flush=True)
        return
    for seq in lengths:
        for impl in impls:
            cmd = [sys.executable, __file__, *_args_for(args, impl, seq)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(json.dumps({"impl": impl, "seq": seq, "error": "timeout"}), flush=True)
                continue
            lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
            if done.returncode == 0 and lines:
                print(lines[-1], flush=True)
            else:
                last = (done.stderr.strip().splitlines() or [""])[-1][:200]
                failed = {"impl": impl, "seq": seq, "error": f"exit {done.returncode}: {last}"}
                print(json.dumps(failed), flush=True)


def _args_for(args, impl: str, seq: int) -> list[str]:
    out = ["--impl", impl, "--seq", str(seq)]
    for name in ("batch", "heads", "head_dim", "block", "steps", "warmup", "mem_cap_gib"):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    out += ["--check-mib", str(args.check_mib)]
    if args.dtype:
        out += ["--dtype", args.dtype]
    out += ["--causal"] * args.causal + ["--backward"] * args.backward
    return out


if __name__ == "__main__":
    main()
