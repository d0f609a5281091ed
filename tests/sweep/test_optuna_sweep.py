"""Distributed sweeps on Optuna with the fake trainer: workers started as separate processes with
the same command share one study (SQLite, and PostgreSQL when its server binaries are installed),
run each grid point exactly once, take over the trial of a killed worker, and prune."""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sweep_helpers import (
    FAKE_CONFIG,
    FAKE_LAUNCHER,
    process_ended,
    read_csv,
    run_pids,
    sweep_command,
    wait_for,
)

optuna = pytest.importorskip("optuna")

from attn_jax.sweep import grid, optuna_backend  # noqa: E402

T = "validation/accuracy"
GRID = ["--sweep", "config.x=0.1,0.2,0.3", "--sweep", "config.fake.step_time=0.01,0.02"]


def worker_command(sweep_dir: Path, storage: str, study: str, *args: str) -> list[str]:
    return sweep_command(
        "--backend",
        "optuna",
        "--workdir",
        str(sweep_dir),
        "--storage",
        storage,
        "--study",
        study,
        "--heartbeat",
        "1",
        *args,
    )


def load(storage: str, study: str):
    return optuna.load_study(study_name=study, storage=optuna_backend.driver_url(storage))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on loopback, from Debian's postgresql package."""
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install -e '.[sweep]'")
    initdbs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    initdb = initdbs[-1] if initdbs else shutil.which("initdb")
    if not initdb:
        pytest.skip(
            "no PostgreSQL server binaries (initdb); install: apt-get install -y postgresql"
        )
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    user = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as")
        user = {"user": "postgres", "group": "postgres"}
    base = Path(tempfile.mkdtemp(prefix="attn_jax_pg_"))
    if user:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()
    quiet = {"capture_output": True, "text": True, "cwd": base, **user}
    subprocess.run(
        [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], check=True, **quiet
    )
    options = f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run(
        [
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(base / "log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        **quiet,
    )
    assert started.returncode == 0, started.stderr + (base / "log").read_text()
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], **quiet)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, sweep_dir):
    if request.param == "sqlite":
        return f"sqlite:///{sweep_dir / 'study.db'}"
    return request.getfixturevalue("postgres_url")


def test_two_workers_run_each_grid_point_exactly_once(storage, sweep_dir, spawn):
    study = f"grid_{sweep_dir.parent.name}"
    workers = [spawn(worker_command(sweep_dir, storage, study, *GRID)) for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    for w, (_, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(r["trials_here"] for r in results) == 6

    trials = load(storage, study).trials
    points = [(t.params["x"], t.params["fake.step_time"]) for t in trials]
    assert len(trials) == 6 and len(set(points)) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(len(p) for p in run_pids(sweep_dir).values()) == [1] * 6  # one start each
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [float(r[T]) for r in rows] == [0.3, 0.3, 0.2, 0.2, 0.1, 0.1]


def test_a_killed_workers_trial_is_finished_by_the_other(sweep_dir, spawn):
    storage, study = f"sqlite:///{sweep_dir / 'study.db'}", "killed"
    cmd = worker_command(
        sweep_dir,
        storage,
        study,
        "--sweep",
        "config.x=0.1,0.2,0.3",
        "--config.fake.step_time=0.1",  # 2 s runs: the kill lands mid-run
    )
    log = sweep_dir.parent / "victim.log"
    with log.open("w") as victim_err:
        victim = spawn(cmd, stderr=victim_err)
    survivor = spawn(cmd)
    # Kill the victim once its run is training (its trial RUNNING, heartbeats flowing).
    name = wait_for(lambda: _first_run(log), what="the victim's first trial")
    wait_for(lambda: (sweep_dir / name / "metrics.jsonl").exists(), what="its first steps")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (pid,) = run_pids(sweep_dir)[name]
    wait_for(lambda: process_ended(pid), timeout=20, what="the victim's run to end with it")

    _, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err[-3000:]
    trials = load(storage, study).trials  # the study is readable after the kill
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in complete) == ["0.1", "0.2", "0.3"]
    (lost,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    (retry,) = [t for t in complete if t.system_attrs.get("failed_trial") == lost.number]
    assert retry.user_attrs["run"] == lost.user_attrs["run"] == name
    # The retry resumed in the same workdir from the checkpoint the dying run wrote on SIGTERM.
    assert len(run_pids(sweep_dir)[name]) == 2
    assert (sweep_dir / name / "checkpoint").exists()
    rows = [json.loads(x) for x in (sweep_dir / name / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, 21))

    summary = spawn(
        sweep_command(
            "--summary",
            "--backend",
            "optuna",
            "--storage",
            storage,
            "--study",
            study,
            "--workdir",
            str(sweep_dir / "again"),
        )
    )
    out, err = summary.communicate(timeout=60)
    assert summary.returncode == 0, err
    rows = read_csv(sweep_dir / "again" / "summary.csv")
    assert [(r["rank"], r["status"]) for r in rows] == [(str(i), "ok") for i in range(1, 4)]


def _first_run(log: Path) -> str | None:
    """The run of the worker's first "[sweep] trial N: <run>" line."""
    for line in log.read_text().splitlines():
        if line.startswith("[sweep] trial "):
            return line.split(": ", 1)[1]
    return None


def test_pruned_and_nan_trials_are_listed_with_their_step_and_reason(sweep_dir):
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    report = optuna_backend.run_worker(  # in this process: one worker needs no second import
        FAKE_LAUNCHER,
        str(FAKE_CONFIG),
        ["config.x=0.9,0.1,0.95"],
        sweep_dir,
        # x=0.1 reports 0.01 at step 5, then never ends; x=0.95 ends with a NaN target.
        overrides=["--config.fake.modes=0.1:bad,0.95:nan"],
        storage_url=storage,
        study_name="pruned",
        pruner="median",
        pruner_startup_trials=1,
        heartbeat=1,
    )
    assert report.trials_here == 3 and report.best["x"] == "0.9"
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["rank"], r["x"], r["status"], r["step"]) for r in rows] == [
        ("1", "0.9", "ok", "20"),
        ("", "0.1", "pruned", "5"),
        ("", "0.95", "failed", "20"),
    ]
    assert rows[2][T] == "nan" and "not finite" in rows[2]["error"]
    assert rows[1]["error"].startswith("pruned at step 5 (median pruner")
    (trial,) = [t for t in load(storage, "pruned").trials if t.params["x"] == "0.1"]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["step"] == 5
    (nan,) = [t for t in load(storage, "pruned").trials if t.params["x"] == "0.95"]
    assert nan.state == optuna.trial.TrialState.FAIL and "not finite" in nan.user_attrs["error"]
    assert (sweep_dir / rows[1]["run"] / "checkpoint").read_text() == "5"  # stopped by SIGTERM


