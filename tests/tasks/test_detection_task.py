"""DETR's set prediction (Carion et al. 2020): the on-device Hungarian matcher against scipy and
brute force (ties, NaN and inf, padding, more targets than queries), free of host callbacks and
sharing one integer across devices, the set loss's normalizations and invariances
(FAITHFULNESS.md sec. 10), the same losses on one device and on four (10 steps of a small DETR),
COCO evaluation through the trainer's host-side hook, and a short learning run."""

from __future__ import annotations

import itertools
import math
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy.optimize import linear_sum_assignment

from attn_jax import boxes as box_ops
from attn_jax.figures.examples import draw_examples
from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.tasks.detection import Detection, hungarian_match, postprocess
from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib
from attn_jax.train.optim import make_optimizer
from attn_jax.train.state import TrainState

K, Q, N, LAYERS, HW = 3, 6, 4, 2, 8


class StandIn(nn.Module):
    """The DETR model's interface on a budget: learned queries shifted by pooled image features,
    a residual MLP per "decoder layer" and class/box heads shared by the layers."""

    num_classes: int = K
    num_queries: int = Q
    num_layers: int = LAYERS
    width: int = 32

    @nn.compact
    def __call__(self, image, pixel_mask, train: bool = False):
        m = pixel_mask[..., None].astype(jnp.float32)
        pooled = (image * m).sum((1, 2)) / jnp.maximum(m.sum((1, 2)), 1.0)  # [B, C]
        queries = self.param("queries", nn.initializers.normal(1.0), (self.num_queries, self.width))
        h = queries[None] + nn.Dense(self.width)(pooled)[:, None]  # [B, Q, D]
        class_head, box_head = nn.Dense(self.num_classes + 1), nn.Dense(4)
        logits, boxes = [], []
        for _ in range(self.num_layers):
            h = h + nn.Dense(self.width)(nn.relu(h))
            logits.append(class_head(h))
            boxes.append(jax.nn.sigmoid(box_head(h)))
        aux = {"layer_logits": jnp.stack(logits), "layer_boxes": jnp.stack(boxes)}
        return {"logits": logits[-1], "boxes": boxes[-1]}, aux


