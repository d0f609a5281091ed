"""The segmentation task: loss by hand, ignored pixels and padded examples change nothing, the
confusion matrix equals numpy's and adds up over half batches, mIoU by hand, the overlay figure,
and a tiny SETR that learns squares."""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from attn_jax.eval.segmentation import confusion_matrix
from attn_jax.figures.examples import draw_examples
from attn_jax.models.setr import SETR
from attn_jax.tasks import TASKS, build_task
from attn_jax.tasks.segmentation import OVERLAY_FILE, Segmentation

K = 3


class FixedLogits:
    """A stand-in model whose logits (and auxiliary logits) are its parameters."""

    @staticmethod
    def apply(variables, images, train=False, rngs=None):
        del images, train, rngs
        p = variables["params"]
        return p["logits"], {"aux_logits": p["aux"]} if "aux" in p else {}


class ImageLogits:
    """A stand-in model whose logits are 5 x the first K image channels (it sees its input)."""

    @staticmethod
    def apply(variables, images, train=False, rngs=None):
        del variables, train, rngs
        return 5.0 * images[..., :K], {}


TASK = Segmentation(num_classes=K)
# Compiled once per batch shape and shared by the tests below.
task_loss = jax.jit(lambda params, batch: TASK.loss(FixedLogits, params, batch, jax.random.key(0)))
task_sums = jax.jit(lambda params, batch: TASK.eval_sums(FixedLogits, params, batch))


