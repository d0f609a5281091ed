"""Parameter sharding by config on 4 forced host devices: FSDP (and FSDP + tensor parallelism on
a 2 x 2 mesh) train the same model as replicated parameters, step for step, while each device
holds about a quarter of the parameter and optimizer bytes; a checkpoint written under one
sharding and device count restores under another with identical values."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from attn_jax import config as config_lib
from attn_jax import data as data_lib
from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib
from attn_jax.train.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "vit": (
        "vit_digits.py",
        ["--config.model.hidden_size=64", "--config.model.mlp_dim=128", "--config.model.depth=2"],
    ),
    "swin": ("swin_digits.py", ["--config.model.depths=(2, 2)", "--config.model.num_heads=(2, 4)"]),
}
STEPS = 10


def setup(name, tmp_path, sharding, model_axis=1, devices=None):
    path, extra = MODELS[name]
    config = config_lib.load_config(ROOT / "experiments" / path)
    config_lib.apply_overrides(
        config,
        [
            f"--config.data.data_dir={tmp_path / 'tfds'}",
            "--config.total_steps=100",
            "--config.batch_size=32",
            "--config.optim.warmup_steps=0",
            "--config.model.dropout_rate=0.0"
            if name == "vit"
            else "--config.model.drop_path_rate=0",
            f"--config.sharding={sharding}",
            f"--config.mesh.model={model_axis}",
            *extra,
        ],
    )
    exp = loop.build_experiment(config)
    mesh = shard_lib.mesh_from_config(config)
    if devices is not None:  # fewer devices: another topology in this process
        mesh = jax.sharding.Mesh(
            np.asarray(jax.devices()[:devices]).reshape(-1, 1), mesh.axis_names
        )
    tx, schedule = loop.make_optimizer(config.optim, exp.total_steps)
    init_fn = loop.make_init_fn(exp.model, tx, exp.init_inputs())
    abstract, shardings = loop._shardings_for(config, exp, init_fn, mesh)
    return config, exp, mesh, tx, schedule, init_fn, abstract, shardings


def train(name, tmp_path, sharding, model_axis=1):
    config, exp, mesh, tx, schedule, init_fn, _, shardings = setup(
        name, tmp_path, sharding, model_axis
    )
    state = jax.jit(init_fn, out_shardings=shardings)(jax.random.key(0))
    step = loop.make_train_step(exp.model, exp.task, tx, schedule, mesh, shardings)
    batches = iter(
        data_lib.make_dataset(
            config.data, config.data.train_split, train=True, global_batch_size=32, seed=0
        )
    )
    losses = []
    for _ in range(STEPS):
        batch = shard_lib.to_global(next(batches), shard_lib.batch_sharding(mesh))
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, state


def device_bytes(state) -> tuple[int, int, int]:
    """(bytes of the whole state, bytes on device 0, bytes of leaves left replicated)."""
    total = on_device = replicated = 0
    for leaf in jax.tree_util.tree_leaves(state):
        nbytes = leaf.size * leaf.dtype.itemsize
        total += nbytes
        shard = next(s for s in leaf.addressable_shards if s.device == jax.devices()[0])
        on_device += shard.data.size * leaf.dtype.itemsize
        replicated += nbytes if leaf.sharding.is_fully_replicated else 0
    return total, on_device, replicated


@pytest.fixture(scope="module", params=["vit", "swin"])
def replicated_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    return request.param, tmp, train(request.param, tmp, "replicated")


@pytest.mark.parametrize("sharding, model_axis", [("fsdp", 1)])
def test_sharded_training_equals_replicated_with_a_quarter_of_the_bytes(
    replicated_run, sharding, model_axis
):
    name, tmp, (reference, _) = replicated_run
    losses, state = train(name, tmp, sharding, model_axis)
    assert max(reference) - min(reference) > 1e-3  # the losses move
    np.testing.assert_allclose(losses, reference, atol=1e-5, rtol=0)
    total, on_device, replicated = device_bytes(state)
    assert on_device <= total / 4 + replicated, (total, on_device, replicated)
    assert replicated < 0.1 * total  # only small leaves (biases, norms, scalars) stay whole


def test_a_checkpoint_restores_under_another_sharding_and_device_count(tmp_path):
    _, _, _, _, _, init_fn, _, fsdp = setup("vit", tmp_path, "fsdp")
    state = jax.jit(init_fn, out_shardings=fsdp)(jax.random.key(1))
    ckpt = Checkpointer(tmp_path / "run")
    ckpt.save(1, state, {"position": 1}, force=True)
    ckpt.wait()
    ckpt.close()
    for sharding, model_axis, devices in (("replicated", 1, 1), ("fsdp_tp", 2, None)):
        *_, abstract, shardings = setup("vit", tmp_path, sharding, model_axis, devices)
        reader = Checkpointer(tmp_path / "run")
        step, restored, data = reader.restore_latest(abstract)
        reader.close()
        assert step == 1 and data == {"position": 1}
        for a, b, s in zip(
            jax.tree_util.tree_leaves(state),
            jax.tree_util.tree_leaves(restored),
            jax.tree_util.tree_leaves(shardings),
            strict=True,
        ):
            assert b.sharding == s
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
