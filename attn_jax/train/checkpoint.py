"""Checkpoints with orbax: one manager keeps the latest K (for resume, written asynchronously, with
the input iterator's state), another keeps the best by the target metric (for evaluation), so
pruning by metric can never delete the checkpoint that resume needs.

Layout: <workdir>/checkpoints/latest/<step>/{state,data}, <workdir>/checkpoints/best/<step>/params.
Orbax writes each step into a temporary directory and renames it when complete, so a crash mid-save
never leaves a half-written checkpoint as the latest one.

`init_variables_from` starts a model from another workdir's parameters and BatchNorm statistics
(fine-tuning, linear probes) without knowing the model that wrote them: it reads the saved tree's
shapes from the orbax metadata and restores only the leaves it needs (orbax's partial restore),
never the optimizer state. It also starts one from a downloaded reference checkpoint (a
torchvision/timm ResNet state dict, a Hugging Face ViT/CLIP directory, a timm Swin directory)
through the converters of attn_jax/pretrained/, placed into the subtree `into` names (DETR's
"backbone"); a batch norm's four vectors go to a trainable norm or a frozen one alike. A position
grid saved at another resolution (a ViT's position embedding from 224 into a 384 model, a Swin
table from window 7 into window 12) is resized bicubically as timm and the Swin repository do
(attn_jax/pretrained/resample.py); any other shape mismatch stops with one line.

A checkpoint that cannot be read (a torn write that escaped orbax's rename, a corrupted array file)
never stops a resume: it is reported in one line, moved aside to checkpoints/unreadable/ (never
deleted) and the newest intact step is used. A checkpoint that reads but does not fit the config
is a different matter and stops with one line: falling back would only meet the same mismatch.
The best checkpoint is ranked with non-finite metrics as the worst possible value and is never
written for them, so a diverged evaluation cannot evict the real best.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from attn_jax.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message is one line naming the problem and the fix."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read (corrupt or incomplete), as opposed to one that
    reads but does not fit the config; an earlier step may stand in for it."""


