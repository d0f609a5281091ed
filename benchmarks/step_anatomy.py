#!/usr/bin/env python
"""Where a train step spends its time and memory: ours against plain Flax on the same XLA.

  python benchmarks/step_anatomy.py --model m1 [--variants ours,lean,flax] [--rounds 5]
  python benchmarks/step_anatomy.py --model m2 --variants ours,flax --trace /tmp/trace

Every variant is compiled in this one process and then stepped in turns (A B C A B C ...), so the
times are ratios measured side by side. Variants:

  ours      the step `launch.py train` compiles (benchmarks/train_step.py `build`)
  lean      our model and loss in the plain harness: value_and_grad, AdamW, donated; no metrics,
            no non-finite guard, no shardings; what the trainer around the model costs
  explicit  ours with model.attention_impl="explicit" (einsum, softmax, einsum)
  xla       ours with model.attention_impl="xla" (jax.nn.dot_product_attention)
  remat     ours with model.remat=true (each block's activations recomputed in the backward)
  flax      ../shared/bench/bench_jax.py's plain Flax model and step (m1, m2)
A variant named "name@impl" is built with that PRNG implementation (e.g. ours@rbg, flax@unsafe_rbg;
--prng sets the default of all).

For each: compile seconds; XLA's cost analysis (FLOPs, bytes accessed); memory analysis (the
temporary buffers of the step, arguments, outputs, aliased = donated); process RSS after compiling;
the scheduled HLO (thunks: fusions by kind, dots, copies with the bytes they write) and what the
fusions contain; median step ms. With --trace DIR, --trace-steps profiled steps per variant give
each HLO thunk's time (its minimum over the steps), summed by category (random bits, library
dot/reduce kernels, elementwise fusions, copies), by phase (fwd, bwd, update) and by the module
it came from, with the slowest thunks and their source op names.
Prints one JSON line per variant, then a summary line with the ratios to the first variant.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# `%name = f32[2,3]{1,0} opcode(...)`: an HLO instruction with its result shape and opcode.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\([^=]*\)|\S+) ([\w\-]+)\(")
_COMPUTATION_NAME = re.compile(r"^(?:ENTRY )?%?([\w.\-]+)")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "f16": 2, "bf16": 2, "pred": 1, "u8": 1, "s8": 1}


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string such as f32[32,197,192]{2,1,0} (tuples: the sum)."""
    total = 0
    for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _DTYPE_BYTES.get(dtype, 4)
    return total


def hlo_summary(text: str) -> dict:
    """Counts of the optimized HLO: what runs as a thunk, and what the fusions contain.

    A fusion counts as one thunk, labelled by its kind (loop, or the library that runs it, e.g.
    "ynn" for YNNPACK's dot and reduction kernels); while loops count their body's thunks once.
    """
    fused = set(_CALLS.findall(text))
    scheduled, inside = collections.Counter(), collections.Counter()
    moved = collections.Counter()  # bytes written by top-level copies/transposes
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            header = _COMPUTATION_NAME.match(line)
            current = header.group(1) if header else None
            continue
        inst = _INSTRUCTION.match(line)
        if not inst:
            continue
        _, shape, opcode = inst.groups()
        if current in fused:
            inside[opcode] += 1
            continue
        if opcode in ("parameter", "constant", "get-tuple-element", "tuple", "bitcast"):
            continue
        if opcode == "fusion":
            library = re.search(r'"kind":"__(\w+?)_fusion"', line)
            kind = re.search(r"kind=k(\w+)", line)
            opcode = "fusion:" + (library.group(1) if library else kind.group(1).lower())
        elif opcode == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', line)
            opcode = "custom-call:" + (target.group(1) if target else "?")
        scheduled[opcode] += 1
        if opcode in ("copy", "transpose"):
            moved[opcode] += shape_bytes(shape)
    return {
        "thunks": sum(scheduled.values()),
        "scheduled": dict(scheduled.most_common()),
        "copy_transpose_mib": {k: round(v / 2**20, 1) for k, v in moved.items()},
        "inside_fusions": {
            k: inside[k]
            for k in ("dot", "convolution", "transpose", "exponential", "xor", "reduce")
            if inside[k]
        },
    }


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Variant:
    """A compiled step with its own state; `run()` does one synchronised step."""

    def __init__(self, name, fn, state, rest, loss_of):
        self.name, self.fn, self.state, self.rest, self.loss_of = name, fn, state, rest, loss_of
        t = time.perf_counter()
        self.compiled = fn.lower(*state, *rest).compile()
        self.compile_s = time.perf_counter() - t
        self.times: list[float] = []

    def run(self) -> tuple[float, float]:
        t = time.perf_counter()
        out = self.compiled(*self.state, *self.rest)
        loss = float(self.loss_of(out))
        self.state = out[: len(self.state)]
        return time.perf_counter() - t, loss


