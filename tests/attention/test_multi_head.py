"""MultiHeadAttention: Flax parity, padding invariance, causality, permutation equivariance."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from attn_jax.models import count_params

B, T, TK, D, HEADS = 2, 6, 4, 8, 2


def compiled_apply(module: nn.Module):
    """module.apply as one compiled function per static configuration (op-by-op is slow)."""

    def apply(params, x, kv=None, *, mask=None, sow=False, causal=False, train=False, rngs=None):
        return module.apply(
            {"params": params},
            x,
            kv,
            mask=mask,
            sow_weights=sow,
            causal=causal,
            train=train,
            rngs=rngs,
        )

    return jax.jit(apply, static_argnames=("sow", "causal", "train"))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, D), np.float32)
    memory = rng.standard_normal((B, TK, 5), np.float32)
    return jnp.asarray(x), jnp.asarray(memory)


@pytest.fixture(scope="module")
def mha_and_params(inputs):
    x, _ = inputs
    mha = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D)
    return compiled_apply(mha), jax.jit(mha.init)(jax.random.key(1), x)["params"]


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: a.shape, tree)


def test_param_tree_and_outputs_equal_flax(inputs, mha_and_params):
    x, memory = inputs
    apply, params = mha_and_params
    flax_mha = nn.MultiHeadDotProductAttention(
        num_heads=HEADS, qkv_features=12, out_features=D, deterministic=True
    )
    assert _shapes(params) == _shapes(jax.eval_shape(flax_mha.init, jax.random.key(1), x)["params"])
    assert params["query"]["kernel"].shape == (D, HEADS, 6)
    assert params["out"]["kernel"].shape == (HEADS, 6, D)

    pad = padding_mask(jnp.arange(T)[None, :] < jnp.array([[T], [3]]))
    for mask in (None, pad, pad & causal_mask(T)):
        for sow in (False, True):
            ours = apply(params, x, mask=mask, sow=sow)
            theirs = jax.jit(flax_mha.apply)({"params": params}, x, mask=mask)
            np.testing.assert_allclose(ours, theirs, atol=1e-5)

    cross = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D)
    flax_cross = nn.MultiHeadDotProductAttention(
        num_heads=HEADS, qkv_features=12, out_features=D, deterministic=True
    )
    cross_params = jax.jit(cross.init)(jax.random.key(2), x, memory)["params"]
    assert _shapes(cross_params) == _shapes(
        jax.eval_shape(flax_cross.init, jax.random.key(2), x, memory)["params"]
    )
    memory_pad = padding_mask(jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool))
    for sow in (False, True):
        ours = compiled_apply(cross)(cross_params, x, memory, mask=memory_pad, sow=sow)
        theirs = jax.jit(flax_cross.apply)({"params": cross_params}, x, memory, mask=memory_pad)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_param_count_d512_8_heads():
    mha = MultiHeadAttention(num_heads=8)
    shapes = jax.eval_shape(mha.init, jax.random.key(0), jnp.zeros((1, 3, 512)))
    assert count_params(shapes["params"]) == 4 * (512 * 512 + 512) == 1_050_624


def test_sown_weights_masked_keys_exactly_zero_rows_sum_to_one(inputs, mha_and_params):
    x, _ = inputs
    _, params = mha_and_params
    mha = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D)
    valid = jnp.arange(T)[None, :] < jnp.array([[T], [3]])

    @jax.jit
    def sown(params, x, mask):
        _, state = mha.apply(
            {"params": params}, x, mask=mask, sow_weights=True, mutable=["intermediates"]
        )
        return state["intermediates"]["attention"][0]

    weights = sown(params, x, padding_mask(valid))
    assert weights.shape == (B, HEADS, T, T)
    assert bool(jnp.all(weights[1, :, :, 3:] == 0.0))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # No sow unless asked (the fused path runs); the field turns it on like the call kwarg.
    _, state = jax.eval_shape(
        lambda p, x: mha.apply({"params": p}, x, mutable=["intermediates"]), params, x
    )
    assert not state.get("intermediates")
    sowing = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D, sow_weights=True)
    _, state = jax.eval_shape(
        lambda p, x: sowing.apply({"params": p}, x, mutable=["intermediates"]), params, x
    )
    assert state["intermediates"]["attention"][0].shape == (B, HEADS, T, T)


@pytest.mark.parametrize("sow", [False, True])
def test_appended_masked_padding_changes_nothing(inputs, mha_and_params, sow):
    x, _ = inputs
    apply, params = mha_and_params
    lengths = jnp.array([T, 4])
    real = jnp.arange(T)[None, :] < lengths[:, None]
    base = apply(params, x, mask=padding_mask(real), sow=sow)

    extra = 3
    junk = 100.0 * np.random.default_rng(3).standard_normal((B, extra, D), np.float32)
    padded = jnp.concatenate([x, junk], axis=1)
    padded_real = jnp.arange(T + extra)[None, :] < lengths[:, None]
    mask = padding_mask(padded_real)
    out = apply(params, padded, mask=mask, sow=sow)
    keep = real[..., None]
    np.testing.assert_allclose(jnp.where(keep, out[:, :T], 0), jnp.where(keep, base, 0), atol=1e-5)

    @jax.jit
    def grad_wrt_inputs(inputs):
        def loss(inputs):
            y = apply(params, inputs, mask=mask, sow=sow)
            return jnp.sum(jnp.where(padded_real[..., None], y, 0.0) ** 2)

        return jax.grad(loss)(inputs)

    grad = grad_wrt_inputs(padded)
    assert bool(jnp.all(jnp.where(padded_real[..., None], 0.0, grad) == 0.0))
    assert bool(jnp.any(grad[:, :4] != 0.0))


@pytest.mark.parametrize("sow", [False, True])
def test_fully_masked_row_no_nan(inputs, mha_and_params, sow):
    x, _ = inputs
    apply, params = mha_and_params
    mask = padding_mask(jnp.array([[True] * T, [False] * T]))

    def loss(x):
        return jnp.sum(apply(params, x, mask=mask, sow=sow) ** 2)

    value, grad = jax.jit(jax.value_and_grad(loss))(x)
    assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("sow", [False, True])
def test_causal_output_ignores_future(inputs, mha_and_params, sow):
    x, _ = inputs
    apply, params = mha_and_params

    def f(x):
        return apply(params, x, causal=True, sow=sow)

    jac = jax.jit(jax.jacrev(f))(x[:1])[0, :, :, 0]  # [Tq, D_out, T_in, D_in]
    for i in range(T):
        assert bool(jnp.all(jac[i, :, i + 1 :] == 0.0))
        assert bool(jnp.any(jac[i, :, : i + 1] != 0.0))
    perturbed = x.at[:, 3:].add(5.0)
    np.testing.assert_allclose(f(perturbed)[:, :3], f(x)[:, :3], atol=1e-6)


def test_self_attention_is_permutation_equivariant(inputs, mha_and_params):
    x, _ = inputs
    apply, params = mha_and_params
    perm = jnp.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(apply(params, x[:, perm]), apply(params, x)[:, perm], atol=1e-5)


def test_one_head_identity_projections_is_plain_attention(inputs):
    x, _ = inputs
    mha = MultiHeadAttention(num_heads=1, use_bias=False)
    eye = jnp.eye(D)
    params = {
        "query": {"kernel": eye[:, None, :]},
        "key": {"kernel": eye[:, None, :]},
        "value": {"kernel": eye[:, None, :]},
        "out": {"kernel": eye[None]},
    }
    assert _shapes(params) == _shapes(jax.eval_shape(mha.init, jax.random.key(0), x)["params"])
    out = compiled_apply(mha)(params, x)
    xs = np.asarray(x, np.float64)
    logits = np.einsum("bqd,bkd->bqk", xs, xs) / np.sqrt(D)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, w @ xs, atol=1e-5)
    x4 = x[:, :, None]  # [B, T, 1, D]: one head of width D
    np.testing.assert_allclose(out, scaled_dot_product_attention(x4, x4, x4)[:, :, 0], atol=1e-6)


def test_dropout_only_in_train(inputs, mha_and_params):
    x, _ = inputs
    _, params = mha_and_params
    apply = compiled_apply(
        MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D, dropout_rate=0.5)
    )
    eval_a = apply(params, x, rngs={"dropout": jax.random.key(1)})
    eval_b = apply(params, x, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(eval_a, eval_b)
    np.testing.assert_array_equal(eval_a, mha_and_params[0](params, x))
    train_a = apply(params, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b = apply(params, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, train_b)


def test_attention_fn_hook_is_used(inputs, mha_and_params):
    x, _ = inputs
    _, params = mha_and_params
    calls = []

    def spy(q, k, v, **kwargs):
        calls.append(q.shape)
        return scaled_dot_product_attention(q, k, v, **kwargs)

    mha = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D, attention_fn=spy)
    jax.eval_shape(lambda p, x: mha.apply({"params": p}, x), params, x)
    assert calls == [(B, T, HEADS, 6)]


def test_kv_cache_step_by_step_equals_causal_full_pass(inputs, mha_and_params):
    x, memory = inputs
    apply, params = mha_and_params
    mha = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D)
    full = apply(params, x, causal=True)

    # The creating call sees the full length; its 'cache' holds no parameters.
    _, state = mha.apply({"params": params}, x, decode=True, mutable=["cache"])
    cache = state["cache"]
    assert set(cache) == {"cached_key", "cached_value", "cache_index"}
    assert cache["cached_key"].shape == (B, T, HEADS, 6)

    @jax.jit
    def step(cache, x_t):
        return mha.apply({"params": params, "cache": cache}, x_t, decode=True, mutable=["cache"])

    outs = []
    for t in range(T):
        out, state = step(cache, x[:, t : t + 1])
        cache = state["cache"]
        outs.append(out)
    assert int(cache["cache_index"]) == T
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)

    # Cross-attention caches the projected memory and gives the uncached result at every step.
    cross = MultiHeadAttention(num_heads=HEADS, qkv_features=12, out_features=D)
    cross_params = jax.jit(cross.init)(jax.random.key(2), x, memory)["params"]
    memory_pad = padding_mask(jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool))
    plain = compiled_apply(cross)(cross_params, x, memory, mask=memory_pad)
    _, state = cross.apply(
        {"params": cross_params}, x, memory, mask=memory_pad, decode=True, mutable=["cache"]
    )
    out, weights = cross.apply(
        {"params": cross_params, "cache": state["cache"]},
        x[:, 2:3],
        0.0 * memory,  # ignored once cached
        mask=memory_pad,
        decode=True,
        return_weights=True,
    )
    np.testing.assert_allclose(out, plain[:, 2:3], atol=1e-5)
    assert weights.shape == (B, HEADS, 1, TK) and bool(jnp.all(weights[1, :, :, 1:] == 0.0))