def rank_value(value: Any, mode: str) -> float:
    """A metric as a sort key where larger is better; NaN, inf and missing values are worst."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return -math.inf
    if not math.isfinite(v):
        return -math.inf
    return v if mode == "max" else -v


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(p): tuple(getattr(x, "shape", ())) for p, x in leaves}


def check_state_fits(saved_state, abstract_state, where: str) -> None:
    """Like `check_fits` for the parameters, then the rest of the state (the optimizer's)."""
    check_fits(_get(saved_state, "params"), _get(abstract_state, "params"), where)
    saved, wanted = _shapes(saved_state), _shapes(abstract_state)
    if saved != wanted:
        differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise CheckpointError(
            f"checkpoint in {where} holds an optimizer state of another structure than the "
            f"config's optimizer builds (first difference: {differ[0]}); resume with the "
            "optimizer settings it was trained with, or keep its parameters and start a new "
            f"--workdir with --config.init_from={Path(where).parent.parent.parent}"
        )


def check_fits(saved_params, abstract_params, where: str) -> None:
    """Names the first parameter whose presence or shape differs between checkpoint and config."""
    saved, wanted = _shapes(saved_params), _shapes(abstract_params)
    for name, shape in wanted.items():
        if name not in saved:
            raise CheckpointError(
                f"checkpoint in {where} does not fit the config: parameter {name} {shape} is "
                "missing from it; use the config it was trained with or a new --workdir"
            )
        if saved[name] != shape:
            raise CheckpointError(
                f"checkpoint in {where} does not fit the config: parameter {name} has shape "
                f"{saved[name]} there but {shape} in the config; use the config it was trained "
                "with or a new --workdir"
            )
    extra = sorted(set(saved) - set(wanted))
    if extra:
        raise CheckpointError(
            f"checkpoint in {where} does not fit the config: it has parameter {extra[0]} that the "
            "model lacks; use the config it was trained with or a new --workdir"
        )


class Checkpointer:
    """The two managers of a workdir, plus restore with fit checks and readable errors."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        keep: int = 2,
        target_metric: str = "test/accuracy",
        target_mode: str = "max",
        save_interval_steps: int = 1,
        read_only: bool = False,
    ):
        root = Path(workdir).absolute() / "checkpoints"
        self.root = root
        self.target_metric = target_metric
        self.target_mode = target_mode
        self.read_only = read_only
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=save_interval_steps,
                enable_async_checkpointing=True,
                create=not read_only,
                read_only=read_only,
                # Removes what a kill in the middle of a save left behind.
                cleanup_tmp_directories=not read_only,
            ),
            # Handlers named up front: a fresh process (eval, resume) can then read the items'
            # metadata before restoring anything.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
            },
        )
        self.best = ocp.CheckpointManager(
            root / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: rank_value(metrics.get(target_metric), target_mode),
                best_mode="max",
                keep_checkpoints_without_metrics=False,
                enable_async_checkpointing=False,
                create=not read_only,
                read_only=read_only,
                cleanup_tmp_directories=not read_only,
            ),
            item_handlers={
                "params": ocp.StandardCheckpointHandler(),
                # The model's other collections (BatchNorm statistics), where it has any.
                "model_state": ocp.StandardCheckpointHandler(),
            },
        )

    # -- saving ----------------------------------------------------------------------------------
    def save(self, step: int, state, data_state: dict[str, Any], *, force: bool = False) -> bool:
        return self.latest.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
            ),
            force=force,
        )

    def save_best(self, step: int, params, metrics: dict[str, float], model_state=None) -> bool:
        """Keeps `params` (and the model's other collections) if `metrics[target_metric]` beats
        the kept best; False if not written.

        A non-finite value is never written: it would rank last anyway, and the checkpoint it
        belongs to holds the weights of a diverged run.
        """
        value = metrics.get(self.target_metric)
        if value is None or rank_value(value, self.target_mode) == -math.inf:
            return False
        if step in self.best.all_steps():
            return False
        finite = {k: float(v) for k, v in metrics.items() if _finite(v)}
        items = {"params": ocp.args.StandardSave(params)}
        if model_state:
            items["model_state"] = ocp.args.StandardSave(model_state)
        return bool(self.best.save(step, args=ocp.args.Composite(**items), metrics=finite))

    def move_aside_stale_best(self) -> list[int]:
        """At a fresh start: best checkpoints of an earlier run in this workdir (whose latest
        checkpoints are gone) go to checkpoints/stale-<time>/, since orbax refuses a new best at
        a step <= theirs and `eval --best` would report the old run. Returns their steps."""
        steps = list(self.best.all_steps())
        if not steps:
            return []
        target = self.root / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir(parents=True, exist_ok=True)
        for step in steps:
            shutil.move(str(self.root / "best" / str(step)), str(target / str(step)))
        self.best.reload()
        return steps

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()

    # -- restoring -------------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.best_step()

    def _restore_item(self, manager, step: int, item: str, abstract, params_of=lambda t: t):
        where = f"{manager.directory}/{step}"
        try:
            meta = manager.item_metadata(step)[item]
        except Exception as e:  # noqa: BLE001 - any unreadable metadata is a corrupt checkpoint
            raise UnreadableCheckpointError(
                f"checkpoint {where} cannot be read ({_first_line(e)})"
            ) from None
        if meta is None:
            raise UnreadableCheckpointError(f"checkpoint {where} has no '{item}' item")
        if item == "state":
            check_state_fits(_as_tree(meta), abstract, where)
        else:
            check_fits(params_of(_as_tree(meta)), params_of(abstract), where)
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
            )
        except Exception as e:  # noqa: BLE001
            raise UnreadableCheckpointError(
                f"checkpoint {where} cannot be restored ({_first_line(e)})"
            ) from None
        return restored[item]

    def restore_state(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        """Full train state and the input iterator's state, for resuming."""
        state = self._restore_item(self.latest, step, "state", abstract_state)
        try:
            data = self.latest.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
            data = data["data"]
        except Exception as e:  # noqa: BLE001
            raise UnreadableCheckpointError(
                f"checkpoint {self.latest.directory}/{step} has no readable input-iterator state "
                f"({_first_line(e)})"
            ) from None
        if not isinstance(data, dict):
            raise UnreadableCheckpointError(
                f"checkpoint {self.latest.directory}/{step} has no input-iterator state"
            )
        return state, data

    def restore_latest(
        self, abstract_state, *, report: Callable[[str], None] = print, move_aside: bool = True
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, iterator state) of the newest readable checkpoint; None if there is none.

        Unreadable steps are reported through `report` and, with `move_aside`, moved to
        checkpoints/unreadable/ (the caller decides: in a multi-process run only process 0 moves,
        after every process has chosen).
        """
        self.unreadable: list[int] = []
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                state, data = self.restore_state(step, abstract_state)
            except UnreadableCheckpointError as e:
                self.unreadable.append(step)
                report(f"{e}; falling back to the previous checkpoint")
                continue
            if move_aside:
                self.move_aside_unreadable()
            return step, state, data
        if move_aside:
            self.move_aside_unreadable()
        return None

    def move_aside_unreadable(self) -> None:
        """Moves the steps that `restore_latest` could not read to checkpoints/unreadable/."""
        if not getattr(self, "unreadable", None):
            return
        target = self.root / "unreadable"
        target.mkdir(parents=True, exist_ok=True)
        for step in self.unreadable:
            source = self.root / "latest" / str(step)
            if source.exists():
                shutil.move(str(source), str(target / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"))
        self.unreadable = []
        self.latest.reload()

    def restore_params(
        self,
        abstract_state,
        *,
        step: int | None = None,
        best: bool = False,
        report: Callable[[str], None] = print,
    ):
        """(step, parameters) for evaluation; see `restore_variables`."""
        step, params, _ = self.restore_variables(
            abstract_state, step=step, best=best, report=report
        )
        return step, params

    def restore_variables(
        self,
        abstract_state,
        *,
        step: int | None = None,
        best: bool = False,
        report: Callable[[str], None] = print,
    ):
        """(step, params, model_state) for evaluation: from the best checkpoint, a given step, or
        the latest readable one (unreadable newer steps are reported through `report` and
        skipped). `model_state` is the model's other collections (BatchNorm statistics)."""
        if best:
            step = self.best_step()
            if step is None:
                raise CheckpointError(
                    f"no best checkpoint in {self.root}/best; it is written at each evaluation"
                )
            return (step, *self._restore_best(step, abstract_state))
        if step is None:
            if self.latest_step() is None:
                raise CheckpointError(f"no checkpoint in {self.root}/latest; train first")
            found = self.restore_latest(abstract_state, report=report, move_aside=False)
            if found is None:
                raise CheckpointError(
                    f"no checkpoint in {self.root}/latest can be read; train again in a new "
                    "--workdir, or pass --step for a kept best checkpoint"
                )
            return found[0], found[1].params, found[1].model_state
        if step in self.latest.all_steps():
            try:
                state = self._restore_item(self.latest, step, "state", abstract_state)
            except UnreadableCheckpointError as e:
                others = [s for s in self.latest.all_steps() if s != step]
                raise UnreadableCheckpointError(
                    f"{e}: evaluate another step (kept: {others}), or delete that step directory "
                    "so that training resumes from the previous one"
                ) from None
            return step, state.params, state.model_state
        if step in self.best.all_steps():
            return (step, *self._restore_best(step, abstract_state))
        kept = sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))
        raise CheckpointError(f"no checkpoint at step {step} in {self.root}; kept steps: {kept}")

    def _restore_best(self, step: int, abstract_state):
        params = self._restore_item(self.best, step, "params", abstract_state.params)
        model_state = abstract_state.model_state
        if jax.tree_util.tree_leaves(model_state):
            model_state = self._restore_item(self.best, step, "model_state", model_state)
        return params, model_state


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _get(tree, name):
    return tree[name] if isinstance(tree, dict) else getattr(tree, name)