def random_params(shapes, seed: int = 0):
    """LeCun-normal kernels, zero biases, unit scales: Flax's default init without compiling it."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = path[-1].key
        if name == "scale":
            return jnp.ones(s.shape, s.dtype)
        if name == "bias":
            return jnp.zeros(s.shape, s.dtype)
        std = 0.02 if name == "pos_embedding" else 1.0 / math.sqrt(math.prod(s.shape[:-1]))
        return jnp.asarray(rng.normal(0.0, std, s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def random_case(seed: int = 0, b: int = 4, h: int = 5, w: int = 6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, (b, h, w)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.25] = 255
    batch = {
        "image": np.zeros((b, h, w, 1), np.float32),
        "segmentation": labels,
        "mask": np.array([True] * (b - 1) + [False]),
    }
    logits = rng.normal(size=(b, h, w, K)).astype(np.float32)
    return batch, {"logits": jnp.asarray(logits)}


def test_registered():
    assert TASKS["segmentation"] is Segmentation
    task = build_task({"name": "segmentation", "aux_weight": 0.2}, num_classes=11)
    assert task.num_classes == 11 and task.aux_weight == 0.2 and task.ignore_label == 255


def test_loss_and_accuracy_equal_a_hand_computation():
    # Pixel 0: logits (0, 0), label 0 -> ln 2, argmax 0 correct. Pixel 1: logits (ln 3, 0),
    # label 1 -> -log(1/4) = ln 4, argmax 0 wrong. Pixel 2: ignored. Example 2 is padding.
    logits = np.zeros((2, 1, 3, 2), np.float32)
    logits[0, 0, 1, 0] = math.log(3.0)
    logits[1] = 50.0 * np.array([1.0, -1.0])  # padding: confidently wrong, must not count
    batch = {
        "image": np.zeros((2, 1, 3, 1), np.float32),
        "segmentation": np.array([[[0, 1, 255]], [[1, 1, 1]]], np.int32),
        "mask": np.array([True, False]),
    }
    task = Segmentation(num_classes=2)
    params = {"logits": jnp.asarray(logits)}
    loss, metrics = task.loss(FixedLogits, params, batch, jax.random.key(0))
    assert float(loss) == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    assert float(metrics["loss"]) == float(loss) and float(metrics["accuracy"]) == 0.5

    # An auxiliary head of uniform logits adds aux_weight * ln 2 to the objective only.
    params["aux"] = (jnp.zeros_like(params["logits"]),)
    total, metrics = Segmentation(num_classes=2, aux_weight=0.4).loss(
        FixedLogits, params, batch, jax.random.key(0)
    )
    assert float(total) == pytest.approx(1.5 * math.log(2) + 0.4 * math.log(2), rel=1e-6)
    assert float(metrics["aux_loss"]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(metrics["loss"]) == pytest.approx(1.5 * math.log(2), rel=1e-6)


def test_ignored_pixels_and_padded_examples_change_nothing():
    batch, params = random_case()
    loss, metrics = task_loss(params, batch)
    sums = task_sums(params, batch)

    rng = np.random.default_rng(1)
    labels = batch["segmentation"]
    dead = (labels == 255) | ~batch["mask"][:, None, None]
    logits = np.asarray(params["logits"]).copy()
    logits[dead] = 10.0 * rng.normal(size=(dead.sum(), K))
    other = dict(batch, segmentation=labels.copy())
    other["segmentation"][-1] = rng.integers(0, K, labels.shape[1:])  # padding gets real labels
    params2 = {"logits": jnp.asarray(logits)}
    loss2, metrics2 = task_loss(params2, other)
    sums2 = task_sums(params2, other)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    assert float(metrics2["accuracy"]) == float(metrics["accuracy"])
    np.testing.assert_array_equal(np.asarray(sums2["confusion"]), np.asarray(sums["confusion"]))
    assert int(sums2["count"]) == int(sums["count"]) == int((~dead).sum())


def test_confusion_matrix_equals_numpy_and_half_batches_add_up():
    batch, params = random_case(seed=2)
    sums = task_sums(params, batch)
    pred = np.asarray(params["logits"]).argmax(-1)
    expected = confusion_matrix(batch["segmentation"], pred, K, 255, mask=batch["mask"])
    np.testing.assert_array_equal(np.asarray(sums["confusion"]), expected)

    halves = [
        task_sums({"logits": params["logits"][s]}, {k: v[s] for k, v in batch.items()})
        for s in (slice(0, 2), slice(2, 4))
    ]
    added = jax.tree_util.tree_map(jnp.add, *halves)
    np.testing.assert_array_equal(np.asarray(added["confusion"]), expected)
    assert int(added["count"]) == int(sums["count"])
    assert float(added["loss"]) == pytest.approx(float(sums["loss"]), rel=1e-6)
    # The mean loss of finalize is the loss of the training objective on the same pixels.
    loss, metrics = task_loss(params, batch)
    final = TASK.finalize(jax.device_get(sums))
    assert final["loss"] == pytest.approx(float(loss), rel=1e-6)
    assert final["accuracy"] == pytest.approx(float(metrics["accuracy"]), rel=1e-6)


def test_finalize_of_a_hand_confusion_matrix():
    confusion = np.array([[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    out = Segmentation(num_classes=4).finalize({"confusion": confusion, "loss": 3.0, "count": 6})
    assert out["miou"] == pytest.approx(0.25)  # (1/4 + 2/4 + 0) / 3, class 3 left out
    assert out["accuracy"] == pytest.approx(0.5) and out["loss"] == pytest.approx(0.5)
    assert out["iou/1"] == pytest.approx(0.5) and math.isnan(out["iou/3"])
    assert out["mean_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert Segmentation.target_metrics[0] == "miou"


def test_init_inputs_and_ignore_label_mismatch():
    spec = types.SimpleNamespace(name="scenes", image_shape=(8, 8, 1), ignore_label=255)
    (x,) = Segmentation(num_classes=11).init_inputs(spec)
    assert x.shape == (1, 8, 8, 1)
    with pytest.raises(ValueError, match="set task.ignore_label=255"):
        Segmentation(num_classes=11, ignore_label=0).init_inputs(spec)


def test_overlay_png_is_written_with_one_row_per_real_example(tmp_path):
    batch, params = random_case(seed=3, b=3, h=8, w=8)
    batch["image"] = np.random.default_rng(0).random((3, 8, 8, 3)).astype(np.float32)
    (path,) = draw_examples(TASK.figure_data(ImageLogits, params, batch, None), tmp_path / "plots")
    assert path == tmp_path / "plots" / OVERLAY_FILE
    with Image.open(path) as image:
        image.load()
        # Two real examples -> 2 rows of 3 panels of 2.5 inches at 100 dpi.
        assert image.format == "PNG" and image.size == (750, 500)
        pixels = np.asarray(image.convert("RGB"), np.float32)
    assert pixels.std() > 10  # something was drawn


def test_a_tiny_setr_learns_squares_of_two_classes():
    rng = np.random.default_rng(0)
    n, side = 8, 16
    images = np.zeros((n, side, side, 3), np.float32)
    labels = np.zeros((n, side, side), np.int32)
    for i in range(n):
        for cls in (1, 2):
            y, x = rng.integers(0, side - 5, 2)
            images[i, y : y + 5, x : x + 5, cls - 1] = 1.0
            labels[i, y : y + 5, x : x + 5] = cls
    batch = {"image": images, "segmentation": labels, "mask": np.ones(n, bool)}
    background = float((labels == 0).mean())

    model = SETR(
        num_classes=K,
        decoder="naive",
        encoder=dict(patch_size=4, hidden_size=32, depth=1, num_heads=2, mlp_dim=64),
        decoder_width=32,
        norm_groups=8,
    )
    shapes = jax.eval_shape(model.init, jax.random.key(0), images[:1])["params"]
    params = random_params(shapes)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, key):
        grads, metrics = jax.grad(
            lambda p: TASK.loss(model, p, batch, key, train=True), has_aux=True
        )(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state = tx.init(params)
    history = []
    for s in range(60):
        params, opt_state, metrics = step(params, opt_state, jax.random.key(s))
        history.append(jax.device_get(metrics))
    first, last = history[0], history[-1]
    assert last["loss"] < 0.3 * first["loss"], (first, last)
    assert last["accuracy"] > background + 0.4 * (1 - background), (background, last)
