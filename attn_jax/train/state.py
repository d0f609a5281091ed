"""The train state: everything a resumed run needs to continue bit for bit."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax

# Collections a model updates while training (BatchNorm's running statistics); a frozen
# BatchNorm keeps its statistics there too and simply never changes them.
MUTABLE_COLLECTIONS = ("batch_stats",)


class TrainState(flax.struct.PyTreeNode):
    """step, params, optimizer state, the model's other variables, and the base key that every
    step folds its step into.

    `model_state` holds the collections of `model.init` besides "params" (e.g. "batch_stats"):
    carried, checkpointed and restored with the rest, never touched by the optimizer. The key is
    stored as raw uint32 data so that checkpoints hold plain arrays.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    rng: jax.Array
    model_state: Any = flax.struct.field(default_factory=dict)

    @property
    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng)


class BoundModel:
    """The model as a task sees it: `apply({"params": p}, ...)` with the train state's other
    collections bound in, so that tasks stay written for parameters alone.

    With `mutable`, a training apply also returns the updated statistics to the trainer through
    `updates` (BatchNorm in training mode); anything else is forwarded to the model.
    """

    def __init__(self, model, model_state: dict, *, mutable: bool):
        self._model = model
        self._state = dict(model_state or {})
        self._mutable = [c for c in MUTABLE_COLLECTIONS if c in self._state] if mutable else []
        self.updates: dict | None = None

    def apply(self, variables, *args, **kwargs):
        merged = {**self._state, **variables}
        if self._mutable and kwargs.get("train", False) and "mutable" not in kwargs:
            out, updates = self._model.apply(merged, *args, mutable=self._mutable, **kwargs)
            self.updates = dict(updates)
            return out
        return self._model.apply(merged, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def bind_state(model, model_state, *, mutable: bool):
    """`model` itself when it has no collections besides parameters (most models: tasks then see
    exactly the module they built), else a `BoundModel`."""
    if not jax.tree_util.tree_leaves(model_state):
        return model
    return BoundModel(model, model_state, mutable=mutable)