def _batch(b=4, seed=0, counts=None):
    """Random boxes; each image is flat, its three channels the first box's (cx, cy, w), so that
    the stand-in can learn where a lone object is."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, N + 1, b) if counts is None else np.asarray(counts)
    centers = rng.uniform(0.25, 0.75, (b, N, 2))
    sizes = rng.uniform(0.1, 0.4, (b, N, 2))
    box_mask = np.arange(N)[None] < counts[:, None]
    first = np.concatenate([centers[:, 0], sizes[:, 0, :1]], -1)  # [b, 3]
    image = np.broadcast_to(first[:, None, None, :], (b, HW, HW, 3))
    return {
        "image": np.ascontiguousarray(image, np.float32)
        + rng.normal(0, 0.01, (b, HW, HW, 3)).astype(np.float32),
        "pixel_mask": np.ones((b, HW, HW), bool),
        "boxes": np.concatenate([centers, sizes], -1).astype(np.float32),
        "labels": rng.integers(0, K, (b, N)).astype(np.int32),
        "box_mask": box_mask,
        "size": np.full((b, 2), HW, np.int32),
        "orig_size": np.tile(np.array([[60, 80]], np.int32), (b, 1)),
        "image_id": np.arange(b, dtype=np.int32),
        "mask": np.ones(b, bool),
    }


@pytest.fixture(scope="module")
def setup():
    model = StandIn()
    task = build_task({"name": "detection"}, num_classes=K)
    spec = types.SimpleNamespace(image_shape=(HW, HW, 3))
    inputs = [jnp.zeros(s.shape, s.dtype) for s in task.init_inputs(spec)]
    params = model.init(jax.random.key(0), *inputs)["params"]
    loss_fn = jax.jit(lambda p, b: task.loss(model, p, b, jax.random.key(1), train=False))
    return model, task, params, loss_fn


# -- matcher --------------------------------------------------------------------------------------
def test_hungarian_match_is_the_brute_force_minimum_and_batched_equals_single():
    rng = np.random.default_rng(0)
    cost = rng.uniform(0, 1, (5, 5, 4)).astype(np.float32)
    valid = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]], bool)
    batched = np.asarray(jax.jit(hungarian_match)(cost, valid))
    for i in range(len(cost)):
        single = np.asarray(hungarian_match(cost[i : i + 1], valid[i : i + 1]))[0]
        np.testing.assert_array_equal(batched[i], single)
        targets = np.flatnonzero(valid[i])
        assert np.all(batched[i][~valid[i]] == -1)
        chosen = batched[i][targets]
        assert len(set(chosen.tolist())) == len(targets) and np.all(chosen >= 0)
        best = min(
            (sum(cost[i, q, t] for q, t in zip(perm, targets, strict=True)))
            for perm in itertools.permutations(range(cost.shape[1]), len(targets))
        )
        np.testing.assert_allclose(cost[i, chosen, targets].sum(), best, rtol=1e-6)


# What the host matcher (scipy through a callback) put in place of NaN and +-inf costs.
_STAND_IN = 1e8


def _host_costs(cost):
    return np.nan_to_num(
        np.asarray(cost, np.float64), nan=_STAND_IN, posinf=_STAND_IN, neginf=-_STAND_IN
    )


def _hard_costs(b, q, n, seed):
    """[b, q, n] costs and [b, n] validity: uniform, tied (integers 0..2), all equal, and with NaN,
    +inf and -inf (one image has a target whose costs are all NaN); every number of valid
    targets from none to all of them."""
    rng = np.random.default_rng(seed)
    kind = np.arange(b) % 4
    cost = rng.uniform(-1, 3, (b, q, n))
    cost[kind == 1] = rng.integers(0, 3, (int((kind == 1).sum()), q, n))
    cost[kind == 2] = 0.7
    special = (kind == 3)[:, None, None] & (rng.uniform(size=(b, q, n)) < 0.3)
    cost[special] = rng.choice([np.nan, np.inf, -np.inf], int(special.sum()))
    cost[3, :, 0] = np.nan
    valid = np.arange(n)[None] < (np.arange(b) % (n + 1))[:, None]  # 0..n valid targets
    valid = np.take_along_axis(valid, np.argsort(rng.uniform(size=(b, n)), 1), 1)  # scattered
    valid[3, 0] = True
    return cost.astype(np.float32), valid


def _brute_force_minimum(cost, targets):
    """The least total over every assignment of min(len(targets), Q) targets to distinct queries."""
    q = cost.shape[0]
    if len(targets) <= q:
        choices = ((a, targets) for a in itertools.permutations(range(q), len(targets)))
    else:
        choices = ((range(q), t) for t in itertools.permutations(targets, q))
    return min(sum(cost[a, t] for a, t in zip(*pair, strict=True)) for pair in choices)


def _check_minimal(cost, valid, matched):
    """Asserts that each image's real targets, as many as there are queries, get distinct queries
    and padded ones -1, at scipy's minimum total cost and the brute-force minimum."""
    q = cost.shape[1]
    host = _host_costs(cost)
    for i in range(len(cost)):
        targets = np.flatnonzero(valid[i])
        assert np.all(matched[i][~valid[i]] == -1), (i, matched[i])
        kept = targets[matched[i][targets] >= 0]
        queries = matched[i][kept]
        assert len(kept) == min(len(targets), q) and len(set(queries.tolist())) == len(kept)
        total = host[i, queries, kept].sum()
        rows, cols = linear_sum_assignment(host[i][:, targets])
        np.testing.assert_allclose(total, host[i][:, targets][rows, cols].sum(), rtol=0, atol=1e-4)
        brute = _brute_force_minimum(host[i], targets)
        np.testing.assert_allclose(total, brute, rtol=0, atol=1e-4)


