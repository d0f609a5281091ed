"""A model's collections besides its parameters (BatchNorm's running statistics) live in the train
state: updated by training steps from the statistics of the global batch (the same on 1 and 4
devices), read by evaluation, checkpointed with the rest, and never touched by the optimizer."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from attn_jax.tasks.classification import Classification
from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib
from attn_jax.train.checkpoint import Checkpointer
from attn_jax.train.state import BoundModel


class TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(3)(nn.relu(x)), {}


def batches(n=4, b=16, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {
            "image": rng.normal(2.0, 3.0, (b, 2, 2, 1)).astype(np.float32),
            "label": rng.integers(0, 3, b).astype(np.int32),
            "mask": np.ones(b, bool),
        }


def run(devices: int):
    mesh = Mesh(np.asarray(jax.devices()[:devices]).reshape(-1, 1), ("data", "model"))
    model, task, tx = TinyBN(), Classification(num_classes=3), optax.sgd(0.1)
    init_fn = loop.make_init_fn(model, tx, (jax.ShapeDtypeStruct((1, 2, 2, 1), jnp.float32),))
    _, shardings = loop._state_shardings(init_fn, mesh)
    state = jax.jit(init_fn, out_shardings=shardings)(jax.random.key(0))
    step = loop.make_train_step(model, task, tx, optax.constant_schedule(0.1), mesh, shardings)
    losses = []
    for batch in batches():
        state, metrics = step(state, shard_lib.to_global(batch, shard_lib.batch_sharding(mesh)))
        losses.append(float(metrics["loss"]))
    return state, losses, mesh, model, task, shardings


def test_statistics_follow_the_global_batch_on_one_and_four_devices():
    one, losses1, *_ = run(1)
    four, losses4, *_ = run(4)
    np.testing.assert_allclose(losses1, losses4, atol=1e-5)
    stats1 = one.model_state["batch_stats"]["BatchNorm_0"]
    stats4 = four.model_state["batch_stats"]["BatchNorm_0"]
    for name in ("mean", "var"):
        np.testing.assert_allclose(stats1[name], stats4[name], atol=1e-5)
    assert np.abs(np.asarray(stats1["mean"])).max() > 0.1  # moved from their init (0)
    assert "batch_stats" not in one.params  # the optimizer never sees them


def test_evaluation_uses_the_running_statistics_and_they_are_checkpointed(tmp_path):
    state, _, mesh, model, task, shardings = run(4)
    step = loop.make_eval_step(model, task, mesh, shardings.params, shardings.model_state)
    batch = next(batches(1, b=16, seed=7))
    one_odd = dict(batch, image=batch["image"].copy())
    one_odd["image"][1:] += 100.0  # the other examples change, example 0 does not
    logits = []
    for b in (batch, one_odd):
        bound = BoundModel(model, state.model_state, mutable=False)
        out, _ = bound.apply({"params": state.params}, jnp.asarray(b["image"]), train=False)
        logits.append(np.asarray(out[0]))
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)  # no batch statistics in eval
    metrics = loop.evaluate_split(
        step, model, task, state.params, iter([batch]), mesh, state.model_state
    )
    assert 0.0 <= metrics["accuracy"] <= 1.0

    ckpt = Checkpointer(tmp_path)
    ckpt.save(4, state, {"position": 4}, force=True)
    ckpt.save_best(4, state.params, {"test/accuracy": 0.5}, state.model_state)
    ckpt.wait()
    abstract = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
    for best in (False, True):
        _, params, model_state = ckpt.restore_variables(abstract, best=best)
        for a, b in zip(
            jax.tree_util.tree_leaves(state.model_state),
            jax.tree_util.tree_leaves(model_state),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    ckpt.close()
