"""Optimizer factory: schedules, clipping, and weight decay that spares biases and norms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.train.optim import make_optimizer

PARAMS = {
    "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))},
    "norm": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
}


def _one_step(cfg, grads_value=0.0, steps=1):
    tx, _ = make_optimizer(cfg, total_steps=100)
    state = tx.init(PARAMS)
    params = PARAMS
    for _ in range(steps):
        grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, grads_value), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_only_on_kernels(name):
    cfg = {"name": name, "lr": 0.1, "weight_decay": 0.5, "schedule": "constant", "momentum": 0.9}
    out = _one_step(cfg)
    assert float(out["dense"]["kernel"][0, 0]) < 1.0  # decayed toward 0
    for leaf in (out["dense"]["bias"], out["norm"]["scale"], out["norm"]["bias"]):
        np.testing.assert_array_equal(leaf, 1.0)


def test_warmup_then_cosine():
    _, sched = make_optimizer(
        {"name": "adamw", "lr": 1.0, "warmup_steps": 10, "schedule": "cosine"}, total_steps=110
    )
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(60)) == pytest.approx(0.5, abs=1e-6)  # half way through the cosine
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-6)


def test_linear_decay_to_end_factor():
    _, sched = make_optimizer(
        {"name": "sgd", "lr": 2.0, "schedule": "linear", "end_lr_factor": 0.5}, total_steps=100
    )
    assert float(sched(0)) == pytest.approx(2.0) and float(sched(100)) == pytest.approx(1.0)


def test_gradient_clipping_bounds_the_update():
    cfg = {"name": "sgd", "lr": 1.0, "schedule": "constant", "momentum": 0.0, "grad_clip_norm": 1.0}
    out = _one_step(cfg, grads_value=100.0)
    delta = jax.tree_util.tree_map(lambda a, b: a - b, PARAMS, out)
    assert float(optax.tree.norm(delta)) == pytest.approx(1.0, rel=1e-5)


def test_gradient_accumulation_updates_every_k_steps():
    cfg = {"name": "sgd", "lr": 1.0, "schedule": "constant", "momentum": 0.0, "grad_accum_steps": 2}
    np.testing.assert_array_equal(_one_step(cfg, 1.0, steps=1)["dense"]["bias"], 1.0)
    np.testing.assert_allclose(_one_step(cfg, 1.0, steps=2)["dense"]["bias"], 0.0)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optim.name 'adamm'"):
        make_optimizer({"name": "adamm", "lr": 1.0}, 10)


def test_noam_schedule_is_the_papers_eq_3():
    from attn_jax.train.optim import learning_rate_schedule

    cfg = {"lr": 1.0, "schedule": "noam", "d_model": 512, "warmup_steps": 4000}
    schedule = learning_rate_schedule(cfg, 100_000)
    for n in (1, 100, 3999, 4000, 4001, 50_000):
        expected = 512**-0.5 * min(n**-0.5, n * 4000**-1.5)
        assert abs(float(schedule(n - 1)) - expected) < 1e-9
    peak = float(schedule(3999))
    assert abs(peak - 512**-0.5 * 4000**-0.5) < 1e-9  # the maximum, at n = warmup
    assert float(schedule(3998)) < peak and float(schedule(4000)) < peak
