"""Experiment configs: load a `get_config()` file, apply `--config.a.b=v` overrides, JSON I/O.

Every error a user can cause here (a missing file, an unknown key, a value of the wrong type) is a
`ConfigError` whose message is one line naming the problem and the fix, raised before any work.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from attn_jax.errors import UserError

REQUIRED_KEYS = (
    "seed",
    "batch_size",
    "total_steps",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "target_metric",
    "model",
    "data",
    "optim",
)


# Trainer keys that every config has, with these defaults where an experiment file (or the
# config.json of an older run) does not set them, so that any of them can be overridden from the
# command line.
TRAINER_DEFAULTS: dict[str, Any] = {
    "on_nonfinite": "stop",  # a non-finite loss or gradient norm: "stop" the run, or "skip" it
    "max_runtime": 0.0,  # seconds of training before a clean stop (checkpoint, exit 75); 0: none
    "allow_changes": "",  # "k1,k2": config keys a resume may change (train/workdir.py)
    # Parameters and optimizer state: "replicated", "fsdp" (split over the data axis) or
    # "fsdp_tp" (also tensor parallel over mesh.model devices); see train/sharding.py.
    "sharding": "replicated",
    "mesh": {"model": 1},
}
NONFINITE_POLICIES = ("stop", "skip")


class ConfigError(UserError, ValueError):
    """A config problem the user can fix; its message is one line."""


def fill_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the TRAINER_DEFAULTS keys that `config` lacks (in place) and returns it."""
    with config.unlocked():
        for key, value in TRAINER_DEFAULTS.items():
            if key not in config:
                config[key] = copy.deepcopy(value)
        if "distributed" in config and "auto" not in config.distributed:
            # True: the process layout comes from the cluster (SLURM, TPU pod, Kubernetes).
            config.distributed.auto = False
    return config


def reset_distributed(config: ml_collections.ConfigDict) -> None:
    """Sets `config.distributed` to one process (what a stored config.json must not decide)."""
    if "distributed" in config:
        config.distributed.num_processes = 1
        config.distributed.process_id = 0
        config.distributed.auto = False


def validate(config: ml_collections.ConfigDict) -> None:
    """Trainer values that cannot work, as one-line errors before any work."""
    if int(config.keep_checkpoints) < 1:
        raise ConfigError(
            f"config.keep_checkpoints must be at least 1 (resume needs the latest checkpoint); "
            f"got {config.keep_checkpoints}"
        )
    policy = config.get("on_nonfinite", "stop")
    if policy not in NONFINITE_POLICIES:
        raise ConfigError(
            f"config.on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}; got {policy!r}"
        )
    if float(config.get("max_runtime", 0.0) or 0.0) < 0:
        raise ConfigError(f"config.max_runtime must be >= 0 seconds; got {config.max_runtime}")


