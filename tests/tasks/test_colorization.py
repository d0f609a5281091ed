"""The colorization task and its model: the loss is zero for a perfect prediction and the
documented formula otherwise, padding counts for nothing, evaluation sums agree with the loss,
the input is the standardized lightness, and the Colorizer's encoder has a ViT classifier's
parameter tree (what fine-tuning loads)."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.data import colorspace
from attn_jax.errors import UserError
from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.tasks.colorization import AB_SCALE, Colorization, colorization_loss, lab_of

ENCODER = dict(patch_size=2, hidden_size=16, depth=1, num_heads=2, mlp_dim=32)


class _Fixed:
    """A stand-in model that returns a fixed prediction whatever its input."""

    def __init__(self, prediction):
        self.prediction = prediction

    def apply(self, variables, inputs, *, train, rngs=None):
        assert inputs.shape[-1] == 1
        return self.prediction, {}


def _batch(n=4, seed=0, real=None):
    rgb = jax.random.uniform(jax.random.key(seed), (n, 8, 8, 3))
    mask = jnp.ones(n, bool) if real is None else jnp.arange(n) < real
    return {"image": rgb, "mask": mask}


def test_perfect_prediction_has_zero_loss_and_zero_colour_error():
    task = Colorization(lightness_mean=50.0, lightness_std=29.0)
    batch = _batch()
    _, ab = lab_of(batch["image"])
    loss, metrics = task.loss(_Fixed(ab / AB_SCALE), None, batch, jax.random.key(0))
    assert float(loss) == pytest.approx(0.0, abs=1e-10)
    assert float(metrics["color_error"]) == pytest.approx(0.0, abs=1e-4)
    sums = task.eval_sums(_Fixed(ab / AB_SCALE), None, batch)
    assert task.finalize(sums)["loss"] == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("name", ["l2", "l1"])
def test_loss_and_colour_error_follow_their_formulas(name):
    task = Colorization(loss=name)
    batch = _batch(seed=1)
    _, ab = lab_of(batch["image"])
    prediction = jax.random.normal(jax.random.key(2), ab.shape)
    loss, metrics = task.loss(_Fixed(prediction), None, batch, jax.random.key(0))
    diff = np.asarray(prediction) - np.asarray(ab) / AB_SCALE
    per_pixel = (diff**2).sum(-1) if name == "l2" else np.abs(diff).sum(-1)
    np.testing.assert_allclose(loss, per_pixel.mean(), rtol=1e-5)
    delta_e = np.linalg.norm(np.asarray(prediction) * AB_SCALE - np.asarray(ab), axis=-1)
    np.testing.assert_allclose(metrics["color_error"], delta_e.mean(), rtol=1e-5)
    final = task.finalize(task.eval_sums(_Fixed(prediction), None, batch))
    np.testing.assert_allclose(final["loss"], per_pixel.mean(), rtol=1e-5)
    np.testing.assert_allclose(final["color_error"], delta_e.mean(), rtol=1e-5)


def test_padded_examples_count_for_nothing():
    task = Colorization()
    batch = _batch(n=6, seed=3, real=4)
    prediction = jax.random.normal(jax.random.key(4), (6, 8, 8, 2))
    _, ab = lab_of(batch["image"][:4])
    expected = ((np.asarray(prediction[:4]) - np.asarray(ab) / AB_SCALE) ** 2).sum(-1).mean()
    padded = task.loss(_Fixed(prediction), None, batch, jax.random.key(0))[0]
    np.testing.assert_allclose(padded, expected, rtol=1e-5)
    sums = task.eval_sums(_Fixed(prediction), None, batch)
    assert float(sums["pixels"]) == 4 * 64


def test_input_is_the_standardized_lightness_and_targets_the_ab_channels():
    task = Colorization(lightness_mean=40.0, lightness_std=20.0)
    rgb = np.random.default_rng(0).random((2, 8, 8, 3))
    inputs, ab = task.inputs_and_targets(jnp.asarray(rgb, jnp.float32))
    lab = colorspace.srgb_to_lab(rgb)
    np.testing.assert_allclose(inputs[..., 0], (lab[..., 0] - 40.0) / 20.0, atol=1e-3)
    np.testing.assert_allclose(ab, lab[..., 1:], atol=1e-2)
    assert colorization_loss(ab / AB_SCALE, ab, jnp.zeros(2)) == 0.0  # nothing counts


def test_grayscale_data_and_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="color_digits"):
        Colorization.init_inputs(SimpleNamespace(name="sklearn_digits", image_shape=(8, 8, 1)))
    with pytest.raises(UserError, match="loss"):
        Colorization(loss="huber")
    spec = SimpleNamespace(name="color_digits", image_shape=(8, 8, 3))
    assert Colorization.init_inputs(spec)[0].shape == (1, 8, 8, 1)


@pytest.fixture(scope="module")
def colorizer():
    model = build_model({"name": "colorizer", "encoder": ENCODER})
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    return model, params


def test_colorizer_predicts_two_channels_per_pixel_through_the_task(colorizer):
    model, params = colorizer
    task = build_task({"name": "colorization"}, num_classes=10)
    batch = _batch()
    loss, metrics = task.loss(model, params, batch, jax.random.key(1))
    assert np.isfinite(float(loss)) and float(metrics["color_error"]) > 0
    lab = task.predict_lab(model, params, batch["image"])
    assert lab.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(lab[..., 0], lab_of(batch["image"])[0][..., 0], atol=1e-3)


def test_colorizer_encoder_has_the_tree_of_a_vit_classifier(colorizer):
    _, params = colorizer
    vit = build_model(dict(name="vit", num_classes=10, posemb="sincos2d", **ENCODER))
    vit_params = vit.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    shapes = lambda tree: jax.tree_util.tree_map(jnp.shape, tree)  # noqa: E731
    without_head = {k: v for k, v in vit_params.items() if k != "head"}
    assert shapes(params["encoder"]) == shapes(without_head)
    assert set(params) == {"encoder", "decoder"}


def test_a_model_of_another_output_is_a_one_line_error():
    task = Colorization()
    with pytest.raises(UserError, match="model.name=colorizer") as e:
        task.loss(_Fixed(jnp.zeros((4, 8, 8, 3))), None, _batch(), jax.random.key(0))
    assert "\n" not in str(e.value)