def test_random_sampler_draws_from_ranges_up_to_trials(sweep_dir):
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    optuna_backend.run_worker(
        FAKE_LAUNCHER,
        str(FAKE_CONFIG),
        ["config.x=uniform:0.2:0.8"],
        sweep_dir,
        storage_url=storage,
        study_name="random",
        sampler="random",
        trials=2,
        heartbeat=1,
    )
    trials = load(storage, "random").trials
    assert len(trials) == 2 and all(0.2 <= t.params["x"] <= 0.8 for t in trials)
    assert [t.value for t in trials] == [t.params["x"] for t in trials]  # the run saw its x


def _pop_all(url: str, out: Path) -> None:
    """In a forked process: pop WAITING trials until none is left, record their numbers."""
    storage = optuna_backend.open_storage(url)
    study = optuna.load_study(study_name="race", storage=storage)
    study_id = storage.get_study_id_from_name("race")
    got = []
    while (trial := optuna_backend._pop_waiting(study, storage, study_id)) is not None:
        got.append(trial.number)
    out.write_text(json.dumps(got))


@pytest.fixture
def fast_dir(tmp_path):
    """A folder in memory where there is one (no fsync per SQLite commit), else tmp_path."""
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_concurrent_pops_on_sqlite_never_hand_out_a_trial_twice(fast_dir, tmp_path):
    # SQLite ignores SELECT ... FOR UPDATE; the grid's exactly-once rests on BEGIN IMMEDIATE.
    url = f"sqlite:///{fast_dir / 'study.db'}"
    study = optuna.create_study(study_name="race", storage=optuna_backend.open_storage(url))
    for i in range(24):
        study.enqueue_trial({"x": i})
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"popped{i}.json" for i in range(3)]
    procs = [ctx.Process(target=_pop_all, args=(url, out)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    popped = [n for out in outs for n in json.loads(out.read_text())]
    assert sorted(popped) == list(range(24))  # without the fix: e.g. 29 pops of 24 (measured)


def test_a_study_of_another_sweep_is_refused(tmp_path):
    storage = optuna_backend.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    axes = grid.parse_axes(["config.x=0.1,0.2"])
    spec = optuna_backend.sweep_spec(axes, "grid", T, "max")
    optuna_backend.prepare_study(storage, "s", spec, points=grid.sweep_points(axes))
    again = optuna_backend.prepare_study(storage, "s", spec)  # a second worker joins
    assert len(again.trials) == 2  # and queues nothing more
    other = optuna_backend.sweep_spec(grid.parse_axes(["config.x=0.3"]), "grid", T, "max")
    with pytest.raises(grid.SweepError, match="created for another sweep"):
        optuna_backend.prepare_study(storage, "s", other)


def test_without_optuna_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(grid.SweepError, match=r"pip install -e '\.\[sweep\]'"):
        optuna_backend.open_storage("sqlite:///unused.db")
