"""The launcher end to end, as a researcher uses it: train, eval, resume after a kill, sweep, info,
and the one-line errors for bad input. Each run is a real `python launch.py` subprocess on a tiny
config of the default experiment (sklearn digits, embedded)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from xla_env import xla_flags

from attn_jax.errors import EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = str(ROOT / "launch.py")
TINY = [
    "--config.num_epochs=0",
    "--config.total_steps=30",
    "--config.batch_size=64",
    "--config.model.hidden_size=32",
    "--config.model.mlp_dim=64",
    "--config.model.depth=1",
    "--config.log_every=1",
    "--config.eval_every=15",
    "--config.checkpoint_every=10",
    "--config.keep_checkpoints=2",
]


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    e = dict(os.environ, TFDS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    e["XLA_FLAGS"] = xla_flags(1)
    return e


def launch(args, env, *, devices=1, check=True, timeout=600):
    e = dict(env, XLA_FLAGS=xla_flags(devices))
    proc = subprocess.run(
        [sys.executable, LAUNCH, *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"launch {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def final_params(workdir: Path, step: int):
    path = workdir / "checkpoints" / "latest" / str(step) / "state"
    return ocp.StandardCheckpointer().restore(path.absolute())["params"]


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "a"
    proc = launch(["train", "--workdir", str(workdir), *TINY], env)
    return workdir, proc


def test_train_writes_the_workdir_and_ends_with_json(trained):
    workdir, proc = trained
    result = last_json(proc)
    assert result["step"] == 30 and 0.0 <= result["test/accuracy"] <= 1.0
    for name in ("config.json", "metrics.jsonl", "checkpoints", "tensorboard", "plots"):
        assert (workdir / name).exists(), name
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "plots" / "accuracy.png").stat().st_size > 1000
    assert (workdir / "plots" / "loss.png").stat().st_size > 1000
    records = read_metrics(workdir)
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, 31))  # log_every=1: every step's loss
    for r in records:
        assert {"step", "split", "loss", "accuracy"} <= set(r)
    assert [r["step"] for r in records if r["split"] == "test"] == [15, 30]
    kept = sorted(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir())
    assert kept == [20, 30]
    assert json.loads((workdir / "config.json").read_text())["model"]["hidden_size"] == 32


def test_eval_reproduces_the_training_accuracy(trained, env):
    workdir, proc = trained
    trained_result = last_json(proc)
    result = last_json(launch(["eval", "--workdir", str(workdir)], env))
    assert result["step"] == 30
    assert result["test/accuracy"] == trained_result["test/accuracy"]
    best = last_json(launch(["eval", "--workdir", str(workdir), "--best"], env))
    assert best["step"] == trained_result["best_step"] in (15, 30)
    missing = launch(["eval", "--workdir", str(workdir), "--step", "10"], env, check=False)
    assert missing.returncode != 0
    kept = sorted({20, 30, best["step"]})
    assert "no checkpoint at step 10" in missing.stderr and str(kept) in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("error: ")


def test_train_on_a_finished_workdir_resumes_and_does_no_more_steps(trained, env):
    workdir, proc = trained
    again = launch(["train", "--workdir", str(workdir)], env)
    assert last_json(again)["test/accuracy"] == last_json(proc)["test/accuracy"]
    assert "resuming at step 30" in again.stderr


MOVING = [  # no warmup: the losses change visibly from step to step
    *TINY,
    "--config.total_steps=12",
    "--config.eval_every=12",
    "--config.plots=false",
    "--config.optim.warmup_steps=0",
    "--config.optim.lr=1e-2",
    # A constant rate: the first 6 steps of a 12-step run are a 6-step run, so a run stopped at
    # step 6 can be resumed to 12 (allow_changes=total_steps) and compared step by step.
    "--config.optim.schedule=constant",
]
HALF = ["--config.total_steps=6"]
REST = ["--config.total_steps=12", "--config.allow_changes=total_steps"]


def train_losses(workdir: Path, after: int = 0) -> list[float]:
    return [r["loss"] for r in read_metrics(workdir) if r["split"] == "train" and r["step"] > after]


@pytest.fixture(scope="module")
def four_device_losses(env, tmp_path_factory) -> list[float]:
    """The train losses of the uninterrupted 12-step MOVING run on 4 devices, the reference of
    every device and process count below."""
    workdir = tmp_path_factory.mktemp("d4") / "run"
    four = launch(["train", "--workdir", str(workdir), *MOVING], env, devices=4)
    assert "on 4 device" in four.stderr
    losses = train_losses(workdir)
    assert len(losses) == 12 and max(losses) - min(losses) > 0.01  # not a constant
    return losses


def test_one_and_four_devices_give_the_same_losses(env, tmp_path, four_device_losses):
    """Data parallelism over 4 devices trains the 1-device model, and a checkpoint written on 4
    devices resumes on 1 and on 2: a 12-step run on 4 devices, stopped at step 6 and resumed on 1
    (or 2) devices, has the uninterrupted 4-device run's losses at every step (parameters and
    input position restored exactly; each device count feeds and reduces the same global batch)."""
    args = MOVING
    l4 = four_device_losses

    launch(["train", "--workdir", str(tmp_path / "h4"), *args, *HALF], env, devices=4)
    shutil.copytree(tmp_path / "h4", tmp_path / "h4_on2")
    for workdir, devices in ((tmp_path / "h4", 1), (tmp_path / "h4_on2", 2)):
        resumed = launch(["train", "--workdir", str(workdir), *args, *REST], env, devices=devices)
        assert "resuming at step 6" in resumed.stderr and f"on {devices} device" in resumed.stderr
        np.testing.assert_allclose(train_losses(workdir), l4, atol=1e-5, rtol=0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(env, workdir: Path, *args: str, slurm: bool = False) -> list[subprocess.Popen]:
    """Two `train` processes of one job on loopback, told their ids on the command line, or (with
    `slurm`) by the environment variables srun sets, with `--config.distributed.auto=true`."""
    port = _free_port()
    procs = []
    for i in range(2):
        e = dict(env, XLA_FLAGS=xla_flags(1))
        if slurm:
            job = str(port)  # JAX derives the coordinator port from the job id
            e.update(
                SLURM_JOB_ID=job,
                SLURM_STEP_NODELIST="localhost",
                SLURM_NTASKS="2",
                SLURM_PROCID=str(i),
                SLURM_LOCALID=str(i),
            )
            ids = ["--config.distributed.auto=true"]
        else:
            ids = [
                "--config.distributed.num_processes=2",
                f"--config.distributed.process_id={i}",
                f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            ]
        procs.append(
            subprocess.Popen(
                [sys.executable, LAUNCH, "train", "--workdir", str(workdir), *args, *ids],
                env=e,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def test_two_processes_on_loopback_match_one_process(env, tmp_path, four_device_losses):
    """Multi-host data parallelism: two processes (gloo collectives over loopback), one device
    each, read their halves of each global batch and train the same model as one process (the
    4-device run, which equals 1 and 2 devices above); their checkpoint resumes in a single
    process; and a SIGTERM to one process of a job that found its layout in SLURM's environment
    stops both at the same step with one checkpoint (exit 75)."""
    l1 = four_device_losses
    procs = _two_processes(env, tmp_path / "p2", *MOVING, *HALF)
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "on 2 device" in outs[0][1]
    assert json.loads(outs[0][0].strip().splitlines()[-1])["step"] == 6
    resumed = launch(["train", "--workdir", str(tmp_path / "p2"), *MOVING, *REST], env, devices=2)
    assert "resuming at step 6" in resumed.stderr
    l2 = train_losses(tmp_path / "p2")
    assert len(l2) == 12
    np.testing.assert_allclose(l2, l1, atol=1e-5, rtol=0)

    # Preempt one process of a long run started as srun starts it: both stop at one step.
    stopped = tmp_path / "p2_stopped"
    procs = _two_processes(env, stopped, *MOVING, "--config.total_steps=100000", slurm=True)
    deadline = time.time() + 240
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if (stopped / "metrics.jsonl").exists() and len(train_losses(stopped)) >= 3:
            break
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], [err[-2000:] for _, err in outs]
    step = json.loads(outs[0][0].strip().splitlines()[-1])["step"]
    assert step >= 3 and (stopped / "checkpoints" / "latest" / str(step)).is_dir()
    assert step == json.loads(outs[1][0].strip().splitlines()[-1])["step"]


def test_sweep_ranks_runs_and_marks_the_failed_one(env, tmp_path):
    out = tmp_path / "sweep"
    proc = launch(
        [
            "sweep",
            "--workdir",
            str(out),
            "--parallel",
            "2",
            "--sweep",
            "config.optim.schedule=cosine,linear,constant,bogus",
            *TINY,
            "--config.total_steps=10",
            "--config.eval_every=10",
            "--config.plots=false",
        ],
        env,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    result = last_json(proc)
    assert result["runs"] == 4 and len(result["failed"]) == 1 and "bogus" in result["failed"][0]
    md = (out / "summary.md").read_text().splitlines()
    rows = [line for line in md[2:] if line.startswith("|")]
    assert len(rows) == 4
    assert "| failed |" in rows[-1] and "unknown optim.schedule 'bogus'" in rows[-1]
    accs = [float(r.split("|")[5]) for r in rows[:3]]
    assert accs == sorted(accs, reverse=True)
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rank,run,status,optim.schedule,validation/accuracy")
    assert len(csv_lines) == 5


def test_unknown_key_stops_before_any_work(env, tmp_path):
    workdir = tmp_path / "never"
    proc = launch(["train", "--workdir", str(workdir), "--config.optim.lrr=1"], env, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.optim.lr" in lines[0] and "nearest valid keys" in lines[0]
    assert not workdir.exists()
    bad_type = launch(
        ["train", "--workdir", str(workdir), "--config.model.depth=deep"], env, check=False
    )
    assert bad_type.returncode == 2 and "config.model.depth expects int" in bad_type.stderr


def test_checkpoint_that_does_not_fit_names_the_parameter(trained, env, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(trained[0], workdir)
    command = [
        "train",
        "--workdir",
        str(workdir),
        "--config",
        "experiments/vit_digits.py",
        *TINY,
        "--config.model.hidden_size=48",
    ]
    # A changed model is first refused as a config change, naming the key and the way past it...
    proc = launch(command, env, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "model.hidden_size" in line and "allow_changes" in line
    # ...and when the change is allowed, the checkpoint that cannot hold it names the parameter.
    proc = launch([*command, "--config.allow_changes=model.hidden_size"], env, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "does not fit the config" in line and "(32,)" in line and "(48,)" in line
    # Nothing is lost: the workdir keeps the config its checkpoints were trained with.
    assert json.loads((workdir / "config.json").read_text())["model"]["hidden_size"] == 32


def test_corrupt_checkpoint_gives_one_line(trained, env, tmp_path):
    workdir = tmp_path / "corrupt"
    shutil.copytree(trained[0], workdir)
    for f in (workdir / "checkpoints" / "latest" / "30" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    # Named, the unreadable step is an error of one line that says what to do.
    proc = launch(["eval", "--workdir", str(workdir), "--step", "30"], env, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: checkpoint") and "30" in line and "delete" in line
    # Not named, evaluation says so and falls back to the newest readable step.
    proc = launch(["eval", "--workdir", str(workdir)], env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "30" in proc.stderr and "falling back" in proc.stderr


def test_missing_catalog_dataset_names_it_and_the_fix(env, tmp_path):
    proc = launch(
        [
            "train",
            "--workdir",
            str(tmp_path / "c"),
            "--config",
            "experiments/vit_cifar10_textbook.py",
            f"--config.data.data_dir={tmp_path}",
        ],
        env,
        check=False,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "cifar10" in line and str(tmp_path) in line and "tfds build" in line


def test_info_reports_published_vit_b16_count(env):
    proc = launch(
        ["info", "--config", "experiments/vit_imagenet.py", "--config.model.variant=B/16"], env
    )
    result = last_json(proc)
    assert result["params"] == 86_567_656
    # 2 x 17.56 GMAC of matmuls plus the elementwise work XLA also counts.
    assert 35.0e9 < result["flops"] < 36.5e9