@pytest.mark.parametrize("q, n", [(5, 5), (3, 5)], ids=["targets<=queries", "targets>queries"])
def test_hungarian_match_equals_scipy_on_ties_inf_nan_and_padding(q, n):
    cost, valid = _hard_costs(64, q, n, seed=q)
    _check_minimal(cost, valid, np.asarray(hungarian_match(cost, valid)))


def test_hungarian_match_without_target_slots_is_empty():
    matched = hungarian_match(np.zeros((3, 4, 0), np.float32), np.zeros((3, 0), bool))
    assert matched.shape == (3, 0) and matched.dtype == jnp.int32


def test_matching_runs_on_each_device_alone():
    """Split over four devices, the matcher calls no host callback and shares one integer (the
    batch's last real target slot, which bounds its loops), and gives the one-device result; it
    also runs per shard inside shard_map."""
    cost, valid = _hard_costs(64, 5, 5, seed=5)  # the shape of the test above: compiled once
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    split = NamedSharding(mesh, PartitionSpec("data"))
    args = jax.device_put((cost, valid), split)
    compiled = jax.jit(hungarian_match, out_shardings=split).lower(*args).compile()
    hlo = compiled.as_text()
    assert "custom-call" not in hlo
    collective = r"= (\S+) (all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)\("
    shared = [m.groups() for m in re.finditer(collective, hlo)]
    assert shared == [("s32[]", "all-reduce")], shared
    expected = np.asarray(hungarian_match(cost, valid))
    np.testing.assert_array_equal(compiled(*args), expected)
    per_shard = jax.shard_map(
        hungarian_match, mesh=mesh, in_specs=PartitionSpec("data"), out_specs=PartitionSpec("data")
    )
    np.testing.assert_array_equal(jax.jit(per_shard)(*args), expected)


# -- the set loss ---------------------------------------------------------------------------------
def _hand_terms(task, logits, boxes, batch):
    terms = jax.jit(task.loss_terms)(jnp.asarray(logits)[None], jnp.asarray(boxes)[None], batch)
    return jax.device_get(terms)


