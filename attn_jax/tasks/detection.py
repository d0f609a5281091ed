"""Set prediction for object detection: Carion, Massa, Synnaeve, Usunier, Kirillov and Zagoruyko
(2020), "End-to-End Object Detection with Transformers" (DETR), ECCV 2020, sec. 3.1 and app. A.2.

The model predicts a fixed set of Q (class, box) pairs; the ground truth of an image is a set of
N <= Q objects padded with "no object" (class index K, the last logit). Training first finds the
permutation sigma of the predictions with the lowest matching cost (eq. 1, the Hungarian
algorithm),

    cost(i, j) = -w_class p_i(c_j) + w_L1 |b_i - b_j|_1 - w_giou GIoU(b_i, b_j),

with the probability p (not its log: the terms then have comparable ranges, detr #390) and
weights (1, 5, 2), then minimizes the Hungarian loss (eq. 2) of the matched pairs:

    L = sum_i [ -w_i log p_sigma(i)(c_i) ] / sum_i w_i
        + 1{c_i != no object} (5 |b_i - b_sigma(i)|_1 + 2 (1 - GIoU(b_i, b_sigma(i)))) / N_boxes.

The cross-entropy covers every query, weighted w = 0.1 (eos_coef) for no-object targets and 1
otherwise, and is normalized by the sum of the weights (a weighted mean, as the official code's
`F.cross_entropy(weight=...)`: 3 objects among 100 queries give 3 + 97 * 0.1 = 12.7, not 100).
The box terms are summed over matched pairs and divided by the number of real boxes in the whole
global batch (clamped at 1; the official code all-reduces that count over GPUs). Here the
cross-entropy's weighted mean is also taken over the global batch, where the official code takes
it per GPU: the loss then does not depend on the number of devices. With micro-batches
(`microbatches` > 1) both means are per micro-batch. With auxiliary decoding losses (app. A.2)
every decoder layer's predictions are matched afresh and add the same loss.

Matching is exact and runs on the device, inside the one jitted train step: the shortest
augmenting path form of the Hungarian method (R. Jonker and A. Volgenant, "A shortest augmenting
path algorithm for dense and sparse linear assignment problems", Computing 38, 1987) for
rectangular costs (D. F. Crouse, "On implementing 2D rectangular assignment algorithms", IEEE
TAES 52(4), 2016), the algorithm of scipy's linear_sum_assignment. Targets join one at a time;
each finds, by Dijkstra's search over the reduced costs c(q, n) - u(n) - v(q), the cheapest chain
of reassignments that frees a query for it, and the dual variables (u, v) keep every reduced cost
non-negative, which makes the final assignment optimal. Target r's search and path take at most
r + 1 steps, so the loops have bounds that no image's costs change and vmap over the L * B cost
matrices; they stop at the batch's last real target slot, the one number that the devices share
(an all-reduce of one integer, from the inputs). Before, scipy ran in a `jax.pure_callback` on
the global batch: one device gathered every cost matrix and the others waited for its host call
at the next all-reduce, and with four host devices on two busy cores the callback could be
starved past XLA:CPU's rendezvous timeout, which aborts the process. Now each device matches its
own images and nothing goes to the host. Measured on 2 CPU cores, per step: about 1 ms for the
digits preset (L * B = 128 matrices of 10 x 6; the callback took 2 to 5 ms) and 17 ms for a
COCO-shaped batch (96 matrices of 100 x 100 with about 7 real targets each; the callback 32 ms).
Boxes are normalized (cx, cy, w, h) relative to the unpadded image.

Evaluation reports the loss (from sums over the split) and COCO AP of the post-processed
predictions (eval/coco.py), through the trainer's host-side hook `eval_outputs` /
`finalize_outputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax import boxes as box_ops
from attn_jax.eval.coco import METRIC_NAMES, coco_detection_metrics

_BATCH_KEYS = ("image", "pixel_mask", "boxes", "labels", "box_mask", "mask")


# -- matching -------------------------------------------------------------------------------------
def _unit_costs(cost: jax.Array, valid: jax.Array) -> jax.Array:
    """[N, Q] costs of one image -> the same ranking of assignments with small, finite numbers.

    Every assignment of the valid targets sums the same number of entries, so shifting and
    scaling all of them keeps the minimum; mapping the finite ones onto [0, 1] keeps float32's
    precision for the duals, where a stand-in of 1e8 for NaN would swallow the costs of its row.
    NaN and +inf become D = N + 1 and -inf -D: no change of finite costs (at most N) can then
    make up for one more of them, the order that scipy gives stand-ins of +-1e8.
    """
    n = cost.shape[0]
    finite = jnp.isfinite(cost) & valid[:, None]
    has_finite = finite.any()
    top = jnp.finfo(cost.dtype).max
    lo = jnp.where(has_finite, jnp.where(finite, cost, top).min(), 0.0)
    hi = jnp.where(has_finite, jnp.where(finite, cost, -top).max(), 0.0)
    # Halved first: hi - lo may overflow where hi / 2 - lo / 2 does not.
    span = hi * 0.5 - lo * 0.5
    unit = jnp.where(span > 0, (cost * 0.5 - lo * 0.5) / jnp.where(span > 0, span, 1.0), 0.0)
    stand_in = float(n + 1)
    unit = jnp.where(jnp.isfinite(cost), jnp.clip(unit, 0.0, 1.0), stand_in)
    return jnp.where(jnp.isneginf(cost), -stand_in, unit)


def _shortest_augmenting_paths(cost: jax.Array, valid: jax.Array, extent: jax.Array) -> jax.Array:
    """Exact assignment of the valid rows of cost [N, C] (N <= C) to distinct columns; rows from
    `extent` on must be invalid.

    Jonker and Volgenant's shortest augmenting path method in the rectangular form of Crouse
    (2016), the algorithm behind scipy's `linear_sum_assignment`: rows join one at a time;
    Dijkstra's search over reduced costs c(i, j) - u(i) - v(j) >= 0 finds the cheapest way to
    free a column for the new row, the duals (u, v) are raised so that every reduced cost stays
    non-negative and the assigned ones zero, and the path is flipped. After row r at most r
    columns are taken, so its search ends within r + 1 steps and its path has at most r + 1
    edges: the loops' bounds depend on r and `extent` alone, not on this image's costs, so that
    under vmap every image runs the same steps and the batch splits over devices.

    Returns:
      [N] int32: the column of each row; -1 for invalid rows.
    """
    n, c = cost.shape
    rows, cols = jnp.arange(n), jnp.arange(c)
    inf = jnp.asarray(jnp.inf, cost.dtype)

    def filled(shape, value, dtype):
        # Made like the input, so that inside shard_map the loops' initial values vary over the
        # same mesh axes as their results, which a loop's carry requires.
        return jnp.full_like(cost, value, dtype, shape=shape)

    def add_row(r, state):
        u, v, col_of_row, row_of_col = state

        def search_step(_, s):
            # Scanned rows and columns form the tree of shortest paths grown from row r.
            i, dist, to_col, parent, row_seen, col_seen, sink, found = s
            row_seen = row_seen | ((rows == i) & ~found)
            reduced = dist + cost[i] - u[i] - v
            closer = ~col_seen & (reduced < to_col) & ~found
            parent = jnp.where(closer, i, parent)
            to_col = jnp.where(closer, reduced, to_col)
            open_dist = jnp.where(col_seen, inf, to_col)
            nearest = open_dist.min()
            candidates = (open_dist == nearest) & ~col_seen
            # Among equally near columns a free one ends the search at once.
            free = candidates & (row_of_col < 0)
            j = jnp.where(free.any(), free, candidates)
            j = jnp.where(j, cols, c).min()
            ends = row_of_col[j] < 0
            return (
                jnp.where(found | ends, i, row_of_col[j]),
                jnp.where(found, dist, nearest),
                to_col,
                parent,
                row_seen,
                col_seen | ((cols == j) & ~found),
                jnp.where(found, sink, j),
                found | ends,
            )

        start = (
            r + filled((), 0, jnp.int32),
            filled((), 0, cost.dtype),
            filled((c,), jnp.inf, cost.dtype),
            filled((c,), -1, jnp.int32),
            filled((n,), False, bool),
            filled((c,), False, bool),
            filled((), 0, jnp.int32),
            filled((), False, bool),
        )
        _, dist, to_col, parent, row_seen, col_seen, sink, _ = jax.lax.fori_loop(
            0, r + 1, search_step, start
        )
        # The search tree's rows rise and its columns fall by how much nearer than the sink they
        # are: reduced costs stay >= 0, and 0 along the assigned pairs and the new path.
        row_dist = to_col[jnp.maximum(col_of_row, 0)]
        new_u = u + jnp.where(rows == r, dist, jnp.where(row_seen, dist - row_dist, 0.0))
        new_v = v - jnp.where(col_seen, dist - to_col, 0.0)

        def flip_step(_, s):
            j, col_of_row, row_of_col, done = s
            i = parent[j]
            row_of_col = jnp.where((cols == j) & ~done, i, row_of_col)
            previous = col_of_row[i]
            col_of_row = jnp.where((rows == i) & ~done, j, col_of_row)
            return jnp.where(done, j, previous), col_of_row, row_of_col, done | (i == r)

        _, new_col_of_row, new_row_of_col, _ = jax.lax.fori_loop(
            0, r + 1, flip_step, (sink, col_of_row, row_of_col, filled((), False, bool))
        )
        new = (new_u, new_v, new_col_of_row, new_row_of_col)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(valid[r], a, b), new, state)

    state = (
        filled((n,), 0, cost.dtype),
        filled((c,), 0, cost.dtype),
        filled((n,), -1, jnp.int32),
        filled((c,), -1, jnp.int32),
    )
    return jax.lax.fori_loop(0, extent, add_row, state)[2]


def _match_image(cost: jax.Array, valid: jax.Array, extent: jax.Array) -> jax.Array:
    q, n = cost.shape
    unit = _unit_costs(cost.T, valid)  # [N, Q]: targets join one at a time
    if n > q:
        # More target slots than queries: columns that stand for "unmatched", dearer than any
        # reassignment among the queries can gain (entries lie in [-D, D], D = N + 1), so that
        # as many targets as possible get a query, as scipy's rectangular assignment gives.
        leftover = float(2 * n * (n + 1) + 1)
        unit = jnp.concatenate([unit, jnp.full((n, n - q), leftover, unit.dtype)], axis=1)
    column = _shortest_augmenting_paths(unit, valid, extent)
    return jnp.where(valid & (column >= 0) & (column < q), column, -1).astype(jnp.int32)


@jax.jit
def hungarian_match(cost: jax.Array, target_valid: jax.Array) -> jax.Array:
    """The minimum-cost one-to-one assignment of targets to queries, per image.

    Exact (the minimum of `scipy.optimize.linear_sum_assignment`) and traced: jax.numpy in loops
    whose lengths depend on the batch's last real target slot alone, so that it runs inside the
    jitted step on any device, each device on its own images (module docstring). The cost is
    taken through `stop_gradient`, as the official matcher runs under no_grad. NaN and +inf
    costs are avoided wherever an assignment without them exists and -inf costs preferred, as
    scipy does with stand-ins of +-1e8.

    Args:
      cost: [B, Q, N] cost of predicting target n with query q.
      target_valid: [B, N] bool, False for padding.

    Returns:
      [B, N] int32: the query matched to each target; -1 for padded targets (and for real ones
      left over when an image has more targets than queries).
    """
    b, q, n = cost.shape
    if n == 0 or q == 0:
        return jnp.full((b, n), -1, jnp.int32)
    cost = jax.lax.stop_gradient(cost).astype(jnp.float32)
    valid = jnp.asarray(target_valid, bool)
    # Targets up to the batch's last real one: padded slots cost nothing (the work grows with the
    # square of the slots: 100 of them for COCO, about 7 real). This max over the batch is the
    # one number the devices exchange, from the inputs alone.
    extent = jnp.where(valid, jnp.arange(n) + 1, 0).max()
    return jax.vmap(_match_image, in_axes=(0, 0, None))(cost, valid, extent)


# -- post-processing ------------------------------------------------------------------------------
def postprocess(
    logits: jax.Array, boxes: jax.Array, orig_size: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Detections in the original image, as DETR's PostProcess makes them for COCO evaluation.

    Args:
      logits: [B, Q, K + 1] class logits, the last one "no object".
      boxes: [B, Q, 4] normalized (cx, cy, w, h).
      orig_size: [B, 2] (height, width) of the original images.

    Returns:
      scores [B, Q] (the highest probability of a real class, the softmax taken over all K + 1),
      labels [B, Q] (its class) and boxes [B, Q, 4] (x0, y0, x1, y1) in original-image pixels.
    """
    prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]
    scores = prob.max(-1)
    labels = prob.argmax(-1).astype(jnp.int32)
    pixels = box_ops.to_pixels(box_ops.cxcywh_to_xyxy(boxes.astype(jnp.float32)), orig_size)
    return scores, labels, pixels


