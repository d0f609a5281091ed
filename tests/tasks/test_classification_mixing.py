"""Mixup/CutMix in the classification loss (DeiT's recipe): soft targets made on the device from
the step's key, the plain loss unchanged when mixing is off, evaluation never mixed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib
from attn_jax.train.optim import make_optimizer

K = 10
MODEL = build_model(
    dict(name="vit", patch_size=4, hidden_size=16, depth=1, num_heads=2, mlp_dim=16, num_classes=K)
)
# DeiT's alphas, switch probability and label smoothing.
MIX = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5, "prob": 1.0}
SMOOTHING = 0.1


def _task(mix: dict | None):
    task = build_task({"name": "classification", "label_smoothing": SMOOTHING}, num_classes=K)
    task.mix = mix
    return task


def _batch(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.standard_normal((n, 8, 8, 1), dtype=np.float32),
        "label": rng.integers(0, K, n).astype(np.int32),
        "mask": np.ones(n, bool),
    }


@pytest.fixture(scope="module")
def params():
    return jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]


def test_the_trainer_hands_the_data_configs_mixing_to_the_task():
    from attn_jax.config import ConfigError
    from experiments import mim_digits, vit_digits

    config = vit_digits.get_config()
    assert loop.build_experiment(config, with_data=False).task.mix is None
    config.data.augment, config.data.mixup, config.data.cutmix = True, 0.8, 1.0
    assert loop.build_experiment(config, with_data=False).task.mix == MIX
    # A task that does not train on image-label pairs refuses it in one line.
    config = mim_digits.get_config()
    config.data.augment, config.data.mixup = True, 0.8
    with pytest.raises(ConfigError, match="MaskedImageModeling task does not train") as err:
        loop.build_experiment(config, with_data=False)
    assert "\n" not in str(err.value)


def test_loss_sees_soft_targets_of_the_mixed_images(params):
    task, batch = _task(MIX), _batch()
    key = jax.random.key(5)

    @jax.jit
    def run(params, batch, key):
        loss, _ = task.loss(MODEL, params, batch, key, train=True)
        images, targets, dropout_key = task.train_inputs(batch, key)
        logits, _ = MODEL.apply({"params": params}, images, train=True, rngs={"dropout": key})
        return loss, images, targets, optax.softmax_cross_entropy(logits, targets).mean()

    loss, images, targets, by_hand = run(params, batch, key)
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    one_hot = jax.nn.one_hot(batch["label"], K)
    assert float(jnp.abs(targets - one_hot).max()) > SMOOTHING  # mixed, not only smoothed
    assert not np.allclose(images, batch["image"])
    np.testing.assert_allclose(loss, by_hand, rtol=1e-6)


def test_without_mixing_the_loss_is_the_plain_smoothed_cross_entropy(params):
    batch = _batch()
    key = jax.random.key(1)

    @jax.jit
    def losses(params, batch, key):
        plain = _task(None).loss(MODEL, params, batch, key, train=True)[0]
        # Evaluation-mode loss with mixing configured: never mixed.
        evaluated = _task(MIX).loss(MODEL, params, batch, key, train=False)[0]
        logits, _ = MODEL.apply({"params": params}, batch["image"], rngs={"dropout": key})
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], K), SMOOTHING)
        return plain, evaluated, optax.softmax_cross_entropy(logits, targets).mean()

    plain, evaluated, reference = losses(params, batch, key)
    # The same function of the same logits, fused differently by XLA: equal to float rounding.
    np.testing.assert_allclose(plain, reference, rtol=1e-6)
    np.testing.assert_allclose(evaluated, plain, rtol=0)


def test_train_steps_with_mixing_are_finite_and_learn_something():
    task = _task(MIX)
    optim = {"name": "adam", "lr": 1e-3, "schedule": "constant"}
    tx, schedule = make_optimizer(optim, 10)
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    init_fn = loop.make_init_fn(MODEL, tx, [jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32)])
    _, sharding = loop._state_shardings(init_fn, mesh)
    state = jax.jit(init_fn, out_shardings=sharding)(jax.random.key(0))
    step = loop.make_train_step(MODEL, task, tx, schedule, mesh, sharding)
    batch = shard_lib.to_global(_batch(), shard_lib.batch_sharding(mesh))
    before = jax.device_get(state.params)
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
        assert float(metrics["nonfinite_step"]) == 0.0
    assert np.all(np.isfinite(losses))
    # Each step draws another mix (the key is folded with the step): the losses differ.
    assert len(set(losses)) == 3
    moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), before, state.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 0
