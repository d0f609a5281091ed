"""A stand-in for `launch.py train` that speaks the trainer's protocol without JAX, so sweep tests
take seconds: `--config.k=v` overrides, metrics.jsonl records, one strict-JSON line last on
stdout, exit 0 / 2 (`error: ...`) / 3 (diverged) / 75 (SIGTERM: "checkpoint", resume on rerun).

Per value of `x` (config.fake.modes "x:mode,..."): ok; diverge (non-finite loss, exit 3); fail
(a user error); nan (exit 0, the target null); hang (evaluates once, then waits for SIGTERM);
stubborn (hangs and ignores SIGTERM); bad (a low accuracy curve, then waits for SIGTERM).
Every start appends its pid to <workdir>/starts; a SIGTERM leaves <workdir>/checkpoint.
"""

import json
import signal
import sys
import time
from pathlib import Path

from attn_jax import config as config_lib
from attn_jax.errors import EXIT_DIVERGED, EXIT_PREEMPTED, UserError


def main(argv: list[str]) -> int:
    assert argv[0] == "train", argv
    config_path = argv[argv.index("--config") + 1]
    workdir = Path(argv[argv.index("--workdir") + 1])
    overrides = [a for a in argv if a.startswith("--config.")]
    try:
        config = config_lib.load_config(config_path)
        config_lib.apply_overrides(config, overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "starts").open("a") as f:
        f.write(f"{__import__('os').getpid()}\n")
    modes = dict(m.split(":") for m in config.fake.modes.split(",") if m)
    mode = next((m for x, m in modes.items() if float(x) == config.x), "ok")
    ckpt = workdir / "checkpoint"
    state = {"step": int(ckpt.read_text()) if ckpt.exists() else 0}
    path = workdir / "metrics.jsonl"
    if path.exists():  # a resume repeats the steps after its checkpoint: drop their records
        kept = [x for x in path.read_text().splitlines() if json.loads(x)["step"] <= state["step"]]
        path.write_text("".join(x + "\n" for x in kept))
    metrics = path.open("a")

    def on_sigterm(signum, frame):
        if mode == "stubborn":
            return
        ckpt.write_text(str(state["step"]))
        print(f"stopped at step {state['step']} by SIGTERM; checkpointed", file=sys.stderr)
        print(json.dumps({"status": "preempted", "step": state["step"]}), flush=True)
        sys.exit(EXIT_PREEMPTED)

    signal.signal(signal.SIGTERM, on_sigterm)
    total = config.total_steps
    while state["step"] < total:
        time.sleep(config.fake.step_time)
        state["step"] += 1
        step = state["step"]
        loss = float("nan") if mode == "diverge" and step > total // 2 else 1.0 - config.x
        metrics.write(
            json.dumps({"step": step, "split": "train", "loss": loss if loss == loss else None})
            + "\n"
        )
        if loss != loss:
            metrics.flush()
            print(f"error: training diverged at step {step}; lower optim.lr", file=sys.stderr)
            print(json.dumps({"status": "diverged", "step": step, "validation/accuracy": None}))
            return EXIT_DIVERGED
        if step % config.eval_every == 0:
            acc = 0.01 if mode == "bad" else config.x * step / total
            metrics.write(json.dumps({"step": step, "split": "validation", "accuracy": acc}) + "\n")
            metrics.flush()
            if mode in ("hang", "stubborn", "bad"):
                while True:
                    time.sleep(0.05)
        if mode == "fail" and step == 2:
            print("Traceback (most recent call last):\n  ...", file=sys.stderr)
            print(f"error: config.x={config.x} is cursed; pick another x", file=sys.stderr)
            return 2
    metrics.flush()
    value = None if mode == "nan" else config.x
    result = {"validation/accuracy": value, "test/accuracy": config.x - 0.01, "step": total}
    if value is None:
        result["nonfinite"] = {"validation/accuracy": "nan"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