# -- the task -------------------------------------------------------------------------------------
class Detection:
    """Hungarian matching, the set loss and COCO evaluation for DETR-style models.

    The model is called as `model.apply({"params": p}, image, pixel_mask, train=...)` and returns
    ({"logits": [B, Q, K + 1], "boxes": [B, Q, 4] normalized cxcywh}, aux), with
    aux["layer_logits"] [L, B, Q, K + 1] and aux["layer_boxes"] [L, B, Q, 4] for all L decoder
    layers (the last equal to the output) when `aux_loss` is on.

    Args:
      num_classes: K; class index K means "no object" (COCO: K = 91, the largest id + 1).
      eos_coef: cross-entropy weight of no-object targets (0.1).
      class_cost, bbox_cost, giou_cost: matching-cost weights (1, 5, 2).
      ce_weight, bbox_weight, giou_weight: loss weights (1, 5, 2).
      aux_loss: add the loss of every decoder layer, each matched afresh (app. A.2).
      class_names: names of the classes for figures (index = class id); default: the ids.
      plot_threshold: figures show predictions scoring above it (else the top three).

    Evaluation metrics: "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
    "ARs", "ARm", "ARl" (COCO, in [0, 1]), "loss", "loss_ce", "loss_bbox", "loss_giou",
    "accuracy", "cardinality_error". The best checkpoint is chosen by the config's
    `target_metric`: "<eval split>/AP" (or ".../AP50") with `target_mode` "max".
    """

    evaluation = "coco"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("AP", "AP50", "loss")
    host_metric_names = METRIC_NAMES  # reported by finalize_outputs, besides finalize's
    curve_metrics = ("loss", "accuracy", "AP", "AP50", "loss_bbox", "loss_giou")

    def __init__(
        self,
        num_classes: int,
        eos_coef: float = 0.1,
        class_cost: float = 1.0,
        bbox_cost: float = 5.0,
        giou_cost: float = 2.0,
        ce_weight: float = 1.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        aux_loss: bool = True,
        class_names: Sequence[str] | None = None,
        plot_threshold: float = 0.5,
    ):
        if int(num_classes) < 1:
            raise ValueError(f"task.num_classes must be >= 1, got {num_classes}")
        self._check_weights(
            eos_coef=eos_coef,
            class_cost=class_cost,
            bbox_cost=bbox_cost,
            giou_cost=giou_cost,
            ce_weight=ce_weight,
            bbox_weight=bbox_weight,
            giou_weight=giou_weight,
        )
        self.num_classes = int(num_classes)
        self.eos_coef = float(eos_coef)
        self.costs = (float(class_cost), float(bbox_cost), float(giou_cost))
        self.weights = (float(ce_weight), float(bbox_weight), float(giou_weight))
        self.aux_loss = bool(aux_loss)
        self.class_names = list(class_names) if class_names is not None else None
        self.plot_threshold = float(plot_threshold)

    @staticmethod
    def _check_weights(**weights: float) -> None:
        """Raises ValueError for the first `task.<name>` weight below 0 (or NaN)."""
        for name, value in weights.items():
            if not float(value) >= 0:
                raise ValueError(f"task.{name} must be >= 0, got {value}")

    @staticmethod
    def init_inputs(spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: an image and its pixel mask."""
        h, w, _ = spec.image_shape
        return (
            jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32),
            jax.ShapeDtypeStruct((1, h, w), jnp.bool_),
        )

    # -- the set loss ----------------------------------------------------------------------------
    def _predictions(self, model, params, batch, rng=None, train=False):
        missing = [k for k in _BATCH_KEYS if k not in batch]
        if missing:
            raise ValueError(f"detection batches need {missing}; use a dataset of kind 'detection'")
        rngs = {"dropout": rng} if rng is not None else {}
        outputs, aux = model.apply(
            {"params": params}, batch["image"], batch["pixel_mask"], train=train, rngs=rngs
        )
        if outputs["logits"].shape[-1] != self.num_classes + 1:
            raise ValueError(
                f"the model predicts {outputs['logits'].shape[-1]} classes but the task has "
                f"num_classes={self.num_classes} + no-object; set the model's num_classes to "
                f"{self.num_classes}"
            )
        if not self.aux_loss:
            return outputs, outputs["logits"][None], outputs["boxes"][None]
        if "layer_logits" not in aux or "layer_boxes" not in aux:
            raise ValueError(
                "task.aux_loss needs the model's aux['layer_logits'] and aux['layer_boxes']; "
                "set task.aux_loss=False or enable the model's auxiliary outputs"
            )
        return outputs, aux["layer_logits"], aux["layer_boxes"]

    def match(
        self, layer_logits: jax.Array, layer_boxes: jax.Array, batch: dict[str, jax.Array]
    ) -> jax.Array:
        """The Hungarian matching of every layer's predictions (eq. 1): [L, B, N] int32, the
        query matched to each target, -1 for padded targets and padded images."""
        logits = layer_logits.astype(jnp.float32)
        n_layers, b, q, c = logits.shape
        valid = batch["box_mask"].astype(bool) & batch["mask"].astype(bool)[:, None]  # [B, N]
        labels = batch["labels"].astype(jnp.int32)
        target = batch["boxes"].astype(jnp.float32)
        # Matching costs, from the predictions without gradient: [L, B, Q, N].
        prob = jax.nn.softmax(jax.lax.stop_gradient(logits), axis=-1)
        cost_class = -jnp.einsum("lbqc,bnc->lbqn", prob, jax.nn.one_hot(labels, c))
        fixed = jax.lax.stop_gradient(layer_boxes.astype(jnp.float32))
        cost_l1 = jnp.abs(fixed[:, :, :, None, :] - target[None, :, None, :, :]).sum(-1)
        cost_giou = -box_ops.pairwise_generalized_iou(
            box_ops.cxcywh_to_xyxy(fixed), box_ops.cxcywh_to_xyxy(target)[None]
        )
        w_class, w_l1, w_giou = self.costs
        cost = w_class * cost_class + w_l1 * cost_l1 + w_giou * cost_giou
        layer_valid = jnp.broadcast_to(valid, (n_layers, *valid.shape))
        query = hungarian_match(
            cost.reshape(n_layers * b, q, -1), layer_valid.reshape(n_layers * b, -1)
        )
        return query.reshape(n_layers, b, -1)

    def loss_terms(
        self,
        layer_logits: jax.Array,
        layer_boxes: jax.Array,
        batch: dict[str, jax.Array],
        query: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Matches every layer's predictions and returns the loss's sums, before normalizing.

        Args:
          layer_logits: [L, B, Q, K + 1].
          layer_boxes: [L, B, Q, 4] normalized cxcywh.
          batch: with "boxes" [B, N, 4], "labels" [B, N], "box_mask" [B, N], "mask" [B].
          query: the matching `match` returns, when the caller has it already.

        Returns:
          Per layer [L]: "ce" (weighted cross-entropy sum), "ce_weight" (its weight sum),
          "l1" and "giou" (sums of L1 distance and 1 - GIoU over matched pairs); and scalars
          "num_boxes" (real targets), "correct" / "matched" (matched queries of the last layer
          whose argmax class is right / all of them), "cardinality" (sum over real images of
          |predicted objects - targets| of the last layer), "count" (real images).
        """
        logits = layer_logits.astype(jnp.float32)
        pred = layer_boxes.astype(jnp.float32)
        n_layers, b, q, c = logits.shape
        no_object = c - 1
        example = batch["mask"].astype(bool)
        valid = batch["box_mask"].astype(bool) & example[:, None]  # [B, N]
        labels = batch["labels"].astype(jnp.int32)
        target = batch["boxes"].astype(jnp.float32)
        target_xyxy = box_ops.cxcywh_to_xyxy(target)
        if query is None:
            query = self.match(layer_logits, layer_boxes, batch)  # [L, B, N]
        layer_valid = jnp.broadcast_to(valid, (n_layers, *valid.shape))
        matched = layer_valid & (query >= 0)
        weight = matched.astype(jnp.float32)
        safe = jnp.maximum(query, 0)

        # Box terms over matched pairs.
        pred_matched = jnp.take_along_axis(pred, safe[..., None], axis=2)  # [L, B, N, 4]
        l1 = jnp.abs(pred_matched - target[None]).sum(-1)
        giou = box_ops.generalized_iou(box_ops.cxcywh_to_xyxy(pred_matched), target_xyxy[None])

        # Class targets per query: the matched target's label, else no object.
        layer_idx = jnp.arange(n_layers)[:, None, None]
        image_idx = jnp.arange(b)[None, :, None]
        target_class = jnp.full((n_layers, b, q), no_object, jnp.int32)
        target_class = target_class.at[layer_idx, image_idx, jnp.where(matched, query, q)].set(
            jnp.broadcast_to(labels, matched.shape), mode="drop"
        )
        log_prob = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.take_along_axis(log_prob, target_class[..., None], axis=-1)[..., 0]
        ce_weight = jnp.where(target_class == no_object, self.eos_coef, 1.0)
        ce_weight = ce_weight * example[None, :, None]

        # Metrics of the last layer: classification of matched queries, and cardinality.
        last_logits = jnp.take_along_axis(logits[-1], safe[-1][..., None], axis=1)  # [B, N, C]
        correct = (jnp.argmax(last_logits, -1) == labels) & matched[-1]
        n_pred = (jnp.argmax(logits[-1], -1) != no_object).sum(-1)
        cardinality = jnp.abs(n_pred - valid.sum(-1)) * example
        return {
            "ce": (ce * ce_weight).sum((1, 2)),
            "ce_weight": ce_weight.sum((1, 2)),
            "l1": (l1 * weight).sum((1, 2)),
            "giou": ((1.0 - giou) * weight).sum((1, 2)),
            "num_boxes": valid.sum().astype(jnp.float32),
            "correct": correct.sum().astype(jnp.float32),
            "matched": matched[-1].sum().astype(jnp.float32),
            "cardinality": cardinality.sum().astype(jnp.float32),
            "count": example.sum().astype(jnp.float32),
        }

    def _normalize(self, terms) -> dict[str, jax.Array]:
        """Loss and metrics from sums (jnp or numpy): the same formula in training and eval."""
        xp = jnp if isinstance(terms["ce"], jax.Array) else np
        num_boxes = xp.maximum(terms["num_boxes"], 1.0)
        # Only an all-padding batch has no weight; its sum is 0 too, so the term is 0.
        loss_ce = terms["ce"] / xp.maximum(terms["ce_weight"], 1e-12)
        loss_bbox = terms["l1"] / num_boxes
        loss_giou = terms["giou"] / num_boxes
        w_ce, w_bbox, w_giou = self.weights
        loss = (w_ce * loss_ce + w_bbox * loss_bbox + w_giou * loss_giou).sum()
        return {
            "loss": loss,
            "accuracy": terms["correct"] / xp.maximum(terms["matched"], 1.0),
            "loss_ce": loss_ce[-1],
            "loss_bbox": loss_bbox[-1],
            "loss_giou": loss_giou[-1],
            "cardinality_error": terms["cardinality"] / xp.maximum(terms["count"], 1.0),
        }

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The Hungarian loss summed over decoder layers; metrics of the last layer (loss_ce,
        loss_bbox, loss_giou unweighted; accuracy of the matched queries' classes, which DETR
        logs as class_error = 100 * (1 - accuracy); cardinality_error)."""
        _, layer_logits, layer_boxes = self._predictions(model, params, batch, rng, train)
        metrics = self._normalize(self.loss_terms(layer_logits, layer_boxes, batch))
        return metrics["loss"], metrics

    # -- evaluation ------------------------------------------------------------------------------
    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The loss's numerators and denominators, which add up over batches and devices: the
        evaluation loss is then the set loss of the whole split, whatever the batch size."""
        _, layer_logits, layer_boxes = self._predictions(model, params, batch)
        return self.loss_terms(layer_logits, layer_boxes, batch)

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        metrics = self._normalize({k: np.asarray(v, np.float64) for k, v in sums.items()})
        return {k: float(v) for k, v in metrics.items()}

    def eval_outputs(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Post-processed predictions and the targets, in original-image pixels (x0, y0, x1, y1),
        for COCO evaluation on the host."""
        outputs, _, _ = self._predictions(model, params, batch)
        return self._box_outputs(outputs, batch)

    @staticmethod
    def _box_outputs(
        outputs: dict[str, jax.Array], batch: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """eval_outputs' entries from the model's outputs of `batch`."""
        scores, labels, boxes = postprocess(outputs["logits"], outputs["boxes"], batch["orig_size"])
        gt = box_ops.to_pixels(
            box_ops.cxcywh_to_xyxy(batch["boxes"].astype(jnp.float32)), batch["orig_size"]
        )
        return {
            "scores": scores,
            "labels": labels,
            "boxes": boxes,
            "gt_boxes": gt,
            "gt_labels": batch["labels"],
            "gt_valid": batch["box_mask"],
            "orig_size": batch["orig_size"],
            "image_id": batch["image_id"],
            "mask": batch["mask"],
        }

    def finalize_outputs(
        self, outputs: list[dict[str, np.ndarray]], sums: dict[str, Any]
    ) -> dict[str, float]:
        """COCO AP, AP50, AP75, APs/m/l and AR of the split's real examples, plus the loss."""
        cat = {k: np.concatenate([np.asarray(o[k]) for o in outputs]) for k in outputs[0]}
        real = np.flatnonzero(cat["mask"])
        # COCO ids are the examples' positions: unique even where the dataset's ids are not.
        images = np.arange(len(real))
        q = cat["scores"].shape[1]
        gt_valid = cat["gt_valid"][real].astype(bool)
        gt_image = np.broadcast_to(images[:, None], gt_valid.shape)[gt_valid]
        coco = coco_detection_metrics(
            image_ids=images,
            image_sizes=cat["orig_size"][real],
            gt_image_ids=gt_image,
            gt_boxes=cat["gt_boxes"][real][gt_valid],
            gt_labels=cat["gt_labels"][real][gt_valid],
            det_image_ids=np.repeat(images, q),
            det_boxes=cat["boxes"][real].reshape(-1, 4),
            det_scores=cat["scores"][real].reshape(-1),
            det_labels=cat["labels"][real].reshape(-1),
        )
        return {**self.finalize(sums), **coco}

    # -- figures ---------------------------------------------------------------------------------
    def _class_name(self, label: int, vocab) -> str:
        names = vocab if isinstance(vocab, Sequence) and not isinstance(vocab, str) else None
        names = names or self.class_names
        if names is not None and 0 <= label < len(names):
            return str(names[label])
        return str(label)

    def figure_data(
        self, model, params, batch: dict[str, Any], vocab, max_images: int = 4
    ) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"detections": a few images (resized,
        unpadded: the boxes' own reference frame) with the ground truth and the predicted boxes
        (score above `plot_threshold`, else the top three) in pixels, tagged with class (and
        score)}; {} when the batch holds no real example. `vocab` may be the class names (index =
        class id)."""
        real = np.flatnonzero(np.asarray(batch["mask"]))[:max_images]
        if real.size == 0:
            return {}
        sub = {k: jnp.asarray(np.asarray(v)[real]) for k, v in batch.items()}
        outputs, _ = model.apply({"params": params}, sub["image"], sub["pixel_mask"], train=False)
        size = np.asarray(sub["size"])
        scores, labels, pred = jax.device_get(
            postprocess(outputs["logits"], outputs["boxes"], size)
        )
        gt = np.asarray(
            box_ops.to_pixels(box_ops.cxcywh_to_xyxy(sub["boxes"].astype(jnp.float32)), size)
        )
        gt_labels, gt_valid = np.asarray(sub["labels"]), np.asarray(sub["box_mask"]).astype(bool)
        fields = ("images", "truth_boxes", "truth_names", "pred_boxes", "pred_names")
        data: dict[str, list] = {k: [] for k in fields}
        for i in range(len(real)):
            h, w = size[i]
            data["images"].append(np.asarray(sub["image"][i, :h, :w], np.float32))
            data["truth_boxes"].append(gt[i][gt_valid[i]])
            data["truth_names"].append(
                [self._class_name(int(c), vocab) for c in gt_labels[i][gt_valid[i]]]
            )
            keep = np.flatnonzero(scores[i] > self.plot_threshold)
            if keep.size == 0:
                keep = np.argsort(-scores[i])[:3]
            data["pred_boxes"].append(pred[i][keep])
            data["pred_names"].append(
                [f"{self._class_name(int(labels[i, j]), vocab)} {scores[i, j]:.2f}" for j in keep]
            )
        return {"detections": data}
