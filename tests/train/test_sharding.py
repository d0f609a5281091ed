"""Parameter sharding by config on 4 forced host devices: FSDP (and FSDP + tensor parallelism on
a 2 x 2 mesh) train the same model as replicated parameters, step for step, while each device
holds about a quarter of the parameter and optimizer bytes; a checkpoint written under one
sharding and device count restores under another with identical values."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from attn_jax import config as config_lib
from attn_jax import data as data_lib
from attn_jax.attention import WindowAttention
from attn_jax.models.blocks import BlockNames, BlockStack
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
# Tensor parallelism (Megatron): the kernel (by the end of its path) -> its dimension split over
# the model axis: heads of the q/k/v (column) and output (row) projections, MLP hidden units.
TP_DIMS = {
    "query/kernel": 1,
    "key/kernel": 1,
    "value/kernel": 1,
    "out/kernel": 0,
    "qkv/kernel": 2,  # Swin's fused [C, 3, heads, Dh]
    "proj/kernel": 0,
    "Dense_0/kernel": 1,  # ViT's MLP names
    "Dense_1/kernel": 0,
    "fc1/kernel": 1,
    "fc2/kernel": 0,
}
TP_KERNELS = {"vit": 2 * 6, "swin": 4 * 4}  # blocks x split kernels per block


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
    """(bytes of the leaves that FSDP splits, their bytes on device 0, bytes of the small leaves
    it leaves whole on the data axis: biases, norms, scalars, tensor-parallel-only pieces)."""
    large = on_device = small = 0
    for leaf in jax.tree_util.tree_leaves(state):
        nbytes = leaf.size * leaf.dtype.itemsize
        if leaf.size < shard_lib.FSDP_MIN_SIZE:
            small += nbytes
            continue
        large += nbytes
        shard = next(s for s in leaf.addressable_shards if s.device == jax.devices()[0])
        on_device += shard.data.size * leaf.dtype.itemsize
    return large, on_device, small


def tp_split_kernels(state) -> int:
    """How many attention/MLP kernels of the parameters are split on the model axis, asserting
    that it is along their heads or hidden units."""
    count = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
        name = loop._path_name(path)
        dim = next((d for end, d in TP_DIMS.items() if name.endswith(end)), None)
        if dim is not None:
            assert leaf.sharding.spec[dim] == "model", (name, leaf.sharding.spec)
            count += 1
    return count


@pytest.fixture(scope="module", params=["vit", "swin"])
def replicated_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    return request.param, tmp, train(request.param, tmp, "replicated")


@pytest.mark.parametrize("sharding, model_axis", [("fsdp", 1), ("fsdp_tp", 2)])
def test_sharded_training_equals_replicated_with_a_quarter_of_the_bytes(
    replicated_run, sharding, model_axis
):
    name, tmp, (reference, _) = replicated_run
    losses, state = train(name, tmp, sharding, model_axis)
    assert max(reference) - min(reference) > 1e-3  # the losses move
    np.testing.assert_allclose(losses, reference, atol=1e-5, rtol=0)
    large, on_device, small = device_bytes(state)
    assert on_device <= large / 4, (large, on_device)
    assert small < 0.1 * (large + small)
    if model_axis > 1:
        assert tp_split_kernels(state) == TP_KERNELS[name]


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


def test_fsdp_takes_the_axes_tensor_parallelism_leaves_free():
    mesh = shard_lib.make_mesh(2)  # 2 x 2
    # TP on the hidden units, FSDP on data along the other dimension.
    assert shard_lib.leaf_spec((64, 128), mesh, "fsdp_tp", (None, "model")) == PartitionSpec(
        "data", "model"
    )
    # No TP: both axes on the largest dimension that 4 divides...
    assert shard_lib.leaf_spec((192, 96), mesh, "fsdp_tp") == PartitionSpec(("data", "model"), None)
    # ... or, where 4 divides none, each axis on its own dimension.
    assert shard_lib.leaf_spec((6, 1026), mesh, "fsdp_tp") == PartitionSpec("model", "data")
    # Small leaves: only tensor parallelism.
    assert shard_lib.leaf_spec((4, 16), mesh, "fsdp_tp", ("model", None)) == PartitionSpec(
        "model", None
    )


NAMES = BlockNames("ln1", "attention", "ln2", "mlp", "fc1", "fc2")


@pytest.mark.parametrize(
    "module, inputs, kernels",
    [
        (
            BlockStack(
                depth=2,
                block=dict(num_heads=2, mlp_dim=16, names=NAMES, cross_attention=True),
                scan=True,
            ),
            {"x": jnp.ones((1, 3, 8)), "memory": jnp.ones((1, 5, 8))},
            {  # a scanned stack's depth axis comes first and stays unnamed
                "block/cross_attention/key/kernel": (None, "embed", "heads", "head_dim"),
                "block/attention/out/kernel": (None, "heads", "head_dim", "embed"),
                "block/mlp/fc1/bias": (None, "mlp"),
                "block/mlp/fc2/kernel": (None, "mlp", "embed"),
                "block/ln1/scale": (),
            },
        ),
        (
            WindowAttention(2, 2),
            {"x": jnp.ones((1, 4, 4, 8))},
            {
                "qkv/kernel": ("embed", None, "heads", "head_dim"),
                "proj/kernel": ("heads", "head_dim", "embed"),
                "relative_position_bias_table": (),
            },
        ),
    ],
    ids=["scanned_decoder_stack", "window_attention"],
)
def test_logical_axes_leave_the_parameter_tree_unchanged(module, inputs, kernels):
    def init(key):
        plain = module.init(key, **inputs)["params"]
        # The rules are read while tracing: one compiled function makes both trees.
        with nn.logical_axis_rules(shard_lib.TP_RULES):
            boxed = module.init(key, **inputs)["params"]
        return plain, boxed

    plain, boxed = jax.jit(init)(jax.random.key(0))
    # Without rules (converters, checkpoints, parameter counts): plain arrays, as before.
    leaves = jax.tree_util.tree_leaves(plain, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    # With them the same names, shapes and values, boxed with their logical axes.
    unboxed = nn.unbox(boxed)
    assert jax.tree_util.tree_structure(unboxed) == jax.tree_util.tree_structure(plain)
    jax.tree_util.tree_map(np.testing.assert_array_equal, unboxed, plain)
    specs = nn.get_partition_spec(boxed)
    for path, names in kernels.items():
        spec = specs
        for key in path.split("/"):
            spec = spec[key]
        assert spec == PartitionSpec(*names), path
