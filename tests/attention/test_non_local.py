"""Non-local blocks (Wang et al. 2018, eqs. 1-6): identity at initialisation, the embedded-Gaussian
form as softmax self-attention, the other pairwise forms against explicit formulas, subsampling,
permutation equivariance."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention import scaled_dot_product_attention
from attn_jax.attention.non_local import NonLocalBlock
from attn_jax.models.resnet import GroupNorm


def _randomised(params, key, scale=0.5):
    """Every parameter redrawn from N(0, scale^2), so that W_z = 0 no longer hides the rest."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree,
        [scale * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves, strict=True)],
    )


def _conv1x1(params, x):
    return np.einsum("...c,cd->...d", x, np.asarray(params["kernel"]).reshape(x.shape[-1], -1)) + (
        np.asarray(params["bias"])
    )


@pytest.mark.parametrize(
    "mode, shape, subsample, with_norm",
    [
        ("gaussian", (2, 5, 7, 8), True, False),
        ("embedded_gaussian", (2, 5, 7, 8), False, True),
        ("dot_product", (1, 3, 5, 3, 8), True, True),
        ("concatenation", (2, 5, 7, 8), True, False),
    ],
)
def test_is_exactly_the_identity_at_init(mode, shape, subsample, with_norm):
    x = jax.random.normal(jax.random.key(0), shape)
    norm = functools.partial(GroupNorm, groups=4) if with_norm else None
    block = NonLocalBlock(mode=mode, subsample=subsample, norm=norm)
    params = block.init(jax.random.key(1), x)
    np.testing.assert_array_equal(block.apply(params, x), x)


@pytest.mark.parametrize("scale_logits", [False, True])
def test_embedded_gaussian_is_softmax_self_attention(scale_logits):
    x = jax.random.normal(jax.random.key(2), (2, 4, 5, 8))
    block = NonLocalBlock(mode="embedded_gaussian", scale_logits=scale_logits)
    params = _randomised(block.init(jax.random.key(3), x)["params"], jax.random.key(4))
    p = jax.tree.map(np.asarray, params)
    flat = np.asarray(x).reshape(2, 20, 8)
    theta, phi, g = (_conv1x1(p[n], flat)[:, :, None, :] for n in ("theta", "phi", "g"))
    if not scale_logits:  # eq. 3 has no 1/sqrt(d); undo the reference's scale
        theta = theta * math.sqrt(theta.shape[-1])
    y = scaled_dot_product_attention(jnp.asarray(theta), jnp.asarray(phi), jnp.asarray(g))
    z = _conv1x1(p["W_z"], np.asarray(y)[:, :, 0]) + flat  # eq. 6
    out = block.apply({"params": params}, x)
    np.testing.assert_allclose(out, z.reshape(x.shape), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", ["gaussian", "dot_product", "concatenation"])
def test_pairwise_forms_match_their_equations(mode):
    x = jax.random.normal(jax.random.key(5), (2, 3, 4, 6))
    block = NonLocalBlock(mode=mode, subsample=True)
    params = _randomised(block.init(jax.random.key(6), x)["params"], jax.random.key(7))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xn = np.asarray(x, np.float64)
    pooled = np.asarray(
        jax.lax.reduce_window(  # 2x2 max-pool; the odd width keeps its last column
            x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME"
        ),
        np.float64,
    )
    assert pooled.shape == (2, 2, 2, 6)
    xq, xk = xn.reshape(2, 12, 6), pooled.reshape(2, 4, 6)
    g = _conv1x1(p["g"], xk)
    if mode == "gaussian":  # eq. 2
        f = np.exp(np.einsum("bqc,bkc->bqk", xq, xk))
        weights = f / f.sum(-1, keepdims=True)
    else:
        theta, phi = _conv1x1(p["theta"], xq), _conv1x1(p["phi"], xk)
        if mode == "dot_product":  # eq. 4
            f = np.einsum("bqd,bkd->bqk", theta, phi)
        else:  # eq. 5, with the concatenation built explicitly
            w = p["concat_weight"].reshape(-1)
            f = np.zeros((2, 12, 4))
            for i in range(12):
                for j in range(4):
                    f[:, i, j] = np.maximum(np.concatenate([theta[:, i], phi[:, j]], -1) @ w, 0)
        weights = f / 4
    z = _conv1x1(p["W_z"], weights @ g) + xq
    out = block.apply({"params": params}, x)
    np.testing.assert_allclose(out, z.reshape(x.shape), atol=1e-5, rtol=1e-5)


def test_equivariant_to_permuting_positions_without_subsampling():
    x = jax.random.normal(jax.random.key(8), (1, 4, 4, 8))
    block = NonLocalBlock(mode="embedded_gaussian")
    params = _randomised(block.init(jax.random.key(9), x)["params"], jax.random.key(10))
    perm = jax.random.permutation(jax.random.key(11), 16)
    permute = lambda a: a.reshape(1, 16, 8)[:, perm].reshape(a.shape)  # noqa: E731
    np.testing.assert_allclose(
        block.apply({"params": params}, permute(x)),
        permute(block.apply({"params": params}, x)),
        atol=1e-5,
    )


def test_weights_are_sown_with_subsampled_keys():
    x = jnp.ones((2, 5, 7, 8))
    block = NonLocalBlock(subsample=True)
    params = block.init(jax.random.key(0), x)
    _, state = block.apply(params, x, mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention"]
    assert weights.shape == (2, 35, 12)  # keys on the ceil(5/2) x ceil(7/2) pooled grid
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="unknown non-local mode"):
        NonLocalBlock(mode="gausian").init(jax.random.key(0), jnp.ones((1, 2, 2, 4)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        NonLocalBlock().init(jax.random.key(0), jnp.ones((2, 4)))
