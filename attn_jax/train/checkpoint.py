"""Checkpoints with orbax: one manager keeps the latest K (for resume, written asynchronously, with
the input iterator's state), another keeps the best by the target metric (for evaluation), so
pruning by metric can never delete the checkpoint that resume needs.

Layout: <workdir>/checkpoints/latest/<step>/{state,data}, <workdir>/checkpoints/best/<step>/params.
Orbax writes each step into a temporary directory and renames it when complete, so a crash mid-save
never leaves a half-written checkpoint as the latest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from attn_jax.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message is one line naming the problem and the fix."""


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(p): tuple(getattr(x, "shape", ())) for p, x in leaves}


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
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=save_interval_steps,
                enable_async_checkpointing=True,
                create=not read_only,
                read_only=read_only,
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
                best_fn=lambda metrics: metrics[target_metric],
                best_mode=target_mode,
                keep_checkpoints_without_metrics=False,
                enable_async_checkpointing=False,
                create=not read_only,
                read_only=read_only,
            ),
            item_handlers={"params": ocp.StandardCheckpointHandler()},
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

    def save_best(self, step: int, params, metrics: dict[str, float]) -> None:
        if self.target_metric not in metrics:
            return
        if step in self.best.all_steps():
            return
        self.best.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
            metrics={k: float(v) for k, v in metrics.items()},
        )

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
            raise CheckpointError(
                f"checkpoint {where} cannot be read ({type(e).__name__}: {str(e)[:120]}); "
                "delete that step directory to fall back to an earlier one"
            ) from None
        if meta is None:
            raise CheckpointError(
                f"checkpoint {where} has no '{item}' item; delete that step directory to fall back"
            )
        check_fits(params_of(_as_tree(meta)), params_of(abstract), where)
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint {where} cannot be restored ({type(e).__name__}: {str(e)[:120]}); "
                "delete that step directory to fall back to an earlier one"
            ) from None
        return restored[item]

    def restore_state(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        """Full train state and the input iterator's state, for resuming."""
        state = self._restore_item(
            self.latest, step, "state", abstract_state, params_of=lambda t: _get(t, "params")
        )
        data = self.latest.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        return state, data["data"]

    def restore_params(self, abstract_state, *, step: int | None = None, best: bool = False):
        """Parameters for evaluation: from the best checkpoint, a given step, or the latest."""
        if best:
            step = self.best_step()
            if step is None:
                raise CheckpointError(
                    f"no best checkpoint in {self.root}/best; it is written at each evaluation"
                )
            abstract = abstract_state.params
            return step, self._restore_item(self.best, step, "params", abstract)
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint in {self.root}/latest; train first")
        if step in self.latest.all_steps():
            state = self._restore_item(
                self.latest, step, "state", abstract_state, params_of=lambda t: _get(t, "params")
            )
            return step, state.params
        if step in self.best.all_steps():
            return step, self._restore_item(self.best, step, "params", abstract_state.params)
        kept = sorted(set(self.latest.all_steps()) | set(self.best.all_steps()))
        raise CheckpointError(f"no checkpoint at step {step} in {self.root}; kept steps: {kept}")


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
