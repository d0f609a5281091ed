"""Distributed sweeps on an Optuna study: start the same `launch.py sweep --backend optuna` command
on any number of machines and each worker pulls trials from one study in an RDB storage (SQLite
for one machine, PostgreSQL for many), runs each as a `launch.py train` subprocess in
DIR/<trial number>_<params>, reports the target metric of every evaluation as an intermediate
value (so a pruner can stop a hopeless run: SIGTERM, the run checkpoints, the trial ends PRUNED),
and tells the study the final target metric.

Each grid point runs exactly once, however many workers race. Optuna's GridSampler cannot promise
that: trial k < grid size gets point k, but any later trial (a second worker asking after the
last point was handed out, or a retry) picks among points that are neither finished nor running
and, when none is left, re-runs a *running* one; its docs say the total may exceed the grid.
Instead the worker that creates the study (creation is atomic: the study name is unique in the
storage) enqueues every point as a WAITING trial and only then marks the study ready; workers
only pop WAITING trials. Popping sets WAITING -> RUNNING after `SELECT ... FOR UPDATE`, which is
atomic on PostgreSQL, but SQLite ignores FOR UPDATE and two processes can pop one trial (measured:
4 workers popping 60 trials took 67). `open_storage` therefore makes every SQLite transaction
`BEGIN IMMEDIATE`, which takes the database's write lock before the read.

Random and TPE samplers draw with `study.ask()` until the study holds `--trials` points (workers
that ask at the same moment can each add one more). A run whose final target is NaN, inf or
missing ends FAIL with its reason in the user attrs: a sampler learns nothing from it, and the
summary lists it below every finished run.

A worker that dies (SIGKILL, a lost machine) stops sending heartbeats; after the grace period
(3 heartbeats) the next worker looking for work marks its trial FAIL and re-queues a copy with the
same parameters and workdir (`RetryHeartbeatStaleTrialCallback`), which then resumes from the
run's last checkpoint; the dead worker's run got SIGTERM from the kernel when its worker died.
A worker with nothing left to take waits while other workers' trials run, so that it can take
over theirs. A worker stopped by SIGINT/SIGTERM stops its run (checkpoint), fails its trial with
status `stopped` and re-queues it, so rerunning any worker resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from attn_jax import config as config_lib
from attn_jax.sweep import children, grid, local, summary
from attn_jax.sweep.grid import Range, SweepError

SPEC_ATTR = "attn_jax_sweep"  # study user attr: the sweep the study was created for
READY_ATTR = "attn_jax_ready"  # set after the grid is enqueued: workers wait for it
INSTALL_HINT = "pip install -e '.[sweep]'"
SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("none", "median")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError(
            f"--backend optuna needs optuna and a PostgreSQL driver; install them with "
            f"{INSTALL_HINT}"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Heartbeats outside `Study.optimize` and the retry callback are marked experimental; the
    worker uses them on purpose, so their warnings would only be noise on every trial."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield


# -- storage ------------------------------------------------------------------------------------
def default_storage(out_dir: Path) -> str:
    """sqlite:///<out_dir>/study.db, absolute, so that workers started elsewhere agree."""
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def driver_url(url: str) -> str:
    """`postgresql://` with the driver the `sweep` extra installs (psycopg 3), whatever the
    SQLAlchemy version's default driver is."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def _masked(url: str) -> str:
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return url


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _serialize_sqlite(engine: Any) -> None:
    """Every SQLite transaction takes the write lock first (`BEGIN IMMEDIATE`).

    Optuna's storage reads a row `FOR UPDATE` and then writes it, which SQLite does not lock;
    with this, a read-then-write is atomic across processes, as on PostgreSQL.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _driver_does_not_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" below starts each one

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks go; new ones get them


