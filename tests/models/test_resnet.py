"""ResNet (He et al. 2016) and its attention variants (published parameter counts in
test_param_counts.py): stage outputs, the placement of SE and non-local blocks, AA-conv stages,
pluggable norms, config errors."""

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
        (dict(norm="batch"), "norm='batch'"),
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