def _as_tree(meta):
    """Orbax metadata -> a plain nested dict of objects with `.shape`."""
    tree = getattr(meta, "tree", meta)
    if hasattr(tree, "to_dict"):
        tree = tree.to_dict()
    return tree


def abstract_like(tree):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def restore_for_evaluation(
    workdir: str | Path,
    config: Any,
    abstract_state: Any,
    *,
    step: int | None = None,
    best: bool = False,
    report: Callable[[str], None] = print,
) -> tuple[int, Any, Any]:
    """(step, params, model_state) of a training run's checkpoint, as `eval` restores it.

    Args:
      workdir: the run's directory (checkpoints/ under it), opened read-only and closed again.
      config: the run's config; its `target_metric` and `target_mode` rank the best checkpoints.
      abstract_state: the train state's `jax.eval_shape`, with the shardings to restore into.
      step: a kept step (default: the latest readable one).
      best: the best checkpoint by the target metric instead.
      report: where an unreadable newer checkpoint that is skipped is reported.

    Raises:
      CheckpointError: no such checkpoint, or none that can be read.
    """
    ckpt = Checkpointer(
        workdir,
        read_only=True,
        target_metric=config.target_metric,
        target_mode=config.get("target_mode", "max"),
    )
    try:
        return ckpt.restore_variables(abstract_state, step=step, best=best, report=report)
    finally:
        ckpt.close()