def open_storage(url: str, *, heartbeat: int | None = None, max_retry: int = 3):
    """An Optuna RDBStorage on `url`, safe for workers that open it at the same time.

    Args:
      url: `sqlite:///path/study.db` (one machine) or `postgresql://user[:pw]@host[:port]/db`.
      heartbeat: seconds between a running trial's heartbeats; a trial silent for 3 of them is
        failed and re-queued (up to `max_retry` times) by the next worker. None: no heartbeat.
      max_retry: how often one point is re-queued after its worker was lost.

    Raises:
      SweepError: optuna or the database driver is missing, or the storage cannot be opened.
    """
    optuna = _optuna()
    import sqlalchemy

    url = driver_url(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise SweepError(
            f"cannot read --storage {url!r}; write sqlite:///DIR/study.db or "
            "postgresql://user@host/db"
        ) from None
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs.update(
            heartbeat_interval=int(heartbeat),
            grace_period=3 * int(heartbeat),
        )
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        if not parsed.database or parsed.database == ":memory:":
            raise SweepError(
                "--storage sqlite needs a file that every worker opens, e.g. sqlite:///DIR/study.db"
            )
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        guard = _file_lock(Path(parsed.database + ".lock"))
    else:
        guard = contextlib.nullcontext()
    try:
        with _quiet_optuna(), guard:  # the first workers would race to create the tables
            if heartbeat is not None:
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                kwargs["heartbeat_stale_trial_callback"] = retry
            storage = _create_storage(optuna, url, parsed, kwargs)
    except ImportError:
        raise SweepError(
            f"--storage {_masked(url)} needs its database driver; install it with {INSTALL_HINT}"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        first = str(e.__cause__ or e).strip().splitlines()[0] if str(e.__cause__ or e) else ""
        raise SweepError(
            f"cannot open --storage {_masked(url)} ({type(e.__cause__ or e).__name__}: {first}); "
            "check the URL and that the database server is up"
        ) from None
    if is_sqlite:
        _serialize_sqlite(storage.engine)
    return storage


def _create_storage(optuna, url: str, parsed: Any, kwargs: dict[str, Any]):
    import sqlalchemy

    if parsed.get_backend_name() != "postgresql":
        return optuna.storages.RDBStorage(url, **kwargs)
    # Two workers creating the tables at once collide on PostgreSQL's catalog; an advisory lock
    # (held by this connection only) makes them take turns.
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT pg_advisory_lock(774411)")
            try:
                return optuna.storages.RDBStorage(url, **kwargs)
            finally:
                connection.exec_driver_sql("SELECT pg_advisory_unlock(774411)")
    finally:
        engine.dispose()


# -- the study ------------------------------------------------------------------------------------
def sweep_spec(axes: Sequence[tuple[str, list[str] | Range]], sampler: str, target: str, mode: str):
    """What every worker of one study must agree on, as stored in the study (JSON)."""
    return {
        "axes": [[k, v.spec() if isinstance(v, Range) else list(v)] for k, v in axes],
        "sampler": sampler,
        "target_metric": target,
        "target_mode": mode,
    }


def _sampler(optuna, name: str):
    if name == "tpe":
        # constant_liar: concurrent workers see each other's running trials and spread out.
        return optuna.samplers.TPESampler(constant_liar=True)
    return optuna.samplers.RandomSampler()  # also the grid's: it never samples (trials are fixed)


def _pruner(optuna, name: str, startup_trials: int, warmup_steps: int):
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=startup_trials, n_warmup_steps=warmup_steps
        )
    return optuna.pruners.NopPruner()


def prepare_study(
    storage: Any,
    name: str,
    spec: dict,
    *,
    points: Sequence[dict[str, str]] = (),
    pruner: Any = None,
    ready_timeout: float = 120.0,
    log: TextIO | None = None,
):
    """Creates the study (and enqueues a grid's points) or joins it, racing workers safely.

    Raises:
      SweepError: the study was made for another sweep, or its creator never finished.
    """
    optuna = _optuna()
    direction = (
        optuna.study.StudyDirection.MAXIMIZE
        if spec["target_mode"] == "max"
        else optuna.study.StudyDirection.MINIMIZE
    )
    try:
        storage.create_new_study([direction], name)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=_sampler(optuna, spec["sampler"]), pruner=pruner
    )
    if created:
        study.set_user_attr(SPEC_ATTR, spec)
        for index, point in enumerate(points):
            study.enqueue_trial(dict(point), user_attrs={"grid_index": index})
        study.set_user_attr(READY_ATTR, True)
        if log is not None:
            print(f"[sweep] created study {name} with {len(points)} queued trial(s)", file=log)
        return study
    deadline = time.monotonic() + ready_timeout
    while not study.user_attrs.get(READY_ATTR):
        if time.monotonic() > deadline:
            raise SweepError(
                f"study {name} exists but the worker that created it never finished queueing its "
                f"trials; delete it (optuna delete-study --study-name {name} --storage URL) or "
                "use a new --study"
            )
        time.sleep(0.5)
    stored = study.user_attrs.get(SPEC_ATTR)
    if json.loads(json.dumps(spec)) != stored:
        raise SweepError(
            f"study {name} was created for another sweep ({_describe_spec(stored)}); start "
            "workers with the same --sweep axes, --sampler and target_metric, or use a new --study"
        )
    return study


