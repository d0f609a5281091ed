"""TransFG's contrastive loss (He et al. 2022, sec. 3.3) and its task (CE + contrastive)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.errors import UserError
from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.tasks.transfg import transfg_contrastive_loss


def test_identical_features_of_one_class_cost_nothing():
    features = jnp.tile(jnp.array([[0.3, -1.2, 2.0]]), (4, 1))
    assert float(transfg_contrastive_loss(features, jnp.zeros(4, jnp.int32))) == pytest.approx(0.0)


def test_orthogonal_features_of_different_classes_cost_nothing():
    features = 3.0 * jnp.eye(3)  # the scale is normalised away
    loss = transfg_contrastive_loss(features, jnp.arange(3))
    assert float(loss) == pytest.approx(0.0, abs=1e-7)


def test_hand_computed_case():
    # z1 = (1, 0), z2 = (0, 1) of class 0, z3 = (1, 1)/sqrt(2) of class 1:
    # the same-class pair costs 1 - 0 twice (both orders), each different-class pair
    # max(1/sqrt(2) - 0.4, 0) four times (two pairs, both orders), the diagonal 0; / B^2 = 9.
    features = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = jnp.array([0, 0, 1])
    expected = (2 * 1.0 + 4 * (1 / np.sqrt(2) - 0.4)) / 9
    assert float(transfg_contrastive_loss(features, labels)) == pytest.approx(expected, rel=1e-6)
    # Below the margin a different-class pair costs nothing: only the same-class pair is left.
    loss = transfg_contrastive_loss(features, labels, margin=0.75)
    assert float(loss) == pytest.approx(2.0 / 9, rel=1e-6)


def test_padding_examples_change_nothing():
    features = jax.random.normal(jax.random.key(0), (5, 8))
    labels = jnp.array([0, 1, 0, 2, 1])
    mask = jnp.array([1, 1, 1, 0, 0])
    masked = transfg_contrastive_loss(features, labels, mask)
    assert float(masked) == pytest.approx(float(transfg_contrastive_loss(features[:3], labels[:3])))


@pytest.fixture(scope="module")
def model_and_batch():
    model = build_model({"name": "transfg", "variant": "tiny", "num_classes": 3})
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    params = jax.jit(model.init)(jax.random.key(2), images)["params"]
    # A non-zero head, so that the cross-entropy is not log(3) for every example.
    params = dict(params, head={"kernel": jnp.ones((32, 3)), "bias": jnp.arange(3.0)})
    batch = {"image": images, "label": jnp.array([0, 1, 2, 1]), "mask": jnp.ones(4, bool)}
    return model, params, batch


def test_task_loss_is_cross_entropy_plus_weighted_contrastive(model_and_batch):
    model, params, batch = model_and_batch
    logits, aux = jax.jit(model.apply)({"params": params}, batch["image"])
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], 3), 0.1)
    cross_entropy = float(optax.softmax_cross_entropy(logits, targets).mean())
    contrastive = float(transfg_contrastive_loss(aux["pre_logits"], batch["label"]))
    assert contrastive > 0.01
    task = build_task(
        {"name": "transfg", "label_smoothing": 0.1, "contrastive_weight": 0.5}, num_classes=3
    )
    loss, metrics = jax.jit(lambda p, b: task.loss(model, p, b, jax.random.key(0), train=False))(
        params, batch
    )
    assert float(loss) == pytest.approx(cross_entropy + 0.5 * contrastive, rel=1e-5)
    assert float(metrics["contrastive"]) == pytest.approx(contrastive, rel=1e-5)
    assert float(metrics["cross_entropy"]) == pytest.approx(cross_entropy, rel=1e-5)


def test_bad_options_and_mixing_are_one_line_user_errors(model_and_batch):
    with pytest.raises(UserError, match="contrastive_weight"):
        build_task({"name": "transfg", "contrastive_weight": -1.0}, num_classes=3)
    with pytest.raises(UserError, match="margin"):
        build_task({"name": "transfg", "margin": 2.0}, num_classes=3)
    model, params, batch = model_and_batch
    task = build_task({"name": "transfg"}, num_classes=3)
    task.mix = {"mixup_alpha": 0.8}
    with pytest.raises(UserError, match="mixup"):
        task.loss(model, params, batch, jax.random.key(0), train=True)