def test_cross_entropy_is_a_weighted_mean_over_queries():
    """100 queries, 3 objects: the weights sum to 3 + 97 * 0.1 = 12.7 (not 100)."""
    task = Detection(num_classes=K)
    q = 100
    logits = np.zeros((1, q, K + 1), np.float32)
    logits[..., K] = 2.0  # every query leans to no-object
    targets = np.array([[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.8, 0.7, 0.2, 0.3]])
    boxes = np.full((1, q, 4), 0.5, np.float32)
    boxes[0, :3] = targets  # queries 0..2 sit exactly on the objects
    batch = {
        "boxes": targets[None].astype(np.float32),
        "labels": np.array([[0, 1, 2]], np.int32),
        "box_mask": np.ones((1, 3), bool),
        "mask": np.ones(1, bool),
    }
    terms = _hand_terms(task, logits, boxes, batch)
    log_z = math.log(math.exp(2.0) + K)
    np.testing.assert_allclose(terms["ce_weight"], [12.7], rtol=1e-6)
    expected = (3 * log_z + 97 * 0.1 * (log_z - 2.0)) / 12.7
    metrics = task._normalize(terms)
    np.testing.assert_allclose(metrics["loss_ce"], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_bbox"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["loss_giou"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 0.0)  # argmax is no-object everywhere
    np.testing.assert_allclose(metrics["cardinality_error"], 3.0)


def test_box_losses_are_divided_by_the_boxes_of_the_whole_batch():
    """Image 0 has one box off by 0.04 in L1, image 1 three exact ones: the mean over the four
    boxes (0.01), not the mean of per-image means (0.02); a padded example adds nothing."""
    task = Detection(num_classes=K)
    targets = np.array(
        [
            [[0.3, 0.3, 0.2, 0.2], [0, 0, 0, 0], [0, 0, 0, 0]],
            [[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.8, 0.7, 0.2, 0.3]],
            [[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.1, 0.1], [0, 0, 0, 0]],
        ],
        np.float32,
    )
    boxes = np.full((3, 4, 4), 0.9, np.float32)
    boxes[:, :3] = targets
    boxes[0, 0] += [0.01, 0.01, 0.01, 0.01]
    batch = {
        "boxes": targets,
        "labels": np.zeros((3, 3), np.int32),
        "box_mask": np.array([[1, 0, 0], [1, 1, 1], [1, 1, 0]], bool),
        "mask": np.array([True, True, False]),
    }
    boxes[2, 0] = 0.0  # the padded example's predictions are far off: they must not count
    terms = _hand_terms(task, np.zeros((3, 4, K + 1), np.float32), boxes, batch)
    np.testing.assert_allclose(terms["num_boxes"], 4.0)
    np.testing.assert_allclose(task._normalize(terms)["loss_bbox"], 0.04 / 4, rtol=1e-4)
    # The padded example's queries carry no cross-entropy weight either: 2 images x 4 queries.
    np.testing.assert_allclose(terms["ce_weight"], [4 * 1.0 + 4 * 0.1], rtol=1e-6)


def test_loss_is_invariant_to_target_order_and_padding_position(setup):
    model, task, params, loss_fn = setup
    batch = _batch(seed=3, counts=[4, 2, 3, 1])
    shuffled = dict(batch)
    rng = np.random.default_rng(0)
    # Reorder every image's slots: the real boxes move among themselves and between padding.
    order = np.stack([rng.permutation(N) for _ in range(4)])
    for key in ("boxes", "labels", "box_mask"):
        shuffled[key] = np.take_along_axis(
            batch[key], order.reshape(4, N, *([1] * (batch[key].ndim - 2))), axis=1
        )
    assert not np.array_equal(shuffled["box_mask"], batch["box_mask"])
    a, ma = loss_fn(params, batch)
    b, mb = loss_fn(params, shuffled)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for key in ("loss_ce", "loss_bbox", "loss_giou", "accuracy"):
        np.testing.assert_allclose(ma[key], mb[key], rtol=1e-5, atol=1e-7)


def test_images_without_targets_leave_only_the_no_object_cross_entropy(setup):
    model, task, params, loss_fn = setup
    batch = _batch(seed=4, counts=[0, 0, 0, 0])
    loss, metrics = loss_fn(params, batch)
    _, aux = model.apply({"params": params}, batch["image"], batch["pixel_mask"])
    ce = -jax.nn.log_softmax(aux["layer_logits"], -1)[..., K]  # [L, B, Q], equal weights
    np.testing.assert_allclose(loss, ce.mean((1, 2)).sum(), rtol=1e-5)
    assert float(metrics["loss_bbox"]) == 0.0 and float(metrics["loss_giou"]) == 0.0


def test_the_loss_needs_the_decoder_layers_or_aux_loss_off(setup):
    model, _, params, _ = setup

    class NoAux(nn.Module):
        @nn.compact
        def __call__(self, image, pixel_mask, train=False):
            outputs, _ = StandIn()(image, pixel_mask)
            return outputs, {}

    batch = _batch(seed=1)
    wrapped = {"StandIn_0": params}

    def loss_shape(task, model, params):  # traces the loss without compiling it
        return jax.eval_shape(lambda p: task.loss(model, p, batch, None, train=False)[0], params)

    with pytest.raises(ValueError, match="aux_loss"):
        loss_shape(Detection(num_classes=K), NoAux(), wrapped)
    assert loss_shape(Detection(num_classes=K, aux_loss=False), NoAux(), wrapped).shape == ()
    with pytest.raises(ValueError, match="num_classes"):
        loss_shape(Detection(num_classes=K + 1), model, params)


# -- the trainer's step on one device and on four --------------------------------------------------
def _train_metrics(devices, task, model, params):
    tx, schedule = make_optimizer(
        {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"},
        10,
    )
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(0)),
    )
    sharding = jax.tree_util.tree_map(lambda _: shard_lib.replicated(mesh), state)
    step = loop.make_train_step(model, task, tx, schedule, mesh, sharding)
    batch = shard_lib.to_global(_batch(b=8, seed=5), shard_lib.batch_sharding(mesh))
    # Host copies: the step donates its state, which must not be the fixture's parameters.
    state = jax.device_put(jax.tree_util.tree_map(np.asarray, state), sharding)
    _, metrics = step(state, batch)
    return {k: float(v) for k, v in metrics.items()}


