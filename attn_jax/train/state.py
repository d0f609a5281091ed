"""The train state: everything a resumed run needs to continue bit for bit."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


class TrainState(flax.struct.PyTreeNode):
    """step, params, optimizer state, and the base key that every step folds its step into.

    The key is stored as raw uint32 data so that checkpoints hold plain arrays.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    rng: jax.Array

    @property
    def key(self) -> jax.Array:
        return jax.random.wrap_key_data(self.rng)