def ours_variant(name, model, batch, model_fields=None):
    import train_step as ts

    step, state, device_batch, _ = ts.build(model, batch, [], model_fields)
    return Variant(name, step, (state,), (device_batch,), lambda out: out[1]["loss"])


def lean_variant(name, model, batch):
    """Our model and task loss in the plain harness: no metrics, guard or shardings."""
    import jax
    import optax
    import train_step as ts

    step, state, device_batch, exp = ts.build(model, batch, [])
    del step
    tx = optax.adamw(1e-3, weight_decay=1e-4)

    def lean(params, opt_state, batch, i):
        key = jax.random.fold_in(jax.random.key(1), i)

        def loss_fn(p):
            logits, _ = exp.model.apply(
                {"params": p}, batch["image"], train=True, rngs={"dropout": key}
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = state.params
    return Variant(
        name,
        jax.jit(lean, donate_argnums=(0, 1)),
        (params, tx.init(params)),
        (device_batch, 0),
        lambda out: out[2],
    )


def flax_variant(name, model, batch, peers_dir: Path):
    """bench_jax.py's plain Flax model and step, as that script builds them."""
    import jax
    import jax.numpy as jnp
    import optax

    sys.path.insert(0, str(peers_dir))
    import bench_jax

    apply, params, shape, classes = bench_jax.build_naive(model, batch)
    tx = optax.adamw(1e-3, weight_decay=1e-4)

    def train_step(params, opt_state, x, y, step):
        rng = jax.random.fold_in(jax.random.PRNGKey(1), step)

        def loss_fn(params):
            logits = apply(params, x, rng)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    kx, ky = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.normal(kx, shape, jnp.float32)
    y = jax.random.randint(ky, (batch,), 0, classes)
    return Variant(
        name,
        jax.jit(train_step, donate_argnums=(0, 1)),
        (params, tx.init(params)),
        (x, y, 0),
        lambda out: out[2],
    )


def _category(opcode: str, line: str, op_name: str) -> str:
    """What a thunk is for: random bits, a library kernel (dot/reduction), a copy, ..."""
    if re.search(r"_bernoulli|_uniform|threefry|random_bits|random_wrap|fold_in", op_name):
        return "random bits"
    if opcode == "fusion" and '"kind":"__' in line:
        return "library kernel (dot, reduce)"
    if opcode in ("dot", "convolution"):
        return "dot/conv"
    if opcode in ("copy", "transpose"):
        return "copy/transpose"
    if opcode == "fusion":
        return "elementwise fusion"
    return "other"


def _phase(op_name: str) -> str:
    if "transpose(jvp(" in op_name:
        return "bwd"
    if "jvp(" in op_name:
        return "fwd"
    return "update"


def _source(op_name: str) -> str:
    """'fwd ViT/Transformer/block/MultiHeadDotProductAttention_1' from a thunk's op_name: the
    module path (block indices folded) that the thunk's operation came from."""
    path = re.sub(r"(encoderblock|SeedBlock|block|layers)_\d+", "block", op_name)
    path = re.sub(r"^.*?jvp\(", "", path)
    parts = [
        p.rstrip(")")
        for p in path.split("/")
        if p and not p.startswith(("jit(", "while", "body", "closed_call", "cond"))
    ]
    return f"{_phase(op_name)} {'/'.join(parts[:4])}"


def trace_thunks(variant: Variant, folder: Path, top: int, steps: int) -> dict:
    """`steps` profiled steps; the time of each HLO thunk (XLA:CPU emits one trace event per thunk,
    a loop body's once per iteration), its minimum over the steps (the least disturbed by other
    processes), summed by category, by phase and by source module, and the `top` slowest."""
    import jax

    text = variant.compiled.as_text()
    info = {}
    for line in text.splitlines():
        inst = _INSTRUCTION.match(line)
        if inst:
            op = _OP_NAME.search(line)
            op_name = op.group(1) if op else ""
            opcode = inst.group(3)
            info[inst.group(1)] = (opcode, op_name, _category(opcode, line, op_name))
    per_step = []
    for i in range(steps):
        out = folder / variant.name / str(i)
        jax.profiler.start_trace(str(out))
        variant.run()
        jax.profiler.stop_trace()
        per = collections.Counter()
        for path in out.rglob("*.trace.json.gz"):
            for event in json.load(gzip.open(path))["traceEvents"]:
                name = event.get("name", "")
                if event.get("ph") == "X" and name in info:
                    per[name] += event.get("dur", 0) / 1e3
        per_step.append(per)
    best = {name: min(p.get(name, 0.0) for p in per_step) for name in per_step[0]}
    by_category, by_phase, by_source = (collections.Counter() for _ in range(3))
    for name, ms in best.items():
        opcode, op_name, category = info[name]
        by_category[category] += ms
        by_phase[_phase(op_name)] += ms
        by_source[f"{_source(op_name)} [{category}]"] += ms
    top_rows = sorted(best.items(), key=lambda kv: -kv[1])[:top]
    return {
        "thunk_ms_total": round(sum(best.values()), 1),
        "by_category_ms": {k: round(v, 1) for k, v in by_category.most_common()},
        "by_phase_ms": {k: round(v, 1) for k, v in by_phase.most_common()},
        "by_source_ms": {k: round(v, 1) for k, v in by_source.most_common(top * 2)},
        "top_thunks": [[n, info[n][2], round(ms, 2), info[n][1][-90:]] for n, ms in top_rows],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("m1", "m2", "m3"), default="m1")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--variants", default="ours,lean,flax")
    parser.add_argument("--rounds", type=int, default=5, help="0: compile and analyse only")
    parser.add_argument("--prng", help="jax_default_prng_impl for every variant (e.g. rbg)")
    parser.add_argument("--trace", type=Path, help="folder for one profiled step per variant")
    parser.add_argument("--top", type=int, default=12, help="thunks listed per traced variant")
    parser.add_argument("--trace-steps", type=int, default=3, help="profiled steps per variant")
    parser.add_argument("--hlo", type=Path, help="write each variant's optimized HLO here")
    parser.add_argument("--peers-dir", type=Path, default=ROOT.parent / "shared" / "bench")
    args = parser.parse_args()
    batch = args.batch or {"m1": 128, "m2": 32, "m3": 8}[args.model]

    import jax

    if args.prng:
        jax.config.update("jax_default_prng_impl", args.prng)
    variants = []
    rss_before = rss_mib()
    default_prng = jax.config.jax_default_prng_impl
    for label in args.variants.split(","):
        # "name@impl" builds that variant with another PRNG (e.g. ours@rbg); the compiled step
        # keeps it whatever the default is afterwards.
        name, _, prng = label.partition("@")
        jax.config.update("jax_default_prng_impl", prng or default_prng)
        if name == "ours":
            v = ours_variant(label, args.model, batch)
        elif name in ("explicit", "xla", "blockwise"):
            v = ours_variant(label, args.model, batch, {"attention_impl": name})
        elif name == "remat":
            v = ours_variant(label, args.model, batch, {"remat": True})
        elif name == "lean":
            v = lean_variant(label, args.model, batch)
        elif name == "flax":
            v = flax_variant(label, args.model, batch, args.peers_dir)
        else:
            raise SystemExit(f"unknown variant {name!r}")
        jax.config.update("jax_default_prng_impl", default_prng)
        v.rss_after_compile = rss_mib()
        variants.append(v)
        print(f"{label}: compiled in {v.compile_s:.1f} s", file=sys.stderr, flush=True)
    for v in variants[: len(variants) if args.rounds else 0]:  # allocate, settle donation
        v.run()
    for r in range(args.rounds):
        for v in variants:
            dt, loss = v.run()
            v.times.append(dt)
        print(
            f"round {r}: " + ", ".join(f"{v.name} {v.times[-1] * 1e3:.0f} ms" for v in variants),
            file=sys.stderr,
            flush=True,
        )
    summary = {"model": args.model, "batch": batch, "prng": args.prng or "threefry2x32"}
    base = statistics.median(variants[0].times) if args.rounds else None
    for v in variants:
        mem = v.compiled.memory_analysis()
        cost = v.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        text = v.compiled.as_text()
        if args.hlo:
            args.hlo.mkdir(parents=True, exist_ok=True)
            (args.hlo / f"{args.model}_{v.name}.txt").write_text(text)
        med = statistics.median(v.times) if args.rounds else None
        row = {
            "variant": v.name,
            "step_ms_median": round(med * 1e3, 1) if med else None,
            "step_ms_all": [round(t * 1e3) for t in v.times],
            "relative_to_first": round(med / base, 3) if med else None,
            "compile_s": round(v.compile_s, 1),
            "gflop_per_step": round(float(cost.get("flops", 0)) / 1e9, 2),
            "gb_accessed": round(float(cost.get("bytes accessed", 0)) / 1e9, 2),
            "temp_mib": round(mem.temp_size_in_bytes / 2**20, 1),
            "argument_mib": round(mem.argument_size_in_bytes / 2**20, 1),
            "output_mib": round(mem.output_size_in_bytes / 2**20, 1),
            "alias_mib": round(mem.alias_size_in_bytes / 2**20, 1),
            "rss_after_compile_mib": round(v.rss_after_compile, 0),
            "hlo": hlo_summary(text),
        }
        if args.trace and args.rounds:
            row["trace"] = trace_thunks(v, args.trace, args.top, args.trace_steps)
        print(json.dumps(row), flush=True)
        summary[v.name] = round(med / base, 3) if med else None
    summary["rss_before_mib"] = round(rss_before)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