def test_jitted_train_step_on_four_devices_matches_one(setup):
    model, task, params, _ = setup
    one = _train_metrics(1, task, model, params)
    four = _train_metrics(4, task, model, params)
    assert one["loss_bbox"] > 0 and one["grad_norm"] > 0
    for key in ("loss", "loss_ce", "loss_bbox", "loss_giou", "accuracy", "grad_norm"):
        np.testing.assert_allclose(four[key], one[key], rtol=2e-5, err_msg=key)


# A small DETR on the 8 x 8 images: a ResNet stem of width 8 and one stride-2 basic block (a 4 x 4
# map), one encoder and two decoder layers of width 16. No dropout: its random bits are the same on
# any number of devices (tests/train/test_loop.py), and they would double the compile time.
SMALL_DETR = dict(
    name="detr",
    num_classes=K,
    num_queries=Q,
    d_model=16,
    num_heads=2,
    d_ff=32,
    num_encoder_layers=1,
    num_decoder_layers=2,
    dropout_rate=0.0,
    backbone="resnet18",
    backbone_stage_sizes=(1,),
    backbone_width=8,
    backbone_stem="small",
    backbone_norm="group",
    backbone_norm_groups=4,
)


def _host_params(model, inputs, seed=0):
    """Parameters drawn on the host: unit scales, zero biases, other weights N(0, 1 / fan_in).
    Compiling `model.init` would take a fifth of this test."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ("scale", "bias"):
            return np.full(leaf.shape, 1.0 if name == "scale" else 0.0, leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1]) or 1
        return (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def _detr_history(devices, model, task, tx, schedule, state, steps):
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    sharding = jax.tree_util.tree_map(lambda _: shard_lib.replicated(mesh), state)
    step = loop.make_train_step(model, task, tx, schedule, mesh, sharding)
    state = jax.device_put(state, sharding)
    history = []
    for i in range(steps):
        batch = shard_lib.to_global(_batch(b=8, seed=100 + i), shard_lib.batch_sharding(mesh))
        state, metrics = step(state, batch)
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return history


def test_ten_detr_steps_on_four_devices_match_one():
    """Each device matches its own images: the per-step losses of a DETR on four devices are
    those on one, with a fresh batch (and a fresh matching) every step."""
    steps = 10
    model = build_model(SMALL_DETR)
    task = build_task({"name": "detection"}, num_classes=K)
    # Plain SGD: Adam would turn summation-order noise in near-zero gradients into lr-sized steps.
    tx, schedule = make_optimizer(
        {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"},
        steps,
    )
    spec = types.SimpleNamespace(image_shape=(HW, HW, 3))
    params = _host_params(model, task.init_inputs(spec))
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(0)),
    )
    state = jax.device_get(state)  # host copies: each run's steps donate their own
    args = (model, task, tx, schedule, state, steps)
    one, four = _detr_history(1, *args), _detr_history(4, *args)
    assert all(m["loss_bbox"] > 0 for m in one) and one[-1]["loss"] != one[0]["loss"]
    for key in ("loss", "loss_ce", "loss_bbox", "loss_giou", "grad_norm"):
        np.testing.assert_allclose(
            [m[key] for m in four], [m[key] for m in one], rtol=1e-5, err_msg=key
        )


# -- evaluation -----------------------------------------------------------------------------------
def test_postprocess_scales_to_the_original_image():
    logits = jnp.log(jnp.array([[[0.1, 0.6, 0.1, 0.2], [0.1, 0.1, 0.1, 0.7]]]))
    boxes = jnp.array([[[0.5, 0.5, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0]]])
    scores, labels, pixels = jax.jit(postprocess)(logits, boxes, jnp.array([[100, 200]]))
    np.testing.assert_allclose(scores, [[0.6, 0.1]], rtol=1e-6)  # no-object never wins
    np.testing.assert_array_equal(labels, [[1, 0]])
    np.testing.assert_allclose(pixels, [[[50, 25, 150, 75], [0, 0, 100, 100]]], rtol=1e-6)


def _evaluate(model, task, params, batches, devices):
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    params_sharding = jax.tree_util.tree_map(lambda _: shard_lib.replicated(mesh), params)
    step = loop.make_eval_step(model, task, mesh, params_sharding)
    return loop.evaluate_split(step, model, task, params, iter(batches), mesh)


def _split(batch, size):
    """The eval pipeline's batches: the last one padded with mask=False copies."""
    n = len(batch["mask"])
    out = []
    for start in range(0, n, size):
        part = {k: v[start : start + size] for k, v in batch.items()}
        pad = size - len(part["mask"])
        if pad:
            part = {k: np.concatenate([v, np.repeat(v[:1], pad, 0)]) for k, v in part.items()}
            part["mask"][-pad:] = False
        out.append(part)
    return out