def _describe_spec(spec: dict | None) -> str:
    if not spec:
        return "not by launch.py sweep"
    axes = " ".join(
        f"config.{k}={v if isinstance(v, str) else ','.join(v)}" for k, v in spec["axes"]
    )
    return f"{axes}, sampler {spec['sampler']}, target {spec['target_metric']}"


def _study_id(storage: Any, name: str) -> int:
    return storage.get_study_id_from_name(name)


def _pop_waiting(study: Any, storage: Any, study_id: int):
    """A WAITING trial, now RUNNING and ours, or None; never one that another worker popped."""
    optuna = _optuna()
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    for frozen in sorted(waiting, key=lambda t: t.number):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
                return optuna.trial.Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _points_taken(study: Any) -> int:
    """Points the study holds or ran (a retry is the same point as the trial it repeats)."""
    optuna = _optuna()
    runs = set()
    for t in study.get_trials(deepcopy=False):
        if t.state != optuna.trial.TrialState.WAITING:
            runs.add(t.user_attrs.get("run", t.number))
    return len(runs)


# -- one trial ------------------------------------------------------------------------------------
def _suggest(trial: Any, axes: Sequence[tuple[str, list[str] | Range]]) -> dict[str, object]:
    params: dict[str, object] = {}
    for key, axis in axes:
        if isinstance(axis, Range) and axis.kind == "int":
            params[key] = trial.suggest_int(key, int(axis.low), int(axis.high))
        elif isinstance(axis, Range):
            params[key] = trial.suggest_float(
                key, axis.low, axis.high, log=axis.kind == "loguniform"
            )
        else:
            params[key] = trial.suggest_categorical(key, axis)
    return params


