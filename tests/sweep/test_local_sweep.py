"""The local sweep on the fake trainer: honest ranking, a summary that is there while runs still
run, Ctrl-C and SIGTERM that stop cleanly, timeouts, and runs that die with a killed sweep."""

import io
import json
import signal
import sys

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

from attn_jax import sweep
from attn_jax.errors import EXIT_PREEMPTED

T = "validation/accuracy"


def test_a_diverged_run_ranks_last_and_a_finite_run_is_best(sweep_dir):
    # x is the final accuracy: the diverging x=0.9 and the NaN x=0.7 would win a naive ranking.
    report = sweep.run_sweep(
        FAKE_LAUNCHER,
        str(FAKE_CONFIG),
        ["config.x=0.2,0.9,0.5,0.7,0.3"],
        sweep_dir,
        overrides=["--config.fake.modes=0.9:diverge,0.7:nan,0.3:fail"],
        parallel=2,
    )
    got = [(r["x"], r["status"]) for r in report.records]
    assert got == [
        ("0.5", "ok"),
        ("0.2", "ok"),
        ("0.9", "diverged"),
        ("0.7", "ok"),
        ("0.3", "failed"),
    ]
    assert report.best["x"] == "0.5" and not report.stopped
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "", "", ""]
    assert rows[2]["error"] == "training diverged at step 11; lower optim.lr"
    assert "not finite" in rows[3]["error"]
    assert rows[4]["error"] == "config.x=0.3 is cursed; pick another x"  # not the traceback


def test_a_target_no_run_reports_keeps_run_order_and_says_so_once(sweep_dir):
    log = io.StringIO()
    report = sweep.run_sweep(
        FAKE_LAUNCHER,
        str(FAKE_CONFIG),
        ["config.x=0.2,0.9"],
        sweep_dir,
        overrides=["--config.target_metric=validation/f1"],
        parallel=2,
        log=log,
    )
    assert [r["x"] for r in report.records] == ["0.2", "0.9"] and report.best is None
    (line,) = [x for x in log.getvalue().splitlines() if "run order" in x]
    assert "validation/f1" in line and "validation/accuracy" in line  # and what runs do report


def test_run_timeout_stops_hanging_runs_and_records_timeout(sweep_dir):
    report = sweep.run_sweep(
        FAKE_LAUNCHER,
        str(FAKE_CONFIG),
        ["config.x=0.2,0.4,0.6"],
        sweep_dir,
        overrides=["--config.fake.modes=0.4:hang,0.6:stubborn"],
        parallel=3,
        run_timeout=4.0,
        stop_grace=0.5,
    )
    by_x = {r["x"]: r for r in report.records}
    assert [by_x[x]["status"] for x in ("0.2", "0.4", "0.6")] == ["ok", "timeout", "timeout"]
    assert by_x["0.4"]["step"] == 5 and "--run-timeout 4 s" in by_x["0.4"]["error"]
    runs = {r["x"]: sweep_dir / r["run"] for r in report.records}
    assert (runs["0.4"] / "checkpoint").exists()  # SIGTERM first: the run could checkpoint
    assert not (runs["0.6"] / "checkpoint").exists()  # ignored SIGTERM: SIGKILLed
    assert all(process_ended(pid) for pids in run_pids(sweep_dir).values() for pid in pids)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_sweep_launches_nothing_more_and_keeps_the_summary(sig, sweep_dir, spawn):
    # Runs 0 and 1 finish at once, 2 and 3 hang until stopped, 4 and 5 wait for a free slot.
    proc = spawn(
        sweep_command(
            "--workdir",
            str(sweep_dir),
            "--parallel",
            "2",
            "--stop-grace",
            "20",
            "--sweep",
            "config.x=0.1,0.2,0.3,0.4,0.5,0.6",
            "--config.fake.modes=0.3:hang,0.4:hang",
        )
    )
    csv_path = sweep_dir / "summary.csv"
    wait_for(csv_path.exists, what="the summary after the first finished run")
    first = read_csv(csv_path)
    assert 1 <= len(first) <= 2 and {r["status"] for r in first} == {"ok"}
    assert proc.poll() is None  # the summary came while the sweep was still running
    hanging = ["002_x=0.3", "003_x=0.4"]
    wait_for(lambda: all(_evaluated(sweep_dir / name) for name in hanging), what="runs 2 and 3")

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stopped"] and result["not_started"] == ["004_x=0.5", "005_x=0.6"]
    assert sorted(run_pids(sweep_dir)) == ["000_x=0.1", "001_x=0.2", *hanging]  # nothing new
    rows = read_csv(csv_path)
    assert [(r["run"], r["status"]) for r in rows] == [
        ("001_x=0.2", "ok"),
        ("000_x=0.1", "ok"),
        ("002_x=0.3", "stopped"),
        ("003_x=0.4", "stopped"),
    ]
    for name in hanging:  # each got SIGTERM, checkpointed and exited
        assert (sweep_dir / name / "checkpoint").read_text() == "5"
        assert all(process_ended(pid) for pid in run_pids(sweep_dir)[name])


def _evaluated(workdir) -> bool:
    """The run has logged an evaluation (a hanging fake run then waits at that step)."""
    metrics = workdir / "metrics.jsonl"
    return metrics.exists() and '"validation"' in metrics.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_runs_of_a_killed_sweep_are_stopped_not_orphaned(sweep_dir, spawn):
    proc = spawn(
        sweep_command(
            "--workdir",
            str(sweep_dir),
            "--parallel",
            "2",
            "--sweep",
            "config.x=0.3,0.4",
            "--config.fake.modes=0.3:hang,0.4:hang",
        )
    )
    pids = wait_for(lambda: len(run_pids(sweep_dir)) == 2 and run_pids(sweep_dir), what="2 runs")
    wait_for(lambda: all((sweep_dir / n / "metrics.jsonl").exists() for n in pids), what="steps")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for name, (pid,) in pids.items():
        wait_for(lambda pid=pid: process_ended(pid), timeout=20, what=f"run {name} to end")
        assert (sweep_dir / name / "checkpoint").exists()  # it got SIGTERM, not SIGKILL


def test_usage_errors_are_one_line_and_exit_2(sweep_dir, spawn):
    for args, expected in [
        (["--sweep", "config.optim.lrr=1,2"], "unknown config key config.optim.lrr"),
        (["--summary", "--sweep", "config.x=1"], "--summary reads an Optuna study"),
        (["--sweep", "config.x=uniform:0:1"], "list values for a grid"),
    ]:
        proc = spawn(sweep_command("--workdir", str(sweep_dir), *args))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not run_pids(sweep_dir)