# -- starting from another workdir or a reference checkpoint (fine-tuning) ------------------------
@dataclasses.dataclass(frozen=True)
class InitReport:
    """What `init_variables_from` did, counted in scalars (and arrays).

    `loaded` counts parameters, `statistics` the other collections' leaves (BatchNorm's running
    averages, a frozen norm's constants).
    """

    source: str
    step: int | None
    loaded: int
    loaded_arrays: int
    fresh: int
    fresh_arrays: int
    ignored: int
    ignored_arrays: int
    statistics: int = 0
    statistics_arrays: int = 0
    into: str = ""
    summed_colours: tuple[str, ...] = ()
    resampled: tuple[str, ...] = ()  # "name AxA->BxB" for each position grid resized

    def summary(self) -> str:
        """One line for the log."""
        at = f" step {self.step}" if self.step is not None else ""
        into = f" into {self.into}" if self.into else ""
        stats = (
            f" and {self.statistics:,} statistics ({self.statistics_arrays} arrays)"
            if self.statistics_arrays
            else ""
        )
        summed = (
            f", summed the RGB kernels of {', '.join(self.summed_colours)} for 1-channel images"
            if self.summed_colours
            else ""
        )
        resampled = (
            f", resampled {len(self.resampled)} position grid(s) bicubically "
            f"({_listing(list(self.resampled), 2)})"
            if self.resampled
            else ""
        )
        return (
            f"init_from {self.source}{at}{into}: loaded {self.loaded:,} parameters "
            f"({self.loaded_arrays} arrays){stats}, kept {self.fresh:,} fresh "
            f"({self.fresh_arrays}), ignored {self.ignored:,} of the source "
            f"({self.ignored_arrays}){summed}{resampled}"
        )


