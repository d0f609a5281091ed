"""A run never reports, resumes or overwrites another run's work: a changed config trains in a new
default workdir or is refused in an explicit one, a second run on a busy workdir is refused, and a
bad target metric, an unwritable workdir or a full disk stop with one line. The launcher runs in
this process (`launch.main`), on a tiny config of the default experiment."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import pytest

import launch
from attn_jax.errors import EXIT_PREEMPTED, EXIT_USER_ERROR
from attn_jax.train import checkpoint as checkpoint_lib
from attn_jax.train.workdir import WorkdirLock

TINY = [
    "--config.total_steps=10",
    "--config.batch_size=64",
    "--config.model.hidden_size=16",
    "--config.model.mlp_dim=32",
    "--config.model.depth=1",
    "--config.log_every=5",
    "--config.eval_every=10",
    "--config.checkpoint_every=10",
    "--config.plots=false",
]


@contextlib.contextmanager
def inside(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run(capsys, *args: str) -> tuple[int, dict | None, str]:
    """(exit code, the last stdout JSON line or None, stderr) of `launch.py *args`."""
    code = launch.main(list(args))
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("{")]
    return code, json.loads(lines[-1]) if lines else None, captured.err


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A directory holding runs/vit_digits: a finished default run of TINY (10 steps)."""
    root = tmp_path_factory.mktemp("home")
    os.environ.setdefault("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))
    with inside(root):
        assert launch.main(["train", *TINY]) == 0
    return root


def test_a_changed_config_trains_in_a_new_default_workdir(home, capsys):
    capsys.readouterr()
    first = json.loads((home / "runs" / "vit_digits" / "config.json").read_text())
    with inside(home):
        code, result, err = run(capsys, "train", *TINY, "--config.optim.lr=1e-2")
    assert code == 0, err
    assert result["workdir"] == str(Path("runs") / "vit_digits-2")
    assert "holds a run of another config; training in runs/vit_digits-2" in err
    assert "resuming" not in err
    second = json.loads((home / "runs" / "vit_digits-2" / "config.json").read_text())
    assert first["optim"]["lr"] == 3e-3 and second["optim"]["lr"] == 1e-2


@pytest.mark.parametrize(
    "override, named",
    [
        ("--config.optim.lr=1e-2", "optim.lr 0.003 -> 0.01"),
        ("--config.batch_size=32", "batch_size 64 -> 32"),
        ("--config.seed=1", "seed 0 -> 1"),
        ("--config.model.depth=2", "model.depth 1 -> 2"),
    ],
)
def test_an_explicit_workdir_refuses_a_config_change(home, capsys, override, named):
    with inside(home):
        code, result, err = run(capsys, "train", "--workdir", "runs/vit_digits", *TINY, override)
    assert code == EXIT_USER_ERROR and result is None
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: runs/vit_digits holds checkpoints trained with another config")
    assert named in line and "--config.allow_changes=" in line


def test_allowed_changes_extend_a_finished_run(home, capsys, tmp_path):
    import shutil

    shutil.copytree(home / "runs" / "vit_digits", tmp_path / "run")
    (tmp_path / "run" / ".lock").unlink(missing_ok=True)
    code, result, err = run(
        capsys,
        "train",
        "--workdir",
        str(tmp_path / "run"),
        "--config.total_steps=15",
        "--config.eval_every=5",
        "--config.allow_changes=total_steps",
    )
    assert code == 0, err
    assert "resuming at step 10" in err and result["step"] == 15


def test_a_busy_workdir_is_refused(home, capsys):
    with inside(home), WorkdirLock(home / "runs" / "vit_digits"):
        code, _, err = run(capsys, "train", "--workdir", "runs/vit_digits", *TINY)
    assert code == EXIT_USER_ERROR
    assert f"in use by another run (pid {os.getpid()} on" in err.strip().splitlines()[-1]


def test_a_target_metric_the_evaluation_never_reports_stops_before_training(capsys, tmp_path):
    code, _, err = run(
        capsys, "train", "--workdir", str(tmp_path / "r"), *TINY, "--config.target_metric=test/bleu"
    )
    assert code == EXIT_USER_ERROR
    line = err.strip().splitlines()[-1]
    assert "config.target_metric 'test/bleu' is not reported" in line and "test/accuracy" in line
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_an_unwritable_workdir_stops_before_training(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "train", "--workdir", str(tmp_path / "file" / "run"), *TINY)
    assert code == EXIT_USER_ERROR
    assert "is not writable" in err.strip().splitlines()[-1]


def test_a_full_disk_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    save = checkpoint_lib.Checkpointer.save

    def failing_save(self, step, *args, **kwargs):
        if step > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", failing_save)
    workdir = tmp_path / "r"
    code, _, err = run(capsys, "train", "--workdir", str(workdir), *TINY, "--config.total_steps=20")
    assert code == EXIT_USER_ERROR
    line = err.strip().splitlines()[-1]
    assert "is full (at step 20); the last good checkpoint is step 10" in line
    monkeypatch.undo()
    code, result, err = run(capsys, "eval", "--workdir", str(workdir))
    assert code == 0 and result["step"] == 10, err


def test_max_runtime_stops_cleanly_with_a_checkpoint(capsys, tmp_path):
    workdir = tmp_path / "r"
    code, result, err = run(
        capsys,
        "train",
        "--workdir",
        str(workdir),
        *TINY,
        "--config.total_steps=100000",
        "--config.max_runtime=0.001",
    )
    assert code == EXIT_PREEMPTED, err
    assert result["status"] == "preempted" and "config.max_runtime of 0.001 s reached" in err
    assert (workdir / "checkpoints" / "latest" / str(result["step"])).is_dir()


def test_eval_of_a_multi_process_run_needs_no_peers(home, capsys, tmp_path):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(home / "runs" / "vit_digits", workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["distributed"].update(num_processes=2, process_id=0)  # as process 0 of two wrote it
    (workdir / "config.json").write_text(json.dumps(config))
    code, result, err = run(capsys, "eval", "--workdir", str(workdir))
    assert code == 0, err
    assert result["step"] == 10 and 0.0 <= result["test/accuracy"] <= 1.0
