"""Experiment configs: load a `get_config()` file, apply `--config.a.b=v` overrides, JSON I/O.

Every error a user can cause here (a missing file, an unknown key, a value of the wrong type) is a
`ConfigError` whose message is one line naming the problem and the fix, raised before any work.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from attn_jax.errors import UserError
from attn_jax.eval.evaluators import EVALUATOR_KEYS

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

# Keys that no longer do anything, with what replaced them. A stored config.json may still carry
# them at their neutral value (which loads); any other value, or an override, is an error.
RETIRED_KEYS: dict[str, tuple[Any, str]] = {
    "optim.grad_accum_steps": (
        1,
        "set --config.microbatches=N instead (the batch in N sequential slices: the same update, "
        "less memory, exact on several devices)",
    ),
}

# The part of an embedded dataset's train split held out for validation (model selection): the
# last 10%, fixed, so that the test split is only ever reported. Datasets with a validation split
# of their own (imagenet2012, coco, cityscapes, wmt14) use that instead.
TRAIN_WITHOUT_VALIDATION = "train[:90%]"
VALIDATION_FROM_TRAIN = "train[90%:]"


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
    for key, (neutral, replacement) in RETIRED_KEYS.items():
        group, _, leaf = key.rpartition(".")
        parent = config.get(group) if group else config
        if parent is not None and leaf in parent and parent[leaf] not in (neutral, None):
            raise ConfigError(f"config.{key} is retired; {replacement}")


def to_plain(config: Any) -> Any:
    """A ConfigDict (or mapping) as plain nested dicts and lists, as config.json stores it."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=str))


def split_variant(spec: str | Path) -> tuple[Path, str | None]:
    """'experiments/x.py:variant' -> (Path('experiments/x.py'), 'variant'); no suffix: None."""
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head.endswith(".py") and tail and "/" not in tail and "\\" not in tail:
        return Path(head), tail
    return Path(text), None


