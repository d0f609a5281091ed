"""Squeeze-and-excitation (Hu et al. 2018, eqs. 2-4): reference values, the gate's fixed points,
parameter count, spatial-permutation invariance of the gates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.channel import SqueezeExcitation, excite, se_param_count, squeeze
from attn_jax.models import count_params


def _init(x, **kwargs):
    module = SqueezeExcitation(**kwargs)
    return module, module.init(jax.random.key(0), x)["params"]


def test_matches_equations_2_to_4():
    x = jax.random.normal(jax.random.key(1), (2, 5, 3, 32))
    module, params = _init(x, reduction=4)
    xn = np.asarray(x, np.float64)
    z = xn.mean(axis=(1, 2))  # eq. 2
    w1, b1 = (np.asarray(params["reduce"][k], np.float64) for k in ("kernel", "bias"))
    w2, b2 = (np.asarray(params["expand"][k], np.float64) for k in ("kernel", "bias"))
    s = 1 / (1 + np.exp(-(np.maximum(z @ w1 + b1, 0) @ w2 + b2)))  # eq. 3
    expected = xn * s[:, None, None, :]  # eq. 4
    np.testing.assert_allclose(module.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 7, 5, 16), (2, 3, 4, 4, 16), (1, 1, 1, 16)])
def test_keeps_shape_for_images_and_videos(shape):
    x = jnp.ones(shape)
    module, params = _init(x)
    assert module.apply({"params": params}, x).shape == shape


def test_excitation_of_ones_is_the_identity():
    x = jax.random.normal(jax.random.key(2), (3, 4, 4, 16))
    np.testing.assert_array_equal(excite(x, jnp.ones((3, 16))), x)
    module, params = _init(x, reduction=4)
    # A saturated gate: sigmoid(40) is exactly 1.0 in float32, whatever the squeeze gives.
    params = jax.tree.map(lambda p: p, params)
    params["expand"] = {
        "kernel": jnp.zeros_like(params["expand"]["kernel"]),
        "bias": jnp.full_like(params["expand"]["bias"], 40.0),
    }
    np.testing.assert_array_equal(module.apply({"params": params}, x), x)


def test_zero_expansion_halves_the_input():
    # W_2 = 0, b_2 = 0 gives s = sigmoid(0) = 0.5: the block is not the identity at such an init.
    x = jax.random.normal(jax.random.key(3), (2, 4, 4, 16))
    module, params = _init(x, reduction=4)
    params["expand"] = jax.tree.map(jnp.zeros_like, params["expand"])
    np.testing.assert_array_equal(module.apply({"params": params}, x), 0.5 * x)


def test_gates_ignore_where_the_pixels_are():
    x = jax.random.normal(jax.random.key(4), (2, 4, 6, 16))
    module, params = _init(x, reduction=4)
    perm = jax.random.permutation(jax.random.key(5), 24)
    shuffled = x.reshape(2, 24, 16)[:, perm].reshape(x.shape)
    out = module.apply({"params": params}, x).reshape(2, 24, 16)[:, perm].reshape(x.shape)
    np.testing.assert_allclose(module.apply({"params": params}, shuffled), out, atol=1e-6)
    np.testing.assert_allclose(squeeze(shuffled), squeeze(x), atol=1e-6)


@pytest.mark.parametrize("channels, expected", [(256, 8_464), (2048, 526_464)])
def test_parameter_count(channels, expected):
    params = jax.eval_shape(
        SqueezeExcitation().init, jax.random.key(0), jnp.ones((1, 2, 2, channels))
    )
    assert count_params(params) == se_param_count(channels) == expected


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="squeeze expects"):
        squeeze(jnp.ones((2, 16)))
