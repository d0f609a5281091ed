"""No lost work: SIGTERM checkpoints and exits 75, SIGKILL at random moments (also in the middle of
checkpoint writes and evaluations) resumes bitwise, divergence stops with one line (or is skipped),
and every JSON line the launcher prints is strict. Real `launch.py` subprocesses on a tiny config
of the default experiment; the persistent compilation cache (tests/conftest.py) keeps restarts
cheap."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from xla_env import xla_flags

from attn_jax.errors import EXIT_DIVERGED, EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = str(ROOT / "launch.py")
RUN = [
    "--config.num_epochs=0",
    "--config.total_steps=160",
    "--config.batch_size=64",
    "--config.model.hidden_size=32",
    "--config.model.mlp_dim=64",
    "--config.model.depth=1",
    "--config.log_every=5",
    "--config.eval_every=40",
    "--config.checkpoint_every=10",
    "--config.keep_checkpoints=2",
    "--config.plots=false",
]
TOTAL = 160
# A tiny ResNet with batch norm: its running statistics are part of what must resume bitwise.
BN_RUN = [
    "--config",
    str(ROOT / "experiments" / "resnet_digits.py"),
    "--config.num_epochs=0",
    "--config.total_steps=40",
    "--config.batch_size=32",
    "--config.data.augment=false",
    "--config.model.stage_sizes=(1, 1)",
    "--config.model.width=8",
    "--config.model.norm=batch",
    "--config.log_every=5",
    "--config.eval_every=20",
    "--config.checkpoint_every=5",
    "--config.keep_checkpoints=2",
    "--config.plots=false",
]
BN_TOTAL = 40


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ, TFDS_DATA_DIR=str(tmp_path_factory.mktemp("tfds")), PYTHONUNBUFFERED="1")
    e["XLA_FLAGS"] = xla_flags(1)
    return e


def start(workdir: Path, env, *extra: str, run: list[str] = RUN) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, LAUNCH, "train", "--workdir", str(workdir), *run, *extra],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def strict_json_lines(text: str) -> list[dict]:
    def refuse(name):
        raise AssertionError(f"stdout holds the non-JSON constant {name}")

    lines = [line for line in text.splitlines() if line.startswith("{")]
    return [json.loads(line, parse_constant=refuse) for line in lines]


def final_params(workdir: Path, total: int = TOTAL) -> dict[str, np.ndarray]:
    """The last checkpoint's parameters and the model's other collections (batch_stats)."""
    path = (workdir / "checkpoints" / "latest" / str(total) / "state").absolute()
    state = ocp.StandardCheckpointer().restore(path)
    tree = {"params": state["params"], "model_state": state.get("model_state") or {}}
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}/")
            else:
                flat[prefix + k] = np.asarray(v)

    walk(tree, "")
    return flat


def assert_same_params(a: Path, b: Path, total: int = TOTAL) -> None:
    pa, pb = final_params(a, total), final_params(b, total)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


def train_steps(workdir: Path) -> list[int]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("split") == "train":
            steps.append(record["step"])
    return steps


@pytest.fixture(scope="module")
def straight(env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "run"
    code, out, err = finish(start(workdir, env))
    assert code == 0, err[-3000:]
    strict_json_lines(out)
    return workdir


def test_sigterm_checkpoints_that_step_exits_75_and_resumes_bitwise(straight, env, tmp_path):
    at = random.Random(os.getpid()).randrange(5, TOTAL - 20)
    workdir = tmp_path / "run"
    proc = start(workdir, env)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if any(s >= at for s in train_steps(workdir)):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == EXIT_PREEMPTED, err[-3000:]
    result = strict_json_lines(out)[-1]
    stopped = result["step"]
    assert result["status"] == "preempted" and at <= stopped < TOTAL
    assert f"stopped at step {stopped} of {TOTAL} (SIGTERM received)" in err
    assert (workdir / "checkpoints" / "latest" / str(stopped)).is_dir()

    code, out, err = finish(start(workdir, env))
    assert code == 0, err[-3000:]
    assert f"resuming at step {stopped}" in err
    assert_same_params(straight, workdir)
    assert train_steps(workdir) == list(range(5, TOTAL + 1, 5))  # each logged step once


def _soak(
    straight: Path,
    env,
    workdir: Path,
    kills: int,
    seed: int,
    run: list[str] = RUN,
    total: int = TOTAL,
    eval_every: int = 40,
) -> None:
    """Kills a run `kills` times with SIGKILL - at a random time, while a checkpoint is being
    written, or while an evaluation runs - restarting it after each kill, then lets it finish."""
    rng = random.Random(seed)
    latest = workdir / "checkpoints" / "latest"
    killed, launches = 0, 0
    while True:
        launches += 1
        assert launches <= 3 * kills + 5, "the run never finished"
        proc = start(workdir, env, run=run)
        if killed == kills:
            code, _, err = finish(proc)
            assert code == 0, err[-3000:]
            break
        moment = rng.choice(["time", "checkpoint", "evaluation"])
        delay = rng.uniform(1.0, 10.0)
        began = time.time()
        while proc.poll() is None and time.time() - began < 120:
            if moment == "time" and time.time() - began > delay:
                break
            if moment == "checkpoint" and latest.is_dir():
                if any("tmp" in p.name for p in latest.iterdir()):
                    break  # orbax is writing a step
            if moment == "evaluation":
                steps = train_steps(workdir)
                if steps and steps[-1] % eval_every == 0 and time.time() - began > 2:
                    break  # the step before an evaluation is logged; the eval is running
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
        else:
            proc.communicate()
    assert_same_params(straight, workdir, total)
    assert not (workdir / "checkpoints" / "unreadable").exists()
    for step_dir in latest.iterdir():  # every kept checkpoint reads
        assert step_dir.name.isdigit(), step_dir
        ocp.StandardCheckpointer().restore((step_dir / "state").absolute())


def test_two_sigkills_at_random_moments_resume_bitwise(straight, env, tmp_path):
    # Two kills (a resume that is itself killed, then resumed) in the fast suite; the soak of
    # twenty below is the slow version.
    _soak(straight, env, tmp_path / "run", kills=2, seed=5)


@pytest.mark.slow
def test_twenty_sigkills_at_random_moments_resume_bitwise(straight, env, tmp_path):
    _soak(straight, env, tmp_path / "run", kills=20, seed=20)


# Slow: the fast suite resumes the SIGKILLed ViT above bitwise, and checkpoints and restores
# batch_stats in process (tests/train/test_batch_stats.py, tests/models/test_resnet.py).
@pytest.mark.slow
def test_sigkills_resume_bitwise_with_batch_norm_statistics(env, tmp_path):
    straight = tmp_path / "straight"
    code, _, err = finish(start(straight, env, run=BN_RUN))
    assert code == 0, err[-3000:]
    stats = {k: v for k, v in final_params(straight, BN_TOTAL).items() if "batch_stats" in k}
    assert stats and any(np.abs(v).max() > 0 for k, v in stats.items() if k.endswith("mean"))
    _soak(
        straight, env, tmp_path / "run", kills=1, seed=2, run=BN_RUN, total=BN_TOTAL, eval_every=20
    )


def test_divergence_stops_with_one_line_or_is_skipped(env, tmp_path):
    diverge = ["--config.optim.lr=1e4", "--config.optim.grad_clip_norm=0", "--config.log_every=1"]
    code, out, err = finish(start(tmp_path / "stop", env, *diverge))
    assert code == EXIT_DIVERGED, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: the loss or gradient norm is not finite")
    result = strict_json_lines(out)[-1]
    assert result["status"] == "diverged" and result["step"] <= 10
    for line in (tmp_path / "stop" / "metrics.jsonl").read_text().splitlines():
        strict_json_lines(line)

    code, out, err = finish(start(tmp_path / "skip", env, *diverge, "--config.on_nonfinite=skip"))
    assert code == 0, err[-3000:]
    result = strict_json_lines(out)[-1]
    assert result["nonfinite_steps"] > 0 and result["step"] == TOTAL
    params = final_params(tmp_path / "skip")
    assert all(np.isfinite(v).all() for v in params.values())