@dataclasses.dataclass
class _Worker:
    """What one worker needs to run trials; one per `run_worker` call."""

    optuna: Any
    study: Any
    storage: Any
    study_id: int
    axes: list
    launcher: Path
    config_path: str
    overrides: Sequence[str]
    out_dir: Path
    target: str
    pruner: str
    run_timeout: float | None
    stop_grace: float
    heartbeat: int
    max_retry: int
    poll_interval: float
    log: TextIO

    def say(self, text: str) -> None:
        print(f"[sweep] {text}", file=self.log, flush=True)

    def run_trial(self, trial: Any, stop: children.StopSignals) -> str:
        """Runs one popped trial to its end and tells the study; returns its status."""
        optuna = self.optuna
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.storage.record_heartbeat(trial_id)
        params = _suggest(trial, self.axes)
        name = trial.user_attrs.get("run") or grid.run_name(trial.number, params)
        trial.set_user_attr("run", name)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        workdir = self.out_dir / name
        cmd = local.train_command(self.launcher, self.config_path, workdir, self.overrides, params)
        self.say(f"trial {trial.number}: {name}")
        child = children.Child(cmd, workdir)
        tail = children.MetricsTail(workdir / "metrics.jsonl")
        split, _, metric = self.target.partition("/")
        reported: set[int] = set()
        pruned: tuple[int, float] | None = None  # (step, value) the pruner stopped it at
        last_beat = time.monotonic()
        db_trouble = False
        while child.poll() is None:
            try:
                if time.monotonic() - last_beat >= self.heartbeat:
                    self.storage.record_heartbeat(trial_id)
                    last_beat = time.monotonic()
                for record in tail.read():
                    step, value = record.get("step"), children.as_number(record.get(metric))
                    if record.get("split") != split or not isinstance(step, int):
                        continue
                    if value is None or not math.isfinite(value) or step in reported:
                        continue
                    trial.report(value, step)
                    reported.add(step)
                    if self.pruner != "none" and pruned is None and trial.should_prune():
                        pruned = (step, value)
                        child.terminate("pruned")
            except optuna.exceptions.UpdateFinishedTrialError:
                # Another worker failed this trial (our heartbeats did not reach the storage in
                # time) and re-queued it: its retry owns the workdir now.
                child.terminate("lost")
            except optuna.exceptions.StorageInternalError as e:
                if not db_trouble:
                    self.say(f"trial {trial.number}: storage unavailable, retrying ({e})")
                db_trouble = True
            if stop:
                child.terminate("stopped")
                if stop.count > 1:
                    child.kill()
            elif self.run_timeout is not None and child.elapsed() > self.run_timeout:
                child.terminate("timeout")
            child.enforce(self.stop_grace)
            time.sleep(self.poll_interval)
        return self._finish(trial, name, params, child, pruned)

    def _finish(self, trial: Any, name, params, child: children.Child, pruned) -> str:
        optuna = self.optuna
        TrialState = optuna.trial.TrialState
        record = local.run_record(name, trial.number, params, child, self.target, self.run_timeout)
        status = record["status"]
        if status == "pruned":
            step, value = pruned
            record["step"] = step
            record["error"] = (
                f"pruned at step {step} ({self.pruner} pruner; {self.target} {value:.4g})"
            )
        value = children.as_number(record.get(self.target))
        complete = status == "ok" and value is not None and math.isfinite(value)
        if status == "ok" and not complete:
            status = "failed"  # a sampler must not learn from a NaN; the reason is the error
        metrics = {k: v for k, v in record.items() if "/" in k}
        try:
            for key, attr in (
                ("status", status),
                ("error", record["error"]),
                ("step", record["step"]),
                ("metrics", metrics),
                ("exit_code", child.returncode),
            ):
                trial.set_user_attr(key, attr)
            if complete:
                frozen = self.study.tell(trial, value)
            elif status == "pruned":
                frozen = self.study.tell(trial, state=TrialState.PRUNED)
            else:
                frozen = self.study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.say(f"trial {trial.number}: taken over by another worker (heartbeat lapsed)")
            return "lost"
        if status == "stopped":  # checkpointed: queue it again so that a worker resumes it
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(
                self.study, frozen
            )
        shown = value if complete else record["error"]
        self.say(f"trial {trial.number}: {status} {shown}")
        return status


@dataclasses.dataclass
class WorkerReport(local.SweepReport):
    """A SweepReport of the whole study, plus what this worker did."""

    study: str = ""
    storage: str = ""
    trials_here: int = 0


