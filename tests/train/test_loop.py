"""The compiled train step: micro-batching gives the same update, and the step is the same program
on one device and on four (conftest forces four host devices)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib
from attn_jax.train.optim import make_optimizer

# Plain SGD: parameters then differ by lr x (gradient difference). Adam would divide near-zero
# gradients by their own size and turn summation-order noise into lr-sized differences.
OPTIM = {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}


def _setup(devices, *, dropout=0.0):
    model = build_model(
        {
            "name": "vit",
            "patch_size": 2,
            "hidden_size": 16,
            "depth": 1,
            "num_heads": 2,
            "mlp_dim": 32,
            "num_classes": 10,
            "dropout_rate": dropout,
        }
    )
    task = build_task({"name": "classification"}, num_classes=10)
    tx, schedule = make_optimizer(OPTIM, 10)
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    init_fn = loop.make_init_fn(model, tx, [jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32)])
    _, sharding = loop._state_shardings(init_fn, mesh)
    return model, task, tx, schedule, mesh, init_fn, sharding


def _batch(n=16):
    rng = np.random.default_rng(0)
    return {
        "image": rng.standard_normal((n, 8, 8, 1), dtype=np.float32),
        "label": rng.integers(0, 10, n).astype(np.int32),
        "mask": np.ones(n, bool),
    }


@functools.cache  # the one-device reference run is shared by the tests
def _run(devices, microbatches, steps=3, dropout=0.0):
    model, task, tx, schedule, mesh, init_fn, sharding = _setup(devices, dropout=dropout)
    state = jax.jit(init_fn, out_shardings=sharding)(jax.random.key(0))
    step = loop.make_train_step(
        model, task, tx, schedule, mesh, sharding, microbatches=microbatches
    )
    batch = shard_lib.to_global(_batch(), shard_lib.batch_sharding(mesh))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params)


@pytest.mark.parametrize("microbatches", [2, 4])
def test_microbatches_give_the_same_update(microbatches):
    whole_losses, whole = _run(devices=1, microbatches=1)
    losses, params = _run(devices=1, microbatches=microbatches)
    np.testing.assert_allclose(losses, whole_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(whole), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0]  # the update is a descent step, not a no-op


def test_microbatches_on_four_devices_match_one_device():
    one, _ = _run(devices=1, microbatches=2, dropout=0.1)
    four, _ = _run(devices=4, microbatches=2, dropout=0.1)
    np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)


def test_dropout_key_changes_every_step():
    model, task, tx, schedule, mesh, init_fn, sharding = _setup(1, dropout=0.5)
    state = jax.jit(init_fn, out_shardings=sharding)(jax.random.key(0))
    image = _batch()["image"]

    def features(step):
        key = jax.random.fold_in(state.key, step)
        _, aux = model.apply({"params": state.params}, image, train=True, rngs={"dropout": key})
        return np.asarray(aux["pre_logits"])

    assert not np.allclose(features(0), features(1))
    np.testing.assert_array_equal(features(0), features(0))


def test_batch_that_does_not_split_is_a_config_error():
    from attn_jax.config import ConfigError

    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    with pytest.raises(ConfigError, match="multiple of 8"):
        shard_lib.check_batch_size(12, mesh, microbatches=2)
    shard_lib.check_batch_size(16, mesh, microbatches=2)
    # The eval batch is sharded the same way: 250 scenes over 4 devices is named, with the fix.
    with pytest.raises(ConfigError, match=r"eval_batch_size 250 .* --config.eval_batch_size to a"):
        shard_lib.check_batch_size(250, mesh, key="eval_batch_size")
