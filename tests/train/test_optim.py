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


# -- learning-rate multipliers and freezing (DETR's backbone recipe) -----------------------------
TREE = {
    "backbone": {
        "stem_conv": {"kernel": jnp.ones((3, 4))},
        "stage1_block0": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))},
        "stage2_block0": {"kernel": jnp.ones((4, 4))},
    },
    "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones((2,))},
}
FREEZE = {"backbone": 0.1, "backbone/stem": 0.0, "backbone/stage1": 0.0}
ADAMW = {"name": "adamw", "lr": 0.1, "weight_decay": 0.5, "schedule": "constant"}


def _step(cfg, grads=None):
    tx, _ = make_optimizer(cfg, total_steps=10)
    state = tx.init(TREE)
    grads = grads or jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), TREE)
    updates, state = tx.update(grads, state, TREE)
    return updates, state


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
    updates, state = _step(dict(ADAMW, lr_multipliers=FREEZE))
    frozen = [updates["backbone"]["stem_conv"], updates["backbone"]["stage1_block0"]]
    for leaf in jax.tree_util.tree_leaves(frozen):
        np.testing.assert_array_equal(leaf, 0.0)
    assert float(jnp.abs(updates["backbone"]["stage2_block0"]["kernel"]).min()) > 0
    # Adam keeps mu and nu for the 16 + 10 trainable scalars only (plus scalar step counts).
    state_size = sum(x.size for x in jax.tree_util.tree_leaves(state) if x.ndim > 0)
    assert state_size == 2 * (16 + 10)


def test_a_multiplier_scales_the_whole_adamw_update():
    base, _ = _step(ADAMW)
    scaled, _ = _step(dict(ADAMW, lr_multipliers=FREEZE))
    # The longest prefix wins: stage 2 is under "backbone" only, so its update (Adam step and
    # decoupled weight decay alike) is a tenth; the head keeps factor 1.
    np.testing.assert_allclose(
        scaled["backbone"]["stage2_block0"]["kernel"],
        0.1 * base["backbone"]["stage2_block0"]["kernel"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(scaled["head"]["kernel"], base["head"]["kernel"], rtol=1e-6)


def test_frozen_gradients_take_no_share_of_the_clipped_norm():
    cfg = dict(ADAMW, name="sgd", momentum=0.0, weight_decay=0.0, grad_clip_norm=1.0)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), TREE)
    huge = dict(
        grads, backbone=dict(grads["backbone"], stem_conv={"kernel": jnp.full((3, 4), 1e3)})
    )
    clipped, _ = _step(dict(cfg, lr_multipliers={"backbone/stem": 0.0}), huge)
    plain, _ = _step(dict(cfg, lr_multipliers={"backbone/stem": 0.0}), grads)
    # The 46 trainable gradients have norm 0.68 < 1: unclipped, whatever the frozen one holds.
    np.testing.assert_allclose(clipped["head"]["bias"], plain["head"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(clipped["head"]["bias"], -0.1 * 0.1, rtol=1e-6)


def test_unknown_pattern_is_a_one_line_error_naming_it():
    from attn_jax.config import ConfigError

    tx, _ = make_optimizer(dict(ADAMW, lr_multipliers={"backbone/stemm": 0.0}), 10)
    with pytest.raises(ConfigError, match="'backbone/stemm' matches no parameter") as err:
        tx.init(TREE)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="number >= 0"):
        make_optimizer(dict(ADAMW, lr_multipliers={"head": -1.0}), 10)


def test_trainable_count_and_weight_decay_on_all_parameters():
    from attn_jax.train.optim import trainable_param_count

    assert trainable_param_count({"lr_multipliers": FREEZE}, TREE) == 16 + 10
    assert trainable_param_count({}, TREE) == 12 + 16 + 4 + 16 + 10
    # With zero gradients only the decay moves parameters: "all" reaches the biases too.
    zeros = jax.tree_util.tree_map(jnp.zeros_like, TREE)
    kernels_only, _ = _step(ADAMW, zeros)
    everything, _ = _step(dict(ADAMW, weight_decay_mask="all"), zeros)
    np.testing.assert_array_equal(kernels_only["head"]["bias"], 0.0)
    np.testing.assert_allclose(everything["head"]["bias"], -0.1 * 0.5, rtol=1e-6)


def test_step_schedule_drops_the_rate_once():
    _, sched = make_optimizer(
        {"name": "adamw", "lr": 1e-4, "schedule": "step", "lr_drop_fraction": 2 / 3}, 300
    )
    assert float(sched(0)) == pytest.approx(1e-4) and float(sched(199)) == pytest.approx(1e-4)
    assert float(sched(200)) == pytest.approx(1e-5) and float(sched(299)) == pytest.approx(1e-5)
