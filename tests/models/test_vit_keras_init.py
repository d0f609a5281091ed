"""`weight_init="keras"`: the textbook's Keras ViT initialized as Keras initializes it, checked
against glorot_uniform's std sqrt(2 / (fan_in + fan_out)) on Keras' own kernel shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import build_model
from attn_jax.train.optim import param_path


def _keras_fans(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras' fans of the kernel this parameter is in the Keras example."""
    if name == "embedding/kernel":  # a Dense on the flattened P x P x C patch
        return math.prod(shape[:-1]), shape[-1]
    # Keras' rule: the last two axes times the product of the others (EinsumDense [D, H, Dh],
    # [H, Dh, D]; plain [in, out] for Dense).
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


@pytest.fixture(scope="module")
def keras_params():
    # The textbook preset's widths; two of its six blocks keep the compile short.
    cfg = {"name": "vit", "variant": "textbook_cifar10", "num_classes": 10, "depth": 2}
    model = build_model(dict(cfg, weight_init="keras"))
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    return {
        param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }


def test_kernels_have_glorot_uniform_std_on_keras_fans(keras_params):
    kernels = {n: x for n, x in keras_params.items() if n.endswith("kernel")}
    # patch Dense, 2 x (q, k, v, out, fc1, fc2), two hidden head layers and the output layer
    assert len(kernels) == 1 + 2 * 6 + 3
    for name, x in kernels.items():
        fan_in, fan_out = _keras_fans(name, x.shape)
        expected = math.sqrt(2.0 / (fan_in + fan_out))
        assert abs(x.std() / expected - 1) < 0.1, (name, x.shape, x.std(), expected)
        assert np.abs(x).max() <= math.sqrt(3) * expected * (1 + 1e-6), name  # uniform bound
    # Keras' multi-head fans are not those of the flattened matrix: the query kernel [64, 8, 8]
    # has std sqrt(2 / 1024), not sqrt(2 / 128).
    query = keras_params["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
    assert abs(query.std() / math.sqrt(2 / 1024) - 1) < 0.1


def test_biases_zero_norms_identity_embeddings_uniform(keras_params):
    for name, x in keras_params.items():
        if name.endswith("bias"):
            np.testing.assert_array_equal(x, 0.0, err_msg=name)
        elif name.endswith("scale"):
            np.testing.assert_array_equal(x, 1.0, err_msg=name)
    pos = keras_params["Transformer/posembed_input/pos_embedding"]
    assert pos.shape == (1, 64, 64)
    assert np.abs(pos).max() <= 0.05 and pos.std() == pytest.approx(0.05 / math.sqrt(3), rel=0.1)


def test_official_init_is_the_default_and_unknown_schemes_are_named():
    cfg = dict(name="vit", num_classes=3, patch_size=4, hidden_size=8, depth=1, num_heads=2)
    assert build_model(dict(cfg, mlp_dim=16)).weight_init == "official"
    with pytest.raises(ValueError, match="weight_init='torch' is not one of"):
        build_model(dict(cfg, mlp_dim=16, weight_init="torch"))
