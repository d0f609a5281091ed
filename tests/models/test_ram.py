"""The Recurrent Attention Model (Mnih et al. 2014): parameter counts, the location policy's
Gaussian density (scipy), deterministic evaluation, the gradient routing the paper and the
reference code rely on (no classification gradient into the location net, no baseline gradient
into the core), user errors, and the glimpse-path figure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from attn_jax.figures.examples import draw_examples
from attn_jax.models import RAM, build_model, count_params, ram_param_count

SMALL = dict(
    num_glimpses=3,
    glimpse_size=4,
    num_scales=2,
    glimpse_hidden=16,
    location_hidden=8,
    glimpse_features=24,
    hidden_size=32,
    location_std=0.2,
)


@pytest.fixture(scope="module")
def images():
    return jnp.asarray(np.random.default_rng(0).standard_normal((6, 16, 16, 1)), jnp.float32)


@pytest.fixture(scope="module")
def small(images):
    model = RAM(**SMALL)
    params = jax.jit(model.init)({"params": jax.random.key(0)}, images[:1])["params"]
    return model, params


@pytest.fixture(scope="module")
def run(small, images):
    """run(train, seed) -> (logits, aux) of the small model on `images`, compiled once per mode."""
    model, params = small
    apply = jax.jit(model.apply, static_argnames="train")

    def call(train: bool, seed: int = 0):
        return apply(
            {"params": params}, images, train=train, rngs={"location": jax.random.key(seed)}
        )

    return call


def _objectives(logits, aux):
    """The three signals whose gradient routing the tests check."""
    return jnp.stack(
        [
            jnp.sum(aux["baselines"] ** 2),  # the baseline's regression
            jnp.sum(jax.nn.log_softmax(logits)[:, 0]),  # the classification
            jnp.sum(aux["log_probs"]),  # the policy
        ]
    )


def _jacobians(model, params, images, which=(0, 1, 2)):
    """Gradients of `_objectives[which]` w.r.t. the parameters, in one compiled pass."""

    def f(p):
        logits, aux = model.apply(
            {"params": p}, images, train=True, rngs={"location": jax.random.key(5)}
        )
        return _objectives(logits, aux)[jnp.asarray(which)]

    jac = jax.jit(jax.jacrev(f))(params)
    return [jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], jac) for i in range(len(which))]


@pytest.fixture(scope="module")
def grads(small, images):
    model, params = small
    names = ("baseline", "classification", "policy")
    return dict(zip(names, _jacobians(model, params, images), strict=True))


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_param_count_matches_the_formula(core):
    model = build_model({"name": "ram", "core": core, "num_scales": 3, "glimpse_size": 8})
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 1)))
    )
    assert count_params(shapes["params"]) == ram_param_count(core=core)
    # RNN core of the paper's sizes (sec. 4.1): 225,549 with 8x8x3 glimpses on one channel.
    if core == "rnn":
        assert ram_param_count() == 225_549


def test_variants_decode_and_unknown_ones_fail():
    model = build_model({"name": "ram", "variant": "paper_translated"})
    assert (model.glimpse_size, model.num_scales, model.num_glimpses) == (12, 3, 8)
    with pytest.raises(ValueError, match="unknown RAM variant 'paper'"):
        build_model({"name": "ram", "variant": "paper"})


def test_output_shapes(run, images):
    logits, aux = run(train=True, seed=1)
    b, t = images.shape[0], SMALL["num_glimpses"]
    assert logits.shape == (b, 10)
    for key in ("locations", "location_samples", "location_means"):
        assert aux[key].shape == (b, t, 2)
    assert aux["log_probs"].shape == (b, t) and aux["baselines"].shape == (b, t)
    assert aux["state"].shape == (b, SMALL["hidden_size"])
    np.testing.assert_array_equal(aux["locations"], jnp.clip(aux["location_samples"], -1, 1))


def test_log_probs_are_the_gaussian_density(run):
    _, aux = run(train=True, seed=2)
    samples = np.asarray(aux["location_samples"], np.float64)
    means = np.asarray(aux["location_means"], np.float64)
    expected = stats.norm.logpdf(samples, loc=means, scale=SMALL["location_std"]).sum(-1)
    np.testing.assert_allclose(aux["log_probs"], expected, rtol=1e-5, atol=1e-5)
    # The samples really spread with the fixed std around the means.
    z = (samples - means) / SMALL["location_std"]
    assert 0.5 < z.std() < 1.6 and np.abs(z).max() > 0.3


def test_training_samples_evaluation_takes_the_mean(run):
    logits_a, eval_a = run(train=False, seed=0)
    logits_b, _ = run(train=False, seed=9)  # evaluation ignores the key
    np.testing.assert_array_equal(logits_a, logits_b)
    np.testing.assert_array_equal(eval_a["location_samples"], eval_a["location_means"])
    _, train_1 = run(train=True, seed=3)
    _, train_1b = run(train=True, seed=3)
    _, train_2 = run(train=True, seed=4)
    np.testing.assert_array_equal(train_1["locations"], train_1b["locations"])
    assert not np.allclose(train_1["locations"], train_2["locations"])
    # Different draws at every time step (the scan splits the location stream per step).
    noise = train_1["location_samples"] - train_1["location_means"]
    assert not np.allclose(noise[:, 0], noise[:, 1])


def test_first_location_comes_from_the_zero_state(small, run):
    _, params = small
    _, aux = run(train=False)
    start = np.tanh(np.asarray(params["glimpses"]["location"]["bias"]))
    np.testing.assert_allclose(
        aux["location_means"][:, 0], np.broadcast_to(start, (6, 2)), atol=1e-6
    )


def _nonzero(tree) -> set[str]:
    """Names of the layers with a nonzero gradient."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path[-2].key for path, leaf in flat if np.abs(np.asarray(leaf)).max() > 0}


