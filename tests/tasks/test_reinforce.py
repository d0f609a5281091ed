"""The hybrid loss of RAM (Mnih et al. 2014, sec. 3.2): its terms against a hand computation,
finite REINFORCE gradients on the real model, the estimator's mean against the analytic gradient
on a one-step Gaussian bandit (with and without a baseline, which must lower the variance),
masking, evaluation sums and user errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from attn_jax.models import RAM, build_model
from attn_jax.tasks import TASKS, build_task
from attn_jax.tasks.reinforce import Reinforce

STD = 0.5


class _Bandit(nn.Module):
    """One Gaussian 'location' l ~ N(mu, STD^2) per example, learned mu; the class-1 logit is l,
    so the prediction is correct (label 1) iff l > 0. A fixed baseline `b` for every example."""

    baseline: float = 0.0

    @nn.compact
    def __call__(self, images, train: bool = False):
        mu = self.param("mu", nn.initializers.constant(0.3), (1,))
        mean = jnp.broadcast_to(mu, (images.shape[0], 1))
        noise = jax.random.normal(self.make_rng("location"), mean.shape) if train else 0.0
        sample = jax.lax.stop_gradient(mean + STD * noise)
        log_prob = jax.scipy.stats.norm.logpdf(sample, mean, STD)  # [B, 1]: one step
        logits = jnp.concatenate([jnp.zeros_like(sample), sample], axis=-1)
        baselines = jnp.full(log_prob.shape, self.baseline)
        return logits, {"log_probs": log_prob, "baselines": baselines}


def _batch(n: int) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((n, 1, 1, 1), np.float32),
        "label": np.ones(n, np.int32),
        "mask": np.ones(n, bool),
    }


def test_registered_and_configurable():
    assert TASKS["reinforce"] is Reinforce
    task = build_task({"name": "reinforce", "reinforce_weight": 0.5}, num_classes=10)
    assert task.reinforce_weight == 0.5 and task.baseline_weight == 1.0
    with pytest.raises(ValueError, match="task.baseline_weight must be a number >= 0"):
        build_task({"name": "reinforce", "baseline_weight": -1}, num_classes=10)
    with pytest.raises(TypeError):
        build_task({"name": "reinforce", "reinforce_wieght": 1}, num_classes=10)


def test_terms_match_a_hand_computation():
    task = Reinforce(num_classes=3, reinforce_weight=0.7, baseline_weight=2.0)
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    labels = jnp.array([0, 1])  # first correct (R=1), second wrong (R=0)
    aux = {
        "log_probs": jnp.array([[-1.0, -2.0], [-0.5, 0.25]]),
        "baselines": jnp.array([[0.5, 0.75], [0.25, -0.5]]),
    }
    terms = task._terms(logits, aux, labels)
    ce = np.array([np.log(np.exp([2, 0, 0]).sum()) - 2, np.log(np.exp([0, 1, 3]).sum()) - 1])
    surrogate = -np.array([-1 * 0.5 + -2 * 0.25, -0.5 * -0.25 + 0.25 * 0.5])
    mse = np.array([(0.25 + 0.0625) / 2, (0.0625 + 0.25) / 2])
    np.testing.assert_allclose(terms["cross_entropy"], ce, rtol=1e-6)
    np.testing.assert_allclose(terms["reinforce"], surrogate, rtol=1e-6)
    np.testing.assert_allclose(terms["baseline_error"], mse, rtol=1e-6)
    np.testing.assert_allclose(terms["reward"], [1, 0])
    np.testing.assert_allclose(terms["loss"], ce + 2 * mse, rtol=1e-6)
    np.testing.assert_allclose(terms["objective"], ce + 2 * mse + 0.7 * surrogate, rtol=1e-6)


def _bandit_gradients(baseline: float, n: int) -> np.ndarray:
    """Per-example REINFORCE estimates d objective / d mu through the task, [n]."""
    model, task = _Bandit(baseline=baseline), Reinforce(num_classes=2)
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 1, 1, 1)))["params"]

    def one(key):  # the task's loss on a batch of one example
        batch = jax.tree_util.tree_map(jnp.asarray, _batch(1))
        return jax.grad(lambda p: task.loss(model, p, batch, key)[0])(params)["mu"][0]

    keys = jax.random.split(jax.random.key(1), n)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def test_estimator_mean_is_the_analytic_gradient_and_the_baseline_lowers_variance():
    # E[R] = P(l > 0) = Phi(mu / STD); d/dmu = pdf(mu / STD) / STD. The objective is minimised,
    # so its expected gradient is minus that (CE does not depend on mu: the sample is constant).
    analytic = -stats.norm.pdf(0.3 / STD) / STD
    n = 20_000
    plain = _bandit_gradients(0.0, n)
    with_baseline = _bandit_gradients(stats.norm.cdf(0.3 / STD), n)  # b = E[R]
    for g in (plain, with_baseline):
        assert abs(g.mean() - analytic) < 4 * g.std() / np.sqrt(n), (g.mean(), analytic)
    assert with_baseline.var() < 0.8 * plain.var()


def test_mask_leaves_padding_out():
    model, task = _Bandit(), Reinforce(num_classes=2)
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 1, 1, 1)))["params"]
    batch = _batch(4)
    padded = {
        "image": np.zeros((6, 1, 1, 1), np.float32),
        "label": np.array([1, 1, 1, 1, 0, 0], np.int32),
        "mask": np.array([True] * 4 + [False] * 2),
    }
    loss = jax.jit(lambda b: task.loss(model, params, b, jax.random.key(2), train=False)[1])
    full, with_pad = loss(batch), loss(padded)
    for key in full:
        np.testing.assert_allclose(with_pad[key], full[key], rtol=1e-6)
    sums = jax.jit(lambda b: task.eval_sums(model, params, b))(padded)
    assert float(sums["count"]) == 4 and "reinforce" not in sums
    final = Reinforce.finalize(sums)
    assert final["accuracy"] == pytest.approx(1.0) and final["reward"] == final["accuracy"]


def test_reinforce_gradients_of_the_real_model_are_finite():
    model = RAM(
        num_glimpses=2,
        glimpse_size=4,
        num_scales=2,
        hidden_size=32,
        glimpse_features=16,
        glimpse_hidden=16,
        location_hidden=8,
    )
    task = Reinforce(num_classes=10)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.standard_normal((8, 16, 16, 1)).astype(np.float32),
        "label": rng.integers(0, 10, 8).astype(np.int32),
        "mask": np.ones(8, bool),
    }
    params = jax.jit(model.init)({"params": jax.random.key(0)}, batch["image"][:1])["params"]
    grad_fn = jax.jit(jax.grad(lambda p, k: task.loss(model, p, batch, k), has_aux=True))
    grads, metrics = grad_fn(params, jax.random.key(3))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)
    # The policy learns from REINFORCE alone: its gradient is there, and nonzero.
    assert np.abs(np.asarray(grads["glimpses"]["location"]["kernel"])).max() > 0
    expected = {"loss", "accuracy", "reward", "baseline_error", "cross_entropy", "reinforce"}
    assert set(metrics) == expected
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_models_without_a_policy_are_refused():
    model = build_model({"name": "mlp", "hidden": (8,), "num_classes": 10})
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    batch = {
        "image": np.zeros((2, 8, 8, 1), np.float32),
        "label": np.zeros(2, np.int32),
        "mask": np.ones(2, bool),
    }
    with pytest.raises(ValueError, match="needs a model whose aux holds 'log_probs'"):
        jax.eval_shape(
            lambda p: Reinforce(num_classes=10).loss(model, p, batch, jax.random.key(0)), params
        )