def parse_init_from(spec: str) -> tuple[Path, int | None]:
    """'<workdir>[:<step>]' -> (workdir, step or None); a reference checkpoint has no step."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        return Path(head), int(tail)
    return Path(spec), None


def _matches(path: str, pattern: str) -> bool:
    return path.startswith(pattern)


def _listing(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _first_line(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:120]}"


def _size(shape: tuple) -> int:
    return int(np.prod(shape, dtype=np.int64))


def init_params_from(
    spec: str,
    params,
    *,
    prefix: str = "",
    fresh: Sequence[str] = (),
    into: str = "",
) -> tuple[Any, InitReport]:
    """`init_variables_from` for a model with parameters only: (params, report)."""
    params, _, report = init_variables_from(spec, params, {}, prefix=prefix, fresh=fresh, into=into)
    return params, report


def is_reference_checkpoint(path: str | Path) -> bool:
    """Whether `config.init_from` names a reference checkpoint (a state-dict file, or a directory
    with weights and no checkpoints/) rather than a workdir."""
    from attn_jax.pretrained.checkpoint_files import SHARD_INDEX_FILES, WEIGHT_FILES

    path = Path(path)
    if path.is_file():
        return True
    if not path.is_dir() or (path / "checkpoints").is_dir():
        return False
    return any((path / name).is_file() for name in WEIGHT_FILES + SHARD_INDEX_FILES)


def reference_variables(path: str | Path) -> dict[str, Any]:
    """The variables ({"params", "batch_stats"...}, numpy) of a downloaded reference checkpoint,
    through the converters of attn_jax/pretrained/.

    Recognised: a torchvision or timm ResNet state dict (.safetensors, .pth, .bin; told by its
    names) or a timm directory of one; a Hugging Face ViT, CLIP or DETR directory; a timm Swin
    directory or state dict.

    Raises:
      PretrainedError: an unreadable checkpoint or a model family without a converter.
    """
    from attn_jax import pretrained
    from attn_jax.pretrained import resnet
    from attn_jax.pretrained.checkpoint_files import read_config, read_state_dict

    path = Path(path)
    tensors = None
    if path.is_file():
        tensors = read_state_dict(path)
    elif str(read_config(path).get("architecture", "")).startswith("resnet"):
        tensors = read_state_dict(path)
    if tensors is not None and resnet.is_resnet_state_dict(tensors):
        return resnet.convert_resnet_tensors(tensors, str(path))[1]
    variables = pretrained.load(path).variables
    return jax.tree_util.tree_map(np.asarray, dict(variables))


class _WorkdirSource:
    """Another run's checkpoint: shapes from orbax's metadata, leaves by partial restore.

    Keys are (collection, path): parameters, and the model's other collections where the
    checkpoint holds them (the latest manager's state does; the best manager's `model_state`
    item, where it was written).
    """

    def __init__(self, workdir: Path, step: int | None, spec: str):
        if not (workdir / "checkpoints").is_dir():
            problem = "holds no checkpoints/ directory" + (
                "" if workdir.exists() else " (no such path)"
            )
            raise CheckpointError(
                f"config.init_from {spec!r}: {workdir} {problem}; point it "
                "at the workdir of a finished training run, optionally with :<step>, or at a "
                "reference checkpoint (a ResNet state dict, a Hugging Face or timm directory)"
            )
        self.name = str(workdir)
        self.checkpointer = Checkpointer(workdir, read_only=True, **_ranking_of(workdir))
        try:
            self.manager, self.item, self.step = _pick_source_step(self.checkpointer, step, spec)
            self.where = f"{self.manager.directory}/{self.step}"
            try:
                meta = self.manager.item_metadata(self.step)
                tree = _as_tree(meta[self.item])
                if self.item == "state":
                    params, others = _get(tree, "params"), _get_or(tree, "model_state")
                else:
                    params, others = tree, _item_or_none(meta, "model_state")
            except Exception as e:  # noqa: BLE001 - any unreadable metadata is a corrupt checkpoint
                raise CheckpointError(
                    f"checkpoint {self.where} cannot be read ({_first_line(e)}); pick another "
                    "step with config.init_from=<workdir>:<step>"
                ) from None
        except BaseException:
            self.checkpointer.close()
            raise
        self.shapes = {("params", k): v for k, v in _shapes(params).items()}
        for collection, subtree in (_as_tree(others) or {}).items():
            self.shapes.update({(collection, k): v for k, v in _shapes(subtree).items()})

    @staticmethod
    def key(collection: str, name: str) -> tuple[str, str]:
        return collection, name

    @staticmethod
    def grey(key, shape: tuple) -> bool:
        del key, shape
        return False

    def read(self, wanted: dict) -> dict:
        out = {}
        by_item: dict[str, dict] = {}
        for (collection, name), leaf in wanted.items():
            if self.item == "state":
                item, root = "state", ["params"] if collection == "params" else ["model_state"]
            else:
                item, root = ("params", []) if collection == "params" else ("model_state", [])
            parts = root + ([] if collection == "params" else [collection])
            by_item.setdefault(item, {})[(collection, name)] = (parts, leaf)
        for item, leaves in by_item.items():
            out.update(_restore_subset(self.manager, self.step, item, leaves, self.where))
        return out

    def close(self) -> None:
        self.checkpointer.close()


class _ReferenceSource:
    """A converted reference checkpoint; keys are paths only, so that a batch norm's four
    vectors reach a trainable norm (scale and bias as parameters) or a frozen one (all four
    constants) alike."""

    def __init__(self, path: Path):
        self.name = str(path)
        self.where = str(path)
        self.step = None
        variables = reference_variables(path)
        self.arrays: dict[str, np.ndarray] = {}
        for subtree in variables.values():
            for p, x in jax.tree_util.tree_flatten_with_path(subtree)[0]:
                self.arrays[_path_str(p)] = np.asarray(x)
        self.shapes = {k: tuple(v.shape) for k, v in self.arrays.items()}

    @staticmethod
    def key(collection: str, name: str) -> str:
        del collection
        return name

    def grey(self, key: str, shape: tuple) -> bool:
        """Whether an RGB convolution kernel [kh, kw, 3, O] here meets one for 1-channel images
        [kh, kw, 1, O]: summed over the colours, it gives on a grey image x what the RGB kernel
        gives on (x, x, x), as timm adapts its pretrained stems to in_chans=1."""
        there = self.shapes[key]
        return (
            len(there) == len(shape) == 4
            and (there[2], shape[2]) == (3, 1)
            and (there[:2], there[3]) == (shape[:2], shape[3])
        )

    def read(self, wanted: dict) -> dict:
        out = {}
        for k, leaf in wanted.items():
            x = self.arrays[k]
            if x.shape != tuple(leaf.shape) and self.grey(k, tuple(leaf.shape)):
                x = x.sum(axis=2, keepdims=True)
            out[k] = jax.device_put(x.astype(leaf.dtype), getattr(leaf, "sharding", None))
        return out

    def close(self) -> None:
        pass


def init_variables_from(
    spec: str,
    params,
    model_state=None,
    *,
    prefix: str = "",
    fresh: Sequence[str] = (),
    into: str = "",
) -> tuple[Any, Any, InitReport]:
    """`params` and `model_state` with every leaf under `into` not named in `fresh` replaced by
    the source's value.

    Args:
      spec: "<workdir>" (its best checkpoint if it has one, else its latest), "<workdir>:<step>"
        (that step, from either manager), or a reference checkpoint (`reference_variables`: a
        torchvision/timm ResNet state dict, a Hugging Face ViT/CLIP/DETR or timm Swin directory).
      params: this model's freshly initialized parameters (arrays, placed as training wants
        them); restored leaves take each one's dtype and sharding.
      model_state: the model's other collections ({"batch_stats": ...}; None or {}: none). Their
        leaves are loaded like the parameters: a batch norm's running averages, a frozen norm's
        constants.
      prefix: the subtree of the source that holds this model ("encoder" for the MIM
        pretraining runs); "" for the whole tree.
      fresh: path prefixes of this model ("head", "Transformer/encoder_norm") that keep their
        fresh values, in every collection.
      into: the subtree of this model that the source fills ("backbone" for DETR's ResNet);
        everything outside it keeps its fresh values; "" for the whole model.

    Returns:
      (params, model_state, report). Source leaves that no target leaf uses (a MIM decoder, a
      classifier the backbone lacks) are counted in the report as ignored. A position embedding
      or relative-position table whose grid differs from this model's is resized bicubically
      (`attn_jax.pretrained.resample.grid_resampler`) and named in the report.

    Raises:
      CheckpointError: no such workdir or step, unreadable metadata, a pattern of `fresh`, the
        prefix or `into` that matches nothing, or target leaves missing from the source or of
        another shape there (all listed in one line, with the fix).
      PretrainedError: a reference checkpoint that cannot be read or converted.
    """
    from attn_jax.pretrained.resample import grid_resampler

    path, step = parse_init_from(spec)
    model_state = dict(model_state or {})
    fresh = tuple(str(f) for f in fresh)
    prefix, into = str(prefix).strip("/"), str(into).strip("/")
    under, inside = (f"{prefix}/" if prefix else ""), (f"{into}/" if into else "")
    variables = {"params": params, **model_state}
    flat = {c: jax.tree_util.tree_flatten_with_path(tree) for c, tree in variables.items() if tree}
    names = {c: [_path_str(p) for p, _ in leaves] for c, (leaves, _) in flat.items()}
    everything = [n for ns in names.values() for n in ns]
    for pattern in fresh:
        if not any(_matches(n, pattern) for n in everything):
            raise CheckpointError(
                f"config.init_from_fresh pattern {pattern!r} matches no parameter of the "
                f"model; patterns are path prefixes such as {names['params'][-1]!r}"
            )
    if into and not any(n.startswith(inside) for n in everything):
        tops = sorted({n.split("/")[0] for n in everything})
        raise CheckpointError(
            f"config.init_into {into!r} is not a subtree of the model; its top-level names are "
            f"{_listing(tops, 8)}"
        )
    if step is None and is_reference_checkpoint(path):
        source: _WorkdirSource | _ReferenceSource = _ReferenceSource(path)
    else:
        source = _WorkdirSource(path, step, spec)
    try:
        source_names = [k if isinstance(k, str) else k[1] for k in source.shapes]
        if prefix and not any(k.startswith(under) for k in source_names):
            tops = sorted({k.split("/")[0] for k in source_names})
            raise CheckpointError(
                f"config.init_from_prefix {prefix!r} is not a subtree of the parameters in "
                f"{source.where}; its top-level names are {_listing(tops, 8)}"
            )
        wanted, missing, misshaped, summed, resamplers = {}, [], [], [], {}
        for c, (leaves, _) in flat.items():
            for name, (_, leaf) in zip(names[c], leaves, strict=True):
                if not name.startswith(inside) or any(_matches(name, p) for p in fresh):
                    continue
                key = source.key(c, under + name[len(inside) :])
                shown = name if c == "params" else f"{c}/{name}"
                resample = None
                if key in source.shapes and source.shapes[key] != tuple(leaf.shape):
                    resample = grid_resampler(name, source.shapes[key], tuple(leaf.shape))
                if key not in source.shapes:
                    missing.append(shown)
                elif resample is not None:
                    wanted[key] = (c, name, leaf)
                    resamplers[key] = (f"{shown} {resample[0]}", resample[1])
                elif source.shapes[key] != tuple(leaf.shape) and not source.grey(
                    key, tuple(leaf.shape)
                ):
                    misshaped.append(
                        f"{shown} {source.shapes[key]} there vs {tuple(leaf.shape)} here"
                    )
                else:
                    wanted[key] = (c, name, leaf)
                    if source.shapes[key] != tuple(leaf.shape):
                        summed.append(shown)
        if missing or misshaped:
            problems = [f"missing {n}" for n in missing] + misshaped
            raise CheckpointError(
                f"config.init_from {source.where} does not fit the model under prefix "
                f"{prefix!r}{f' (into {into!r})' if into else ''}: {_listing(problems)}; set "
                "config.init_from_prefix to the subtree that holds this model (config.init_into "
                "to the part of this model it fills), list the leaves to train from scratch in "
                "config.init_from_fresh (e.g. ('head',)), or use the config the source was "
                "trained with"
            )
        restored = source.read(
            {
                k: _saved_shape(leaf, source.shapes[k]) if k in resamplers else leaf
                for k, (_, _, leaf) in wanted.items()
            }
        )
    finally:
        source.close()
    for k, (_, resample) in resamplers.items():
        leaf = wanted[k][2]
        x = resample(np.asarray(jax.device_get(restored[k])))
        restored[k] = jax.device_put(x.astype(leaf.dtype), getattr(leaf, "sharding", None))

    by_target = {(c, n): restored[k] for k, (c, n, _) in wanted.items()}
    out, kept = {}, []
    for c, (leaves, treedef) in flat.items():
        new = []
        for name, (_, leaf) in zip(names[c], leaves, strict=True):
            if (c, name) in by_target:
                new.append(by_target[(c, name)])
            else:
                new.append(leaf)
                kept.append(leaf)
        out[c] = jax.tree_util.tree_unflatten(treedef, new)
    ignored = [k for k in source.shapes if k not in wanted]
    sizes = {k: _size(wanted[k][2].shape) for k in wanted}
    report = InitReport(
        source=source.name,
        step=source.step,
        loaded=sum(s for k, s in sizes.items() if wanted[k][0] == "params"),
        loaded_arrays=sum(1 for k in wanted if wanted[k][0] == "params"),
        fresh=sum(int(np.size(leaf)) for leaf in kept),
        fresh_arrays=len(kept),
        ignored=sum(_size(source.shapes[k]) for k in ignored),
        ignored_arrays=len(ignored),
        statistics=sum(s for k, s in sizes.items() if wanted[k][0] != "params"),
        statistics_arrays=sum(1 for k in wanted if wanted[k][0] != "params"),
        into=into,
        summed_colours=tuple(summed),
        resampled=tuple(note for note, _ in resamplers.values()),
    )
    new_params = out.get("params", params)
    new_state = {c: out.get(c, tree) for c, tree in model_state.items()}
    return new_params, new_state, report


def _saved_shape(leaf, shape: tuple) -> jax.ShapeDtypeStruct:
    """A stand-in for `leaf` with the source's shape, read onto one device: a leaf whose grid is
    resampled after reading cannot take the target's (sharded) layout before."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=device)


def _get_or(tree, name):
    try:
        return _get(tree, name)
    except (KeyError, AttributeError):
        return None


def _item_or_none(meta, item: str):
    """An item's metadata from a composite, or None where the checkpoint lacks the item."""
    try:
        return meta[item]
    except (KeyError, AttributeError, TypeError):
        return None


def _ranking_of(workdir: Path) -> dict[str, str]:
    """The source run's own target metric and mode, by which its best checkpoint was kept."""
    try:
        saved = json.loads((workdir / "config.json").read_text())
        return {"target_metric": saved["target_metric"], "target_mode": saved["target_mode"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no readable config.json: the Checkpointer's defaults


def _pick_source_step(source: Checkpointer, step: int | None, spec: str):
    """(manager, item name, step) of the checkpoint that `spec` names."""
    latest, best = set(source.latest.all_steps()), set(source.best.all_steps())
    if step is None:
        try:
            step = source.best_step()
        except KeyError:  # ranked by a metric its config.json does not name: the one kept
            step = max(best) if best else None
        if step is not None:
            return source.best, "params", step
        step = source.latest_step()
        if step is None:
            raise CheckpointError(
                f"config.init_from {spec!r}: {source.root} holds no checkpoint yet; train that "
                "workdir first"
            )
    if step in latest:
        return source.latest, "state", step
    if step in best:
        return source.best, "params", step
    raise CheckpointError(
        f"config.init_from {spec!r}: no checkpoint at step {step} in {source.root}; kept steps: "
        f"{sorted(latest | best)}"
    )


def _restore_subset(manager, step: int, item: str, leaves: dict, where: str) -> dict:
    """{key: array} for the wanted leaves only, read with orbax's partial restore; `leaves` maps
    each key to (the path of its collection inside the item, the target leaf)."""
    if not leaves:
        return {}
    tree: dict = {}
    for (_, name), (parts, leaf) in leaves.items():
        node = tree
        *parents, last = parts + name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        sharding = getattr(leaf, "sharding", None)
        node[last] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    try:
        # The saved tree holds more than we ask for (optimizer state, a decoder): only a
        # PyTree handler with partial_restore reads a subset; the Standard handler insists on
        # the whole tree.
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
            out = reader.restore(
                manager.directory / str(step) / item,
                args=ocp.args.PyTreeRestore(
                    item=tree,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(tree),
                    partial_restore=True,
                ),
            )
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {where} cannot be restored ({_first_line(e)}); pick another step with "
            "config.init_from=<workdir>:<step>"
        ) from None
    result = {}
    for key, (parts, _) in leaves.items():
        node = out
        for part in parts + key[1].split("/"):
            node = node[part]
        result[key] = node
    return result