def test_coco_evaluation_through_the_loop_ignores_batch_size_and_padding(setup):
    model, task, params, _ = setup
    data = _batch(b=6, seed=7, counts=[2, 0, 4, 1, 3, 2])
    by_four = _evaluate(model, task, params, _split(data, 4), devices=4)
    by_eight = _evaluate(model, task, params, _split(data, 8), devices=4)
    assert set(by_four) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "loss", "accuracy"}
    for key, value in by_four.items():
        np.testing.assert_allclose(value, by_eight[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert by_four["loss"] > 0 and 0 <= by_four["AP"] <= 1

    # Predictions that are the ground truth itself (and low-scored leftovers) score AP 1.
    pixels = np.asarray(box_ops.to_pixels(box_ops.cxcywh_to_xyxy(data["boxes"]), data["orig_size"]))
    perfect = {
        "scores": np.where(data["box_mask"], 0.9, 0.01).astype(np.float32),
        "labels": data["labels"],
        "boxes": pixels,
        "gt_boxes": pixels,
        "gt_labels": data["labels"],
        "gt_valid": data["box_mask"],
        "orig_size": data["orig_size"],
        "image_id": data["image_id"],
        "mask": data["mask"],
    }
    sums = jax.eval_shape(lambda p, b: task.eval_sums(model, p, b), params, data)
    sums = jax.tree_util.tree_map(lambda x: np.ones(x.shape, x.dtype), sums)
    metrics = task.finalize_outputs([perfect], sums)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)


def test_plot_examples_writes_the_figure(setup, tmp_path):
    model, task, params, _ = setup
    data = task.figure_data(model, params, _batch(b=2, seed=2), ["cat", "dog", "bird"])
    (path,) = draw_examples(data, tmp_path)
    assert path == tmp_path / "detections.png" and path.stat().st_size > 1000


# -- learning -------------------------------------------------------------------------------------
def test_the_matched_loss_falls_and_boxes_move_toward_the_targets(setup):
    model, task, params, _ = setup
    batch = _batch(b=8, seed=11, counts=[1] * 8)
    tx = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state):
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: task.loss(model, p, batch, None, train=False), has_aux=True
        )(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state = tx.init(params)
    history = []
    for _ in range(40):
        params, opt_state, metrics = step(params, opt_state)
        history.append(jax.device_get(metrics))
    first = history[0]
    last = {k: np.mean([m[k] for m in history[-5:]]) for k in first}
    assert last["loss"] < 0.5 * first["loss"]
    # The matched boxes approach their targets (L1 and GIoU), and the classes are learnt.
    assert last["loss_bbox"] < 0.5 * first["loss_bbox"]
    assert last["loss_giou"] < 0.8 * first["loss_giou"]
    assert last["loss_ce"] < 0.5 * first["loss_ce"]
