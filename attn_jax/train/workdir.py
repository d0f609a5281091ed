"""A workdir belongs to one run: a lock against a second run, a check that a resume keeps the
config its checkpoints were trained with, and a check that the disk can take the checkpoints.

What a resume may change without being told: only keys that cannot alter the trained parameters
or the metrics they are selected by (logging and checkpoint periods, evaluation batch size,
plots, the process layout, the wall-clock limit). Anything else (optimizer, schedule, data, batch
size, seed, model, target metric, steps) is refused with one line naming the keys and the two ways
out: a new --workdir, or `--config.allow_changes=k1,k2` for changes the user knows are safe (e.g.
total_steps to extend a run).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from attn_jax import config as config_lib
from attn_jax.errors import UserError


class WorkdirError(UserError, RuntimeError):
    """A workdir that this run cannot use; the message says why and what to do."""


# Dotted key prefixes whose values never change what is trained or how it is ranked.
BENIGN_KEYS = (
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_batch_size",
    "plots",
    "distributed",
    "sharding",  # the same model on another layout (numerically equal up to summation order)
    "mesh",
    "max_runtime",
    "on_nonfinite",
    "allow_changes",
    "experiment",
    "data.data_dir",
    "data.worker_count",
    "data.read_threads",
    "data.prefetch",
    # Only read by a fresh start, which a resume is not.
    "init_from",
    "init_from_prefix",
    "init_into",
    "init_from_fresh",
)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping | ml_collections.ConfigDict):
        tree = dict(tree.items())
        if tree:
            out: dict[str, Any] = {}
            for k, v in tree.items():
                out.update(_flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: {}}
    if isinstance(tree, list | tuple):
        return {prefix[:-1]: [_plain(v) for v in tree]}
    return {prefix[:-1]: _plain(tree)}


def _plain(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def allowed_changes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The keys of `config.allow_changes` ("optim.lr,total_steps" or a sequence)."""
    raw = config.get("allow_changes", "") or ""
    items = raw.split(",") if isinstance(raw, str) else [str(x) for x in raw]
    return tuple(k.strip().removeprefix("config.") for k in items if k.strip())


def config_changes(
    stored: ml_collections.ConfigDict | Mapping, new: ml_collections.ConfigDict
) -> list[tuple[str, Any, Any]]:
    """[(key, stored value, new value)] of the changes that may alter results, sorted by key.

    Keys in BENIGN_KEYS and in the new config's `allow_changes` are left out. A key that one side
    lacks is a change unless the other side holds the trainer default for it (an older
    config.json written before the key existed).
    """
    a, b = _flat(config_lib.to_plain(stored)), _flat(config_lib.to_plain(new))
    skip = BENIGN_KEYS + allowed_changes(new)
    defaults = _flat(config_lib.TRAINER_DEFAULTS)
    missing = object()
    changes = []
    for key in sorted(set(a) | set(b)):
        if _covered(key, skip):
            continue
        old, cur = a.get(key, missing), b.get(key, missing)
        if old is missing:
            old = defaults.get(key, missing)
        if cur is missing:
            cur = defaults.get(key, missing)
        if old != cur:
            changes.append((key, None if old is missing else old, None if cur is missing else cur))
    return changes


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    shown = ", ".join(f"{k} {json.dumps(o)} -> {json.dumps(n)}" for k, o, n in changes[:limit])
    return shown + (f" and {len(changes) - limit} more" if len(changes) > limit else "")


def check_resume_config(
    stored: ml_collections.ConfigDict, new: ml_collections.ConfigDict, workdir: Path
) -> None:
    """Raises WorkdirError naming the changes a resume of `workdir` would silently apply."""
    changes = config_changes(stored, new)
    if changes:
        keys = ",".join(k for k, _, _ in changes)
        raise WorkdirError(
            f"{workdir} holds checkpoints trained with another config ({describe_changes(changes)})"
            f"; train in a new --workdir, or pass --config.allow_changes={keys} if resuming with "
            "these changes is what you want"
        )


def read_stored_config(workdir: Path) -> ml_collections.ConfigDict | None:
    path = workdir / "config.json"
    if not path.is_file():
        return None
    return config_lib.load_json(path)


def has_checkpoints(workdir: Path) -> bool:
    latest = workdir / "checkpoints" / "latest"
    return latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())


def default_workdir(config: ml_collections.ConfigDict, root: Path = Path("runs")) -> Path:
    """runs/<experiment>, or runs/<experiment>-2, -3, ... when a run with another config holds it.

    The first candidate that is empty or holds a run of this very config is chosen, so repeating a
    command resumes its own run and a changed command never resumes (or reports) another's.
    """
    name = config.get("experiment", "experiment") or "experiment"
    for i in range(1, 1000):
        candidate = root / (name if i == 1 else f"{name}-{i}")
        stored = read_stored_config(candidate) if candidate.exists() else None
        if stored is None or not config_changes(stored, config):
            return candidate
    raise WorkdirError(f"{root} holds 999 runs of {name}; pass --workdir")


# -- the lock ------------------------------------------------------------------------------------
class WorkdirLock:
    """An exclusive `flock` on <workdir>/.lock, held for the run.

    The kernel releases a flock when its process dies, however it dies, so a lock left by a killed
    run is never stale: the next run simply gets it.
    """

    def __init__(self, workdir: Path):
        self.path = Path(workdir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise WorkdirError(
                    f"{self.path.parent} is in use by another run ({holder}); wait for it to "
                    "finish or stop it, or train in another --workdir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# -- the disk ------------------------------------------------------------------------------------
def check_writable(workdir: Path, *, needed_bytes: int = 0) -> None:
    """Creates `workdir` and proves that a file can be written there and that `needed_bytes` fit.

    Raises:
      WorkdirError: a path that cannot be created or written, or too little free space.
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        with probe.open("wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise WorkdirError(
            f"workdir {workdir} is not writable ({e.strerror or type(e).__name__}); pick another "
            "--workdir or fix its permissions"
        ) from None
    free = shutil.disk_usage(workdir).free
    if needed_bytes and free < needed_bytes:
        raise WorkdirError(
            f"workdir {workdir} has {free / 2**20:.1f} MiB free but its checkpoints need about "
            f"{needed_bytes / 2**20:.1f} MiB; free some space or pick another --workdir"
        )


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is an out-of-space or quota error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(e)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False
