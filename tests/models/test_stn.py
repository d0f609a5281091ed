"""The ST-CNN (Jaderberg et al. 2015): identity at initialisation, the transformed image feeds the
classifier, hand-computed parameter count, gradients reach the localisation net, its figure."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.attention.spatial_transformer import spatial_transform
from attn_jax.figures.examples import draw_examples
from attn_jax.models import build_model, count_params
from attn_jax.models.cnn import CNN

STN_CFG = {
    "name": "stn",
    "loc_features": (8, 16),
    "loc_kernel_size": 5,
    "loc_dense": 32,
    "features": (32, 64),
    "kernel_size": 3,
    "dense": 128,
    "num_classes": 10,
}


@pytest.fixture(scope="module")
def stn_and_params():
    model = build_model(STN_CFG)
    x = jax.random.normal(jax.random.key(0), (4, 24, 24, 1))
    # Jitted once per shape: eager Flax dispatches every op on its own, several times slower.
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    return model, params, x


@pytest.fixture(scope="module")
def apply_stn(stn_and_params):
    return jax.jit(stn_and_params[0].apply)


@pytest.fixture(scope="module")
def apply_cnn():
    return jax.jit(CNN(features=(32, 64), kernel_size=3, dense=128, num_classes=10).apply)


def test_parameter_count_by_hand(stn_and_params):
    _, params, _ = stn_and_params
    # Localisation net on 24x24x1: conv 5*5*1*8+8 = 208, conv 5*5*8*16+16 = 3,216,
    # 6*6*16 = 576 -> dense 576*32+32 = 18,464, theta 32*6+6 = 198: 22,086.
    # Classifier ("cnn" on 24x24x1): 320 + 18,496 + (6*6*64*128+128 = 295,040) + 1,290 = 315,146.
    loc = count_params(params["transformer"])
    assert loc == 208 + 3_216 + 18_464 + 198 == 22_086
    assert count_params(params["classifier"]) == 320 + 18_496 + 295_040 + 1_290 == 315_146
    assert count_params(params) == 337_232


def test_identity_at_initialisation(stn_and_params, apply_stn, apply_cnn):
    _, params, x = stn_and_params
    theta_layer = params["transformer"]["localisation"]["theta"]
    np.testing.assert_array_equal(theta_layer["kernel"], 0.0)
    np.testing.assert_array_equal(theta_layer["bias"], [1, 0, 0, 0, 1, 0])
    logits, aux = apply_stn({"params": params}, x)
    np.testing.assert_array_equal(aux["theta"], np.tile([[1, 0, 0], [0, 1, 0]], (4, 1, 1)))
    np.testing.assert_array_equal(aux["transformed"], x)
    # ... so the ST-CNN starts as the plain CNN with the same classifier weights.
    cnn_logits, _ = apply_cnn({"params": params["classifier"]}, x)
    np.testing.assert_allclose(logits, cnn_logits, atol=1e-6)


def test_classifier_reads_the_transformed_image(stn_and_params, apply_stn, apply_cnn):
    _, params, x = stn_and_params
    # A localisation net that always answers "zoom out 2x and shift right by a quarter".
    theta = jnp.asarray([2.0, 0.0, 0.5, 0.0, 2.0, 0.0])
    loc = params["transformer"]["localisation"]
    params = {
        **params,
        "transformer": {"localisation": {**loc, "theta": {**loc["theta"], "bias": theta}}},
    }
    logits, aux = apply_stn({"params": params}, x)
    warped = spatial_transform(x, jnp.tile(theta, (4, 1)))
    np.testing.assert_allclose(aux["transformed"], warped, atol=1e-6)
    assert not np.allclose(aux["transformed"], x, atol=1e-2)
    cnn_logits, _ = apply_cnn({"params": params["classifier"]}, warped)
    np.testing.assert_allclose(logits, cnn_logits, atol=1e-5)


def test_gradients_reach_the_localisation_net(stn_and_params):
    model, params, x = stn_and_params
    labels = jnp.arange(4)

    def loss(p):
        logits, _ = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.jit(jax.grad(loss))(params)
    loc_grads = grads["transformer"]["localisation"]
    # Zero regressor weights still get a gradient (their input is non-zero) ...
    assert np.abs(np.asarray(loc_grads["theta"]["kernel"])).max() > 0
    assert np.abs(np.asarray(loc_grads["theta"]["bias"])).max() > 0
    # ... but the layers below it only from the second step on (dtheta/dh = W = 0).
    np.testing.assert_array_equal(loc_grads["conv0"]["kernel"], 0.0)


def test_output_size_and_any_input_size():
    model = build_model({**STN_CFG, "out_size": (12, 12), "loc_features": (4,), "loc_dense": 0})
    for shape in [(2, 24, 24, 1), (3, 17, 20, 1)]:
        x = jnp.ones(shape)
        params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
        (logits, aux) = jax.eval_shape(model.apply, {"params": params}, x)
        assert logits.shape == (shape[0], 10)
        assert aux["transformed"].shape == (shape[0], 12, 12, 1)
        assert aux["theta"].shape == (shape[0], 2, 3)


def test_plot_examples_writes_inputs_and_transformed(stn_and_params, tmp_path):
    model, params, x = stn_and_params
    batch = {"image": np.asarray(x), "label": np.arange(4), "mask": np.array([1, 1, 1, 0], bool)}
    (path,) = draw_examples(model.figure_data(params, batch), tmp_path / "plots")
    assert path == tmp_path / "plots" / "stn_transforms.png"
    assert path.stat().st_size > 1000


def test_bad_config_raises_clear_errors():
    with pytest.raises(ValueError, match="out_size must be"):
        model = build_model({**STN_CFG, "out_size": (12,)})
        model.init(jax.random.key(0), jnp.zeros((1, 24, 24, 1)))
    with pytest.raises(ValueError, match=r"stn expects images \[B, H, W, C\]"):
        model = build_model(STN_CFG)
        model.init(jax.random.key(0), jnp.zeros((24, 24, 1)))
    with pytest.raises(ValueError, match="unknown stn variant"):
        build_model({"name": "stn", "variant": "mnist"})
