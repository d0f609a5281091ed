"""ResNet (He et al. 2016) and its attention variants (published parameter counts in
test_param_counts.py): stage outputs, the placement of SE and non-local blocks, AA-conv stages,
pluggable norms (batch norm in training and evaluation, on one and four devices; frozen batch
norm), torch's padding, config errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.channel import se_param_count
from attn_jax.models import build_model, count_params
from attn_jax.models.resnet import (
    PUBLISHED_PARAMS,
    FrozenBatchNorm,
    GroupNorm,
    ResidualBlock,
    ResNet,
    make_norm,
)


def _abstract_params(model, shape):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))["params"]


def test_se_adds_one_block_per_residual_block():
    # 3, 4, 6, 3 bottleneck blocks with 256, 512, 1024, 2048 output channels.
    extra = sum(
        n * se_param_count(c) for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048), strict=True)
    )
    assert extra == PUBLISHED_PARAMS["se_resnet50"] - PUBLISHED_PARAMS["resnet50"] == 2_530_992


def test_frozen_batch_norm_has_no_parameters_only_constants():
    model = build_model(
        dict(name="resnet", variant="resnet50", num_classes=1000, norm="frozen_batch")
    )
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    # The 26,560 normalised channels of ResNet-50 each lose a scale and a bias (DETR's buffers).
    assert count_params(variables["params"]) == PUBLISHED_PARAMS["resnet50"] - 53_120
    assert count_params(variables["batch_stats"]) == 4 * 26_560


def test_stage_outputs_of_the_imagenet_backbone():
    model = build_model(dict(name="resnet", variant="resnet50", num_classes=0))
    feats, aux = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0], jnp.zeros((2, 224, 224, 3))
    )
    assert feats.shape == (2, 2048)
    assert {k: v.shape for k, v in aux.items()} == {
        "stem": (2, 56, 56, 64),
        "stage1": (2, 56, 56, 256),
        "stage2": (2, 28, 28, 512),
        "stage3": (2, 14, 14, 1024),
        "stage4": (2, 7, 7, 2048),
        "pre_logits": (2, 2048),
    }
    assert "head" not in _abstract_params(model, (1, 224, 224, 3))


@pytest.mark.parametrize("size, maps", [((8, 8), [8, 4, 2]), ((9, 7), [(9, 7), (5, 4), (3, 2)])])
def test_small_stem_keeps_the_resolution(size, maps):
    model = build_model(dict(name="resnet", variant="digits", num_classes=10))
    (logits, aux), _ = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x), jnp.zeros((2, *size, 1))
    )
    assert logits.shape == (2, 10)
    for s, m in enumerate(maps, start=1):
        hw = m if isinstance(m, tuple) else (m, m)
        assert aux[f"stage{s}"].shape == (2, *hw, 32 * 2 ** (s - 1))


def _tiny(**kwargs):
    kwargs.setdefault("norm", "group")
    return ResNet(
        num_classes=10,
        stage_sizes=(1, 1),
        block="basic",
        width=8,
        stem="small",
        norm_groups=4,
        **kwargs,
    )


def test_se_sits_on_the_residual_branch_before_the_addition():
    # With W_2 = 0, b_2 = 0 the gates are 0.5: the SE block then equals the plain block whose
    # last norm (the end of the residual branch) has its scale and bias halved.
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
    norm = functools.partial(GroupNorm, groups=4)
    se_block = ResidualBlock(8, norm=norm, attention="se", se_reduction=2)
    params = se_block.init(jax.random.key(1), x)["params"]
    params["norm2"] = jax.tree.map(lambda p: p + 0.3, params["norm2"])  # a non-trivial bias
    params["se"]["expand"] = jax.tree.map(jnp.zeros_like, params["se"]["expand"])
    plain = {k: v for k, v in params.items() if k != "se"}
    plain["norm2"] = jax.tree.map(lambda p: 0.5 * p, params["norm2"])
    np.testing.assert_allclose(
        se_block.apply({"params": params}, x),
        ResidualBlock(8, norm=norm).apply({"params": plain}, x),
        atol=1e-6,
    )


@pytest.mark.parametrize("norm", ["group", "none"])
def test_non_local_block_leaves_the_network_unchanged_at_init(norm):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    with_nl = _tiny(non_local_stages=(2,), norm=norm)
    params = with_nl.init(jax.random.key(1), x)["params"]
    assert "stage2_non_local" in params
    plain_params = {k: v for k, v in params.items() if "non_local" not in k}
    logits, _ = with_nl.apply({"params": params}, x)
    plain_logits, _ = _tiny(norm=norm).apply({"params": plain_params}, x)
    np.testing.assert_array_equal(logits, plain_logits)


def test_aa_stages_replace_the_3x3_convolutions():
    x = jnp.zeros((2, 8, 8, 1))
    model = _tiny(aa_stages=(2,), aa_heads=2, aa_key_fraction=0.5, aa_value_fraction=0.25)
    params = _abstract_params(model, x.shape)
    assert "kernel" in params["stage1_block0"]["conv1"]  # plain conv in stage 1
    aa = params["stage2_block0"]["conv1"]  # 16 channels: d_k = 8, d_v = 4, maps 4x4
    assert aa["conv"]["kernel"].shape == (3, 3, 8, 12)
    assert aa["qkv"]["kernel"].shape == (1, 1, 8, 20)
    assert aa["rel_height"].shape == (7, 4)
    logits, _ = jax.eval_shape(model.apply, {"params": params}, x)
    assert logits.shape == (2, 10)


def test_frozen_batch_norm_uses_supplied_constants_and_is_identity_without():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
    layer = FrozenBatchNorm()
    variables = layer.init(jax.random.key(1), x)
    assert "params" not in variables
    assert set(variables["batch_stats"]) == {"scale", "bias", "mean", "var"}
    np.testing.assert_array_equal(layer.apply({}, x), x)
    stats = {
        "scale": jnp.arange(1.0, 5.0),
        "bias": jnp.full((4,), 0.5),
        "mean": jnp.full((4,), 2.0),
        "var": jnp.full((4,), 3.0),
    }
    out = layer.apply({"batch_stats": stats}, x)
    expected = (x - 2.0) / np.sqrt(3.0 + 1e-5) * stats["scale"] + 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_group_norm_normalises_each_group():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    layer = GroupNorm(groups=4)  # gcd(4, 6) = 2 groups of 3 channels
    y = layer.apply(layer.init(jax.random.key(1), x), x).reshape(2, 16, 2, 3)
    np.testing.assert_allclose(y.mean(axis=(1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 3)), 1.0, atol=1e-3)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(block="bottle"), "block='bottle'"),
        (dict(non_local_stages=(4,)), "non_local_stages"),
        (dict(aa_stages=(0,)), "aa_stages"),
        (dict(block_attention="cbam"), "block_attention"),
        (dict(norm="layer"), "norm='layer'"),
        (dict(padding="valid"), "padding='valid'"),
        (dict(variant="resnet51"), "unknown ResNet variant"),
        (dict(num_classes=None), "num_classes"),
    ],
)
def test_bad_configs_are_reported_in_one_line(fields, message):
    cfg = dict(name="resnet", variant="digits", num_classes=10)
    cfg.update(fields)
    with pytest.raises(ValueError, match=message) as err:
        build_model(cfg)
    assert "\n" not in str(err.value)


def test_images_without_a_channel_axis_are_reported():
    model = build_model(dict(name="resnet", variant="digits", num_classes=10))
    with pytest.raises(ValueError, match="add a channel axis"):
        model.init(jax.random.key(0), jnp.zeros((2, 8, 8)))


def test_block_attention_none_is_accepted_from_configs():
    model = build_model(
        dict(name="resnet", variant="se_resnet50", num_classes=10, block_attention="none")
    )
    assert model.block_attention is None


# -- batch norm and padding ----------------------------------------------------------------------
def test_batch_norm_trains_on_the_batch_and_evaluates_on_running_averages():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (16, 4, 4, 3))
    train, evaluate = make_norm("batch", train=True)(), make_norm("batch", train=False)()
    variables = train.init(jax.random.key(1), x)
    assert set(variables["params"]) == {"scale", "bias"}
    y, updates = train.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    # torch's momentum 0.1: r = 0.9 r + 0.1 batch, from mean 0 and var 1.
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)
    out = evaluate.apply({"params": variables["params"], **updates}, x)
    want = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_a_batch_norm_resnet_depends_on_the_batch_only_in_training():
    model = _tiny(norm="batch")
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    others = x.at[1:].add(5.0)  # example 0 unchanged, the rest of its batch moved
    variables = model.init(jax.random.key(1), x)
    assert "batch_stats" in variables

    def first(images, train):
        (logits, _), _ = model.apply(variables, images, train=train, mutable=["batch_stats"])
        return np.asarray(logits[0])

    np.testing.assert_array_equal(first(x, False), first(others, False))
    assert np.abs(first(x, True) - first(others, True)).max() > 1e-3


def test_frozen_batch_norm_keeps_its_constants_through_a_training_apply():
    model = _tiny(norm="frozen_batch")
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    variables = model.init(jax.random.key(1), x)
    stats = jax.tree.map(lambda v: v + 0.5, variables["batch_stats"])
    _, updates = model.apply(
        {"params": variables["params"], "batch_stats": stats}, x, train=True, mutable=True
    )
    for got, want in zip(
        jax.tree.leaves(updates["batch_stats"]), jax.tree.leaves(stats), strict=True
    ):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [8, 7])
def test_symmetric_padding_is_torchs_and_same_shifts_even_maps(size):
    torch = pytest.importorskip("torch")
    block = functools.partial(ResidualBlock, 4, strides=2, norm=make_norm("none"))
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    params = block().init(jax.random.key(1), x)["params"]

    def conv1(padding):
        _, inter = block(padding=padding).apply(
            {"params": params}, x, capture_intermediates=True, mutable=["intermediates"]
        )
        return np.asarray(inter["intermediates"]["conv1"]["__call__"][0])

    kernel = np.asarray(params["conv1"]["kernel"]).transpose(3, 2, 0, 1)  # [O, I, kh, kw]
    want = torch.nn.functional.conv2d(
        torch.from_numpy(np.array(x).transpose(0, 3, 1, 2)),
        torch.from_numpy(np.array(kernel)),
        stride=2,
        padding=1,
    )
    want = want.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(conv1("symmetric"), want, atol=1e-5)
    same = conv1("same")
    assert same.shape == want.shape
    # SAME pads (0, 1) on an even map (a shifted grid) and (1, 1) on an odd one.
    if size % 2 == 0:
        assert np.abs(same - want).max() > 1e-2
    else:
        np.testing.assert_allclose(same, want, atol=1e-5)


@pytest.fixture(scope="module")
def bn_runs():
    """Losses and final states of 10 SGD steps of a tiny batch-norm ResNet on 1 and 4 devices."""
    import optax
    from jax.sharding import Mesh

    from attn_jax.tasks.classification import Classification
    from attn_jax.train import loop
    from attn_jax.train import sharding as shard_lib

    model, task, tx = _tiny(norm="batch"), Classification(num_classes=10), optax.sgd(0.05)
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": rng.normal(1.0, 2.0, (16, 8, 8, 1)).astype(np.float32),
            "label": rng.integers(0, 10, 16).astype(np.int32),
            "mask": np.ones(16, bool),
        }
        for _ in range(10)
    ]
    init_fn = loop.make_init_fn(model, tx, (jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32),))
    runs = {}
    for devices in (1, 4):
        mesh = Mesh(np.asarray(jax.devices()[:devices]).reshape(-1, 1), ("data", "model"))
        _, shardings = loop._state_shardings(init_fn, mesh)
        state = jax.jit(init_fn, out_shardings=shardings)(jax.random.key(0))
        step = loop.make_train_step(model, task, tx, optax.constant_schedule(0.05), mesh, shardings)
        losses = []
        for batch in batches:
            batch = shard_lib.to_global(batch, shard_lib.batch_sharding(mesh))
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        runs[devices] = (losses, state)
    return runs


def test_batch_norm_resnet_trains_alike_on_one_and_four_devices(bn_runs):
    (losses1, state1), (losses4, state4) = bn_runs[1], bn_runs[4]
    np.testing.assert_allclose(losses1, losses4, atol=1e-5)
    assert losses1[-1] < losses1[0]
    stats1, stats4 = state1.model_state["batch_stats"], state4.model_state["batch_stats"]
    for a, b in zip(jax.tree.leaves(stats1), jax.tree.leaves(stats4), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The statistics moved away from their start (mean 0, var 1) and the optimizer never saw them.
    assert np.abs(np.asarray(stats1["stem_norm"]["mean"])).max() > 0.05
    assert "mean" not in str(jax.tree_util.tree_structure(state1.params))
