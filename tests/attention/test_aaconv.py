"""Attention-augmented convolution (Bello et al. 2019, eqs. 1-5): the relative-to-absolute trick
against an explicit gather, the 2D relative logits and the whole layer against an O((HW)^2) loop,
d_v = 0 as the plain convolution, output shapes for odd sizes and strides."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.aaconv import (
    AttentionAugmentedConv,
    rel_to_abs,
    relative_logits_2d,
    relative_logits_naive,
)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_rel_to_abs_is_the_offset_gather(length):
    x = np.random.default_rng(length).normal(size=(2, 3, length, 2 * length - 1)).astype(np.float32)
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    expected = x[..., i, j - i + length - 1]  # key j seen from query i: offset j - i
    np.testing.assert_array_equal(rel_to_abs(jnp.asarray(x)), expected)


@pytest.mark.parametrize("height, width", [(3, 5), (4, 1), (2, 2)])
def test_relative_logits_match_the_pairwise_loop(height, width):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, height, width, 3, 4)).astype(np.float32)
    rel_h = rng.normal(size=(2 * height - 1, 4)).astype(np.float32)
    rel_w = rng.normal(size=(2 * width - 1, 4)).astype(np.float32)
    np.testing.assert_allclose(
        relative_logits_2d(jnp.asarray(q), jnp.asarray(rel_h), jnp.asarray(rel_w)),
        relative_logits_naive(q, rel_h, rel_w),
        atol=1e-5,
    )


def _naive_aaconv(params, x, features, dk, dv, heads):
    """Eqs. 1-5 with every logit l_ij of eq. 3 written out as a loop over pixel pairs."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xn = np.asarray(x, np.float64)
    b, h, w, _ = xn.shape
    conv = nn.Conv(features - dv, (3, 3), padding="SAME", use_bias=False)
    conv_out = np.asarray(conv.apply({"params": params["conv"]}, x), np.float64)
    qkv = np.einsum("bhwc,cd->bhwd", xn, p["qkv"]["kernel"][0, 0])
    dkh, dvh = dk // heads, dv // heads
    q = qkv[..., :dk].reshape(b, h * w, heads, dkh)
    k = qkv[..., dk : 2 * dk].reshape(b, h * w, heads, dkh)
    v = qkv[..., 2 * dk :].reshape(b, h * w, heads, dvh)
    logits = np.zeros((b, heads, h * w, h * w))
    for i in range(h * w):
        iy, ix = divmod(i, w)
        for j in range(h * w):
            jy, jx = divmod(j, w)
            key = k[:, j] + p["rel_width"][jx - ix + w - 1] + p["rel_height"][jy - iy + h - 1]
            logits[:, :, i, j] = np.einsum("bhd,bhd->bh", q[:, i], key) / np.sqrt(dkh)  # eq. 3
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads_out = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, h, w, dv)
    attn = np.einsum("bhwc,cd->bhwd", heads_out, p["attention_output"]["kernel"][0, 0])
    return np.concatenate([conv_out, attn], axis=-1)  # eq. 5


@pytest.mark.parametrize("height, width", [(3, 5)])
def test_layer_matches_the_naive_implementation(height, width):
    x = jax.random.normal(jax.random.key(0), (2, height, width, 6))
    layer = AttentionAugmentedConv(features=12, key_dim=8, value_dim=4, num_heads=2)
    params = layer.init(jax.random.key(1), x)["params"]
    params["rel_height"] = jax.random.normal(jax.random.key(2), params["rel_height"].shape)
    params["rel_width"] = jax.random.normal(jax.random.key(3), params["rel_width"].shape)
    np.testing.assert_allclose(
        layer.apply({"params": params}, x),
        _naive_aaconv(params, x, 12, 8, 4, 2),
        atol=2e-5,
        rtol=1e-4,
    )


def test_zero_value_channels_is_the_plain_convolution():
    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
    layer = AttentionAugmentedConv(features=8, key_dim=0, value_dim=0, strides=(2, 2))
    params = layer.init(jax.random.key(1), x)["params"]
    assert set(params) == {"conv"}
    conv = nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME", use_bias=False)
    np.testing.assert_array_equal(
        layer.apply({"params": params}, x), conv.apply({"params": params["conv"]}, x)
    )


@pytest.mark.parametrize(
    "size, strides, out_size",
    [((7, 5), (1, 1), (7, 5)), ((7, 5), (2, 2), (4, 3)), ((1, 3), (1, 1), (1, 3))],
)
def test_output_shapes_for_odd_sizes(size, strides, out_size):
    x = jnp.ones((2, *size, 4))
    layer = AttentionAugmentedConv(
        features=16, key_dim=8, value_dim=4, num_heads=4, strides=strides
    )
    out, params = jax.eval_shape(lambda x: layer.init_with_output(jax.random.key(0), x), x)
    assert out.shape == (2, *out_size, 16)
    assert params["params"]["rel_height"].shape == (2 * out_size[0] - 1, 2)
    assert params["params"]["rel_width"].shape == (2 * out_size[1] - 1, 2)


def test_relative_logits_depend_only_on_offsets():
    # The same query at every pixel: the logit from pixel i to pixel i + d is then the same for
    # every i that has such a neighbour (the translation equivariance of sec. 3.1.1).
    rng = np.random.default_rng(1)
    h, w = 4, 5
    q = np.broadcast_to(rng.normal(size=(1, 1, 1, 1, 3)), (1, h, w, 1, 3)).astype(np.float32)
    rel_h = rng.normal(size=(2 * h - 1, 3)).astype(np.float32)
    rel_w = rng.normal(size=(2 * w - 1, 3)).astype(np.float32)
    logits = np.asarray(relative_logits_2d(jnp.asarray(q), jnp.asarray(rel_h), jnp.asarray(rel_w)))
    for dy, dx in [(0, 1), (1, 0), (1, -2), (-3, 4)]:
        values = [
            logits[0, 0, iy * w + ix, (iy + dy) * w + ix + dx]
            for iy in range(h)
            for ix in range(w)
            if 0 <= iy + dy < h and 0 <= ix + dx < w
        ]
        np.testing.assert_allclose(values, values[0], rtol=1e-6)
        np.testing.assert_allclose(
            values[0], q[0, 0, 0, 0] @ (rel_h[dy + h - 1] + rel_w[dx + w - 1]), rtol=1e-5
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(features=8, key_dim=4, value_dim=8), "value_dim"),
        (dict(features=8, key_dim=6, value_dim=4, num_heads=4), "divisible by num_heads"),
    ],
)
def test_bad_sizes_are_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionAugmentedConv(**kwargs)