def _import_module(path: Path):
    """The module of an experiment file. A file inside a package (experiments/ has an
    __init__.py) is imported under its package name with the package's parent on sys.path, so
    that `from experiments.x import get_config` derivations work from any working directory."""
    path = path.resolve()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if len(parts) > 1:
        name = ".".join(parts)
        top = sys.modules.get(parts[0])
        # Another package of the same name already imported (a user's own `experiments`): load
        # by file instead, so the file asked for is the file read.
        foreign = top is not None and str(folder / parts[0]) not in [
            str(Path(p).resolve()) for p in getattr(top, "__path__", [])
        ]
        if not foreign:
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(f"_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_config(path: str | Path) -> ml_collections.ConfigDict:
    """Imports an experiment file and returns its `get_config()`, unchecked.

    `path` may end in ':VARIANT' (big_vision's syntax, `experiments/rnn_dates.py:seq2seq`): the
    file's `get_config(VARIANT)`. A file with variants lists them in `VARIANTS`; without the
    suffix its `get_config()` default is used.

    Raises:
      ConfigError: no such file, no `get_config()`, or a variant the file does not offer.
    """
    file, variant = split_variant(path)
    if not file.is_file():
        raise ConfigError(
            f"config file {file} does not exist; experiments live in experiments/*.py"
        )
    module = _import_module(file)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{file} has no get_config(); an experiment file defines get_config()")
    variants = tuple(getattr(module, "VARIANTS", ()))
    if variant is None:
        return module.get_config()
    if not variants:
        raise ConfigError(
            f"{file} has no variants, so ':{variant}' cannot be read; drop the suffix"
        )
    if variant not in variants:
        raise ConfigError(
            f"{file} has no variant {variant!r}; its variants: {', '.join(variants)} "
            f"(e.g. --config {file}:{variants[0]})"
        )
    return module.get_config(variant)


def experiment_specs(folder: str | Path) -> list[str]:
    """Every experiment of `folder` as a `--config` value: 'dir/x.py' for a file without
    variants, 'dir/x.py:VARIANT' for each variant of one that has them (files named _* and
    __init__.py are not experiments)."""
    specs = []
    for path in sorted(Path(folder).glob("*.py")):
        if path.name.startswith("_"):
            continue
        variants = getattr(_import_module(path), "VARIANTS", ())
        specs.extend([f"{path}:{v}" for v in variants] if variants else [str(path)])
    return specs


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Imports a training experiment file (optionally 'file.py:variant') and checks that it has
    the trainer's keys."""
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
    if key in RETIRED_KEYS:
        raise ConfigError(f"config.{key} is retired; {RETIRED_KEYS[key][1]}")
    if parent is None or leaf not in parent:
        near = difflib.get_close_matches(key, flat_keys(config), n=3, cutoff=0.5)
        hint = f"; nearest valid keys: {', '.join('config.' + k for k in near)}" if near else ""
        raise ConfigError(f"unknown config key config.{key}{hint}")
    return parent, leaf


def _add_evaluator_key(config: ml_collections.ConfigDict, key: str) -> None:
    """Makes room for `evals.<name>.<key>`: an evaluator's optional keys (its period, type,
    batch size) and new evaluators can be given on the command line."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "evals" or parts[2] not in EVALUATOR_KEYS:
        return
    if config.get("evals") is None or not isinstance(config.evals, ml_collections.ConfigDict):
        return  # a config without evaluators by name: the key stays unknown
    _, name, leaf = parts
    if name not in config.evals:
        config.evals[name] = ml_collections.ConfigDict()
    if leaf not in config.evals[name]:
        kind = int if leaf in ("every", "batch_size") else str
        config.evals[name][leaf] = ml_collections.config_dict.placeholder(kind)


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
        _add_evaluator_key(config, key)
        parent, leaf = _lookup(config, key)
        value = _coerce(key, raw, parent[leaf], _field_type(parent, leaf))
        try:
            parent[leaf] = value
        except TypeError as e:
            raise ConfigError(f"config.{key}: {e}") from None
        given[key] = value
    if "data.eval_split" in given and config.get("evals") is not None:
        # With evaluators by name, data.eval_split is read by none of them: say so, not ignore it.
        names = ", ".join(config.evals.keys())
        split = given["data.eval_split"]
        raise ConfigError(
            f"config.data.eval_split is not read when config.evals is set (evaluators: {names}); "
            f"set --config.evals.<name>.split instead, e.g. --config.evals.test.split={split}"
        )
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
    validation_split: str = VALIDATION_FROM_TRAIN,
    test_split: str | None = "test",
) -> ml_collections.ConfigDict:
    """The trainer keys every experiment carries (checkpoint at each evaluation, keep two, one
    process), so that an experiment file only states its data, model, task and optimizer.

    Two evaluators, every `eval_every` steps: "validation" on `validation_split` (by default the
    held-out last 10% of train, so the experiment's `data.train_split` must be
    `TRAIN_WITHOUT_VALIDATION`) and "test" on `test_split` (None: none). `target_metric` names a
    "validation/..." metric: the best checkpoint is chosen there, and test is reported at it.
    """
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
    # Evaluators by name (attn_jax/eval/evaluators.py); without "every" they run each eval_every.
    c.evals = ml_collections.ConfigDict({"validation": {"split": validation_split}})
    if test_split:
        c.evals.test = ml_collections.ConfigDict({"split": test_split})
    c.init_from = ""  # "<workdir>[:<step>]" to start from (fine-tuning); see train/checkpoint.py
    c.init_from_prefix = ""  # the source's subtree holding this model ("encoder" for MIM runs)
    c.init_into = ""  # this model's subtree that init_from fills ("backbone"); "": all of it
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
    `end_lr_factor * lr`, gradients clipped to a global norm (accumulation is
    `config.microbatches`)."""
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
    c.layer_decay = 0.0  # ViT layer-wise lr decay for fine-tuning (train/optim.py); 0: off
    return c