def run_worker(
    launcher: Path,
    config_path: str,
    sweep_specs: Sequence[str],
    out_dir: Path,
    *,
    overrides: Sequence[str] = (),
    storage_url: str | None = None,
    study_name: str | None = None,
    sampler: str = "grid",
    trials: int | None = None,
    pruner: str = "none",
    pruner_startup_trials: int = 5,
    pruner_warmup_steps: int = 0,
    run_timeout: float | None = None,
    stop_grace: float = 60.0,
    heartbeat: int = 30,
    max_retry: int = 3,
    poll_interval: float = 0.1,
    log: TextIO | None = None,
) -> WorkerReport:
    """One worker of a distributed sweep: takes trials of the study until none is left.

    Args:
      launcher: the script run as `python <launcher> train ...` for each trial (launch.py).
      config_path: the experiment file every trial trains.
      sweep_specs: the `--sweep` axes: listed values (grid points, categorical choices) or, for
        random/tpe, ranges such as `config.optim.lr=loguniform:1e-4:1e-2`.
      out_dir: the sweep folder; trial n trains in out_dir/<n>_<params>; the summary goes here.
      overrides: `--config.k=v` for every trial.
      storage_url: the study's RDB URL (default: sqlite:///<out_dir>/study.db).
      study_name: the study (default: sweep_<experiment file name>).
      sampler: "grid" (every point once), "random" or "tpe" (`trials` in all).
      trials: how many points random/tpe draw, across all workers.
      pruner: "none" or "median" (stops a trial whose curve is below the median at a step).
      pruner_startup_trials: trials that finish before the median pruner prunes anything.
      pruner_warmup_steps: steps of every trial that are never pruned.
      run_timeout: seconds after which a trial's run is stopped; the trial FAILs as `timeout`.
      stop_grace: seconds a run gets to checkpoint after SIGTERM before SIGKILL.
      heartbeat: seconds between heartbeats; a worker silent for 3 loses its trial to a retry.
      max_retry: how often a point is re-queued after its worker was lost or stopped.
      poll_interval: seconds between looks at the run and its metrics.jsonl.
      log: where progress lines go (stderr by default).

    Returns:
      A WorkerReport of the whole study; `stopped` when SIGINT/SIGTERM ended this worker.

    Raises:
      SweepError, ConfigError: bad options, axes or study, before any trial.
    """
    log = log or sys.stderr
    if sampler not in SAMPLERS:
        raise SweepError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if pruner not in PRUNERS:
        raise SweepError(f"--pruner must be one of {', '.join(PRUNERS)}; got {pruner!r}")
    if sampler == "grid" and trials is not None:
        raise SweepError(
            "--trials is for --sampler random|tpe; a grid runs each of its points once"
        )
    if sampler != "grid" and not trials:
        raise SweepError(
            f"--sampler {sampler} needs --trials N (how many runs, all workers together)"
        )
    if heartbeat < 1:
        raise SweepError(f"--heartbeat must be at least 1 second; got {heartbeat}")
    base = config_lib.load_config(config_path)
    config_lib.apply_overrides(base, overrides)
    axes = grid.parse_axes(sweep_specs, allow_ranges=sampler != "grid")
    grid.check_keys(base, axes)
    target, mode = base.target_metric, base.get("target_mode", "max")
    if "/" not in target:
        raise SweepError(
            f"config.target_metric {target!r} names no evaluation split; write e.g. "
            "validation/accuracy"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # "rnn_dates.py:bahdanau" -> sweep_rnn_dates_bahdanau: each variant of a file its own study.
    file_part, _, variant = str(config_path).partition(".py:")
    study_name = study_name or f"sweep_{Path(file_part).stem}" + (f"_{variant}" if variant else "")
    storage_url = storage_url or default_storage(out_dir)
    spec = sweep_spec(axes, sampler, target, mode)
    optuna = _optuna()
    storage = open_storage(storage_url, heartbeat=heartbeat, max_retry=max_retry)
    points = grid.sweep_points(axes) if sampler == "grid" else []
    # Signals only set a flag from here on: a creator stopped halfway through queueing the grid
    # would leave a study that no worker can use.
    with _quiet_optuna(), children.StopSignals() as stop:
        study = prepare_study(
            storage,
            study_name,
            spec,
            points=points,
            pruner=_pruner(optuna, pruner, pruner_startup_trials, pruner_warmup_steps),
            log=log,
        )
        worker = _Worker(
            optuna=optuna,
            study=study,
            storage=storage,
            study_id=_study_id(storage, study_name),
            axes=axes,
            launcher=Path(launcher),
            config_path=config_path,
            overrides=overrides,
            out_dir=out_dir,
            target=target,
            pruner=pruner,
            run_timeout=run_timeout,
            stop_grace=stop_grace,
            heartbeat=heartbeat,
            max_retry=max_retry,
            poll_interval=poll_interval,
            log=log,
        )
        ran = 0
        waiting_said = False
        while not stop:
            optuna.storages.fail_stale_trials(study)  # re-queues the trials of lost workers
            trial = _pop_waiting(study, storage, worker.study_id)
            if trial is None and sampler != "grid" and _points_taken(study) < trials:
                trial = study.ask()
            if trial is not None:
                waiting_said = False
                worker.run_trial(trial, stop)
                ran += 1
                write_study_summary(study, out_dir)
                continue
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if not running:
                break
            if not waiting_said:
                worker.say(
                    f"nothing left to take; waiting for {len(running)} trial(s) of other "
                    "workers, to take over any whose worker is lost"
                )
                waiting_said = True
            _sleep_unless(stop, float(heartbeat))
        report = write_study_summary(study, out_dir, log=log)
    report.stopped = bool(stop)
    report.storage = _masked(driver_url(storage_url))
    report.trials_here = ran
    return report


def _sleep_unless(stop: children.StopSignals, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop and time.monotonic() < deadline:
        time.sleep(min(0.1, seconds))


# -- the summary ----------------------------------------------------------------------------------
_STATE_STATUS = {"COMPLETE": "ok", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "waiting"}


def study_records(study: Any, out_dir: Path) -> tuple[list[dict], dict]:
    """One summary record per point of the study (its latest trial), and the sweep's spec."""
    spec = study.user_attrs.get(SPEC_ATTR)
    if not spec:
        raise SweepError(
            f"study {study.study_name} was not made by `launch.py sweep --backend optuna`; give "
            "the --study that the workers used"
        )
    target = spec["target_metric"]
    latest: dict[object, Any] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("run") or ("grid", t.user_attrs.get("grid_index", t.number))
        if key not in latest or t.number > latest[key].number:
            latest[key] = t
    records = []
    for t in latest.values():
        params = dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))
        state = t.state.name
        status = _STATE_STATUS.get(state) or t.user_attrs.get("status", "failed")
        error = t.user_attrs.get("error", "")
        if state == "FAIL" and "status" not in t.user_attrs:
            error = "its worker stopped sending heartbeats (killed or lost); not retried again"
        retried = t.system_attrs.get("failed_trial")
        if state in ("WAITING", "RUNNING") and retried is not None:
            error = f"retry of trial {retried}"
        metrics = dict(t.user_attrs.get("metrics", {}))
        if state == "COMPLETE" and target not in metrics:
            metrics[target] = t.value
        index = t.user_attrs.get("grid_index", retried if retried is not None else t.number)
        name = t.user_attrs.get("run") or grid.run_name(t.number, params)
        step = t.user_attrs.get("step")
        if step is None and t.intermediate_values:
            step = max(t.intermediate_values)
        records.append(
            {
                "run": name,
                "index": index,
                "status": status,
                **params,
                **metrics,
                "step": step,
                "error": error,
                "workdir": str(Path(out_dir) / name),
                "trial": t.number,
            }
        )
    return records, spec