def test_baseline_sends_no_gradient_into_the_core(grads):
    assert _nonzero(grads["baseline"]) == {"baseline"}


def test_classification_gradient_does_not_reach_the_location_net(grads):
    touched = _nonzero(grads["classification"])
    assert "location" not in touched and "baseline" not in touched
    assert {
        "classifier",
        "core_recurrent",
        "core_input",
        "glimpse_what",
        "glimpse_where",
    } <= touched


def test_policy_gradient_stays_in_the_location_net_unless_asked(small, grads, images):
    assert _nonzero(grads["policy"]) == {"location"}
    model = RAM(**SMALL, policy_gradient_to_core=True)
    params = small[1]  # the same parameter tree: the option changes only the gradient routing
    touched = _nonzero(_jacobians(model, params, images, which=(2,))[0])
    assert {"location", "core_recurrent", "core_input", "glimpse_what"} <= touched
    assert "baseline" not in touched and "classifier" not in touched


def test_lstm_core_shapes_and_param_count(images):
    model = RAM(**SMALL, core="lstm")
    key = {"params": jax.random.key(0), "location": jax.random.key(1)}
    variables = jax.eval_shape(lambda: model.init(key, images[:1], train=True))
    logits, aux = jax.eval_shape(
        lambda v: model.apply(v, images, train=True, rngs={"location": jax.random.key(1)}),
        variables,
    )
    assert logits.shape == (6, 10) and aux["state"].shape == (6, SMALL["hidden_size"])
    sizes = {k: v for k, v in SMALL.items() if k not in ("num_glimpses", "location_std")}
    assert count_params(variables["params"]) == ram_param_count(**sizes, core="lstm")


def test_user_errors_are_one_line_value_errors(images):
    with pytest.raises(ValueError, match=r"RAM expects images \[B, H, W, C\]"):
        RAM(**SMALL).init({"params": jax.random.key(0)}, images[0])
    with pytest.raises(ValueError, match="core must be 'rnn' or 'lstm'"):
        RAM(**{**SMALL, "core": "gru"}).init({"params": jax.random.key(0)}, images[:1])
    with pytest.raises(ValueError, match="location_std must be > 0"):
        RAM(**{**SMALL, "location_std": 0.0}).init({"params": jax.random.key(0)}, images[:1])
    with pytest.raises(ValueError, match="unknown field 'glimpses' for model 'ram'"):
        build_model({"name": "ram", "glimpses": 4})


def test_plot_examples_writes_the_glimpse_paths(small, images, tmp_path):
    model, params = small
    batch = {
        "image": np.asarray(images),
        "label": np.array([3, 3, 1, 0, 7, 2], np.int32),
        "mask": np.array([True] * 5 + [False]),
    }
    (path,) = draw_examples(model.figure_data(params, batch, count=4), tmp_path / "plots")
    assert path == tmp_path / "plots" / "glimpse_paths.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