def to_plain(config: Any) -> Any:
    """A ConfigDict (or mapping) as plain nested dicts and lists, as config.json stores it."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=str))


def import_config(path: str | Path) -> ml_collections.ConfigDict:
    """Imports an experiment file and returns its `get_config()`, unchecked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; experiments live in experiments/*.py"
        )
    spec = importlib.util.spec_from_file_location(f"_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} has no get_config(); an experiment file defines get_config()")
    return module.get_config()


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Imports a training experiment file and checks that it has the trainer's keys."""
    config = import_config(path)
    check_required(config, source=str(path))
    return fill_defaults(config)


def check_required(config: ml_collections.ConfigDict, source: str = "config") -> None:
    if "program" in config:  # an analysis (attn_jax/programs), not a training run
        raise ConfigError(
            f"{source} is an experiment that trains nothing (program={config.program!r}); run it "
            f"with `python launch.py run --config {source}`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(
            f"{source} lacks the required keys {missing}; see experiments/vit_digits.py"
        )


def flat_keys(config: Mapping, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a nested config ('optim.lr', 'model.depth', ...)."""
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping | ml_collections.ConfigDict) and len(value):
            keys.extend(flat_keys(value, name + "."))
        else:
            keys.append(name)
    return keys


def parse_override(arg: str) -> tuple[str, str]:
    """'--config.optim.lr=3e-4' or 'config.optim.lr=3e-4' -> ('optim.lr', '3e-4')."""
    body = arg[2:] if arg.startswith("--") else arg
    if not body.startswith("config.") or "=" not in body:
        raise ConfigError(f"cannot read override {arg!r}; write it as --config.group.key=value")
    key, value = body[len("config.") :].split("=", 1)
    return key, value


def _coerce(key: str, raw: str, current: Any, field_type: type | None) -> Any:
    """Turns the command-line text into a value of the type the config declares for `key`."""
    target = field_type if field_type is not None else type(current)
    if target is bool:
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"config.{key} expects true or false, got {raw!r}")
    if target is str:
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if target in (type(None), None) or current is None and field_type is None:
        return value
    if target is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if target is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if target in (tuple, list) and isinstance(value, tuple | list):
        return target(value)
    if target in (tuple, list) and isinstance(value, int | float | str):
        return target((value,))
    if not isinstance(value, target) or isinstance(value, bool) and target is not bool:
        raise ConfigError(
            f"config.{key} expects {target.__name__}, got {raw!r}; e.g. --config.{key}={current!r}"
        )
    return value


def _field_type(parent: ml_collections.ConfigDict, leaf: str) -> type | None:
    """The declared type of a placeholder (a typed None), else None."""
    field = parent._fields.get(leaf)  # noqa: SLF001 - placeholders carry their type only here
    if isinstance(field, ml_collections.FieldReference):
        return field.get_type()
    return None


def _lookup(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    """(parent dict, leaf name) of a dotted key; an unknown key names the nearest valid ones."""
    parent = config
    *groups, leaf = key.split(".")
    for part in groups:
        if part not in parent or not isinstance(parent[part], ml_collections.ConfigDict):
            parent = None
            break
        parent = parent[part]
    if parent is None or leaf not in parent:
        near = difflib.get_close_matches(key, flat_keys(config), n=3, cutoff=0.5)
        hint = f"; nearest valid keys: {', '.join('config.' + k for k in near)}" if near else ""
        raise ConfigError(f"unknown config key config.{key}{hint}")
    return parent, leaf


def check_key(config: ml_collections.ConfigDict, key: str) -> None:
    _lookup(config, key)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Applies '--config.a.b=v' strings in place, coercing each value to the key's type.

    An explicit value always wins over what the file derives it from: `--config.total_steps=N`
    on a config that counts `num_epochs` switches the epochs off (both given and non-zero is an
    error naming the one to drop).
    """
    fill_defaults(config)
    given = {}
    for arg in overrides:
        key, raw = parse_override(arg)
        parent, leaf = _lookup(config, key)
        value = _coerce(key, raw, parent[leaf], _field_type(parent, leaf))
        try:
            parent[leaf] = value
        except TypeError as e:
            raise ConfigError(f"config.{key}: {e}") from None
        given[key] = value
    if "total_steps" in given and "num_epochs" in config:
        if "num_epochs" not in given:
            config.num_epochs = 0
        elif given["num_epochs"] and given["total_steps"]:
            raise ConfigError(
                "--config.num_epochs and --config.total_steps both set the run's length; give "
                "only one of them (or set the other to 0)"
            )


def resolve_total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
    """`num_epochs`, where set, wins over `total_steps` (converted with the global batch)."""
    epochs = config.get("num_epochs")
    if epochs:
        return math.ceil(epochs * num_train_examples / config.batch_size)
    return int(config.total_steps)


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def _tuples(value: Any) -> Any:
    """JSON arrays back to the tuples that experiment files write (JSON has no tuple)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def from_json(text: str) -> ml_collections.ConfigDict:
    """The inverse of to_json; None values stay assignable so that overrides still work."""
    config = ml_collections.ConfigDict(_tuples(json.loads(text)))
    check_required(config, source="config.json")
    return fill_defaults(config)


def save(config: ml_collections.ConfigDict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(to_json(config))
    tmp.replace(path)


def load_json(path: str | Path) -> ml_collections.ConfigDict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; is {path.parent} a workdir written by train?")
    try:
        return from_json(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); restore it or retrain") from None


def run_config(
    experiment: str,
    *,
    batch_size: int,
    total_steps: int,
    eval_every: int,
    target_metric: str,
    target_mode: str = "max",
    eval_batch_size: int = 500,
    log_every: int = 50,
) -> ml_collections.ConfigDict:
    """The trainer keys every experiment carries (checkpoint at each evaluation, keep two, one
    process), so that an experiment file only states its data, model, task and optimizer."""
    c = ml_collections.ConfigDict()
    c.experiment = experiment
    c.seed = 0
    c.batch_size = batch_size  # global, over all devices and processes
    c.microbatches = 1
    c.eval_batch_size = eval_batch_size
    c.num_epochs = 0
    c.total_steps = total_steps
    c.log_every = log_every
    c.eval_every = eval_every
    c.checkpoint_every = eval_every
    c.keep_checkpoints = 2
    c.target_metric = target_metric
    c.target_mode = target_mode
    c.init_from = ""  # "<workdir>[:<step>]" to start from (fine-tuning); see train/checkpoint.py
    c.init_from_prefix = ""  # the source's subtree holding this model ("encoder" for MIM runs)
    c.init_from_fresh = ()  # path prefixes that keep their fresh init, e.g. ("head",)
    c.plots = True
    c.distributed = ml_collections.ConfigDict()
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.coordinator_address = "127.0.0.1:12355"
    c.distributed.auto = False  # True: process layout from SLURM / TPU pod / Kubernetes
    return c


def adamw_config(
    lr: float,
    *,
    weight_decay: float,
    warmup_steps: int = 100,
    b1: float = 0.9,
    b2: float = 0.999,
    end_lr_factor: float = 0.0,
    grad_clip_norm: float = 1.0,
) -> ml_collections.ConfigDict:
    """The `optim` group of the image experiments: AdamW, linear warmup then cosine decay to
    `end_lr_factor * lr`, gradients clipped to a global norm, no accumulation."""
    c = ml_collections.ConfigDict()
    c.name = "adamw"
    c.lr = lr
    c.weight_decay = weight_decay
    c.b1 = b1
    c.b2 = b2
    c.schedule = "cosine"
    c.warmup_steps = warmup_steps
    c.end_lr_factor = end_lr_factor
    c.grad_clip_norm = grad_clip_norm
    c.grad_accum_steps = 1
    c.layer_decay = 0.0  # ViT layer-wise lr decay for fine-tuning (train/optim.py); 0: off
    return c