def write_study_summary(study: Any, out_dir: Path, *, log: TextIO | None = None) -> WorkerReport:
    """Ranks the study's points and writes out_dir/summary.{csv,md}; workdir is relative to
    out_dir (each machine's sweep folder)."""
    records, spec = study_records(study, out_dir)
    target = spec["target_metric"]
    ranked = summary.rank(records, target, spec["target_mode"])
    summary.write_summary(ranked, Path(out_dir), [k for k, _ in spec["axes"]], target)
    message = summary.missing_target_message(ranked, target)
    if message and log is not None:
        print(f"[sweep] {message}", file=log, flush=True)
    return WorkerReport(
        records=ranked,
        best=summary.best(ranked, target),
        stopped=False,
        not_started=[],
        out_dir=Path(out_dir),
        study=study.study_name,
    )


def summarize(storage_url: str | None, study_name: str, out_dir: Path) -> WorkerReport:
    """`launch.py sweep --summary`: the ranked summary of a study, written into `out_dir`."""
    optuna = _optuna()
    url = storage_url or default_storage(out_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise SweepError(f"no study database at {url[len('sqlite:///') :]}; give --storage URL")
    storage = open_storage(url)
    with _quiet_optuna():
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            raise SweepError(
                f"--storage {_masked(driver_url(url))} holds no study {study_name!r}; give the "
                "--study that the workers used"
            ) from None
        report = write_study_summary(study, out_dir)
    report.storage = _masked(driver_url(url))
    return report
