#!/usr/bin/env python
"""The matmul throughput one framework reaches on this host: the ceiling its train step works
against. Square n x n products, best of `--reps` after one warm-up, 2 n^3 FLOP each.

  python benchmarks/matmul_peak.py --backend jax      # XLA:CPU, jitted, fp32
  python benchmarks/matmul_peak.py --backend torch    # ATen (oneDNN / MKL)
  python benchmarks/matmul_peak.py --backend jax --dtype bfloat16 --n 8192 16384   # a GPU

Prints one JSON line: backend, version, GFLOP/s per size and the best of them (`gflops`).
Unlike ../shared/bench/matmul_peak.py it writes no file, so `compare.py --peak` can run it
beside the train steps of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import time


def best_gflops(run, n: int, reps: int) -> float:
    run()  # compilation, allocation, thread-pool start
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("jax", "torch"), required=True)
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16")
    args = parser.parse_args()
    by_size = {}
    if args.backend == "jax":
        import jax
        import jax.numpy as jnp

        version = f"{jax.__version__} on {jax.devices()[0].device_kind}"
        product = jax.jit(jnp.matmul)
        for n in args.n:
            a, b = (
                jax.random.normal(key, (n, n), jnp.dtype(args.dtype))
                for key in jax.random.split(jax.random.key(0))
            )
            by_size[n] = best_gflops(
                lambda a=a, b=b: product(a, b).block_until_ready(), n, args.reps
            )
    else:
        import torch

        version = torch.__version__
        for n in args.n:
            a, b = (torch.randn(n, n, dtype=getattr(torch, args.dtype)) for _ in range(2))
            by_size[n] = best_gflops(lambda a=a, b=b: torch.mm(a, b), n, args.reps)
    print(
        json.dumps(
            {
                "backend": args.backend,
                "version": version,
                "dtype": args.dtype,
                "gflops_by_n": {str(n): round(g, 1) for n, g in by_size.items()},
                "gflops": round(max(by_size.values()), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
