"""The feature-selection classifier: a k-of-64 pixel mask at evaluation, shared by all images,
gradients that reach the gate logits (of kept and dropped pixels), its figure, config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.figures.examples import draw_examples
from attn_jax.models import build_model
from attn_jax.tasks.classification import Classification


@pytest.fixture(scope="module")
def model_and_params():
    model = build_model(
        {"name": "feature_select", "num_classes": 10, "k": 6, "hidden_sizes": (32,)}
    )
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 8, 8, 1)))["params"]
    return model, params


@pytest.fixture(scope="module")
def apply(model_and_params):
    """The evaluation forward pass, compiled once for the module."""
    model, _ = model_and_params
    return jax.jit(lambda params, images: model.apply({"params": params}, images, train=False))


def _images(n: int, seed: int = 1) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 8, 8, 1), minval=0.5, maxval=1.5)


def test_exactly_k_pixels_kept_at_evaluation(model_and_params, apply):
    _, params = model_and_params
    logits, aux = apply(params, _images(5))
    assert logits.shape == (5, 10)
    assert aux["mask"].shape == (8, 8, 1) and float(aux["mask"].sum()) == 6.0
    np.testing.assert_array_equal(
        aux["mask"].reshape(-1),
        (np.argsort(-np.asarray(aux["gate_logits"]))[:6, None] == np.arange(64)).any(0),
    )


def test_mask_is_shared_so_dropped_pixels_never_matter(model_and_params, apply):
    _, params = model_and_params
    images = _images(5)
    logits, aux = apply(params, images)
    dropped = 1.0 - aux["mask"]
    # Changing only dropped pixels, differently in every image, leaves every output unchanged.
    noise = jax.random.normal(jax.random.key(9), images.shape) * dropped
    logits2, _ = apply(params, images + noise)
    np.testing.assert_allclose(logits2, logits, rtol=1e-6, atol=1e-6)
    # ... while changing a kept pixel changes them.
    logits3, _ = apply(params, images + aux["mask"])
    assert float(jnp.abs(logits3 - logits).max()) > 1e-4


def test_gradients_reach_the_gate_logits(model_and_params, apply):
    model, params = model_and_params
    task = Classification(num_classes=10)
    batch = {"image": _images(16), "label": jnp.arange(16) % 10, "mask": jnp.ones(16, bool)}
    loss_fn = lambda p: task.loss(model, p, batch, jax.random.key(3), train=True)[0]  # noqa: E731
    grads = jax.jit(jax.grad(loss_fn))(params)
    g = np.asarray(grads["gate"]["logits"])
    _, aux = apply(params, batch["image"])
    kept = np.asarray(aux["mask"]).reshape(-1) > 0.5
    assert np.all(np.isfinite(g))
    assert np.abs(g[kept]).max() > 0 and np.abs(g[~kept]).max() > 0  # dropped pixels can enter


def test_plot_examples_writes_the_kept_pixels_figure(model_and_params, tmp_path):
    model, params = model_and_params
    batch = {"image": np.asarray(_images(3)), "label": np.arange(3)}
    (path,) = draw_examples(model.figure_data(params, batch), tmp_path / "plots")
    assert path.name == "kept_pixels.png" and path.stat().st_size > 1000


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"k": 0}, "positive integer"),
        ({"variant": "big"}, "no variants"),
        ({"kk": 3}, "did you mean 'k'"),
    ],
)
def test_bad_config_is_a_one_line_error(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_model({"name": "feature_select", "num_classes": 10, **cfg})


def test_wrong_image_rank_is_a_clear_error(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match=r"expects images \[B, H, W, C\]"):
        model.apply({"params": params}, jnp.zeros((2, 64)))
