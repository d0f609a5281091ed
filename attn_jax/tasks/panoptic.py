"""DETR's masks: Carion et al. 2020, "End-to-End Object Detection with Transformers", sec. 4.4
(panoptic segmentation) and appendix A.5, on top of the detection set loss (tasks/detection.py),
evaluated with panoptic quality (Kirillov et al. 2019, eval/panoptic.py) and COCO mask AP.

Loss: the box/class Hungarian loss of every decoder layer, unchanged (the matching stays the
box/class one of eq. 1), plus, for the last layer's matched queries only, the mask terms of the
official code: each matched query's mask logits are upsampled bilinearly to the target's size
(the input canvas) and compared with the target object's binary mask through

    focal   = mean over pixels of alpha_t (1 - p_t)^gamma BCE(logit, t)    (alpha 0.25, gamma 2;
              Lin et al. 2017, RetinaNet)
    DICE    = 1 - (2 sum p t + 1) / (sum p + sum t + 1)                    (Milletari et al. 2016)

each summed over matched pairs and divided by the number of real boxes of the global batch, like
the box terms, and weighted `mask_weight` and `dice_weight` (1 and 1). The target masks come from
the batch's `instances` map (1 + the box slot on each object's pixels; data/dense.py).

Panoptic inference (the official PostProcessPanoptic, things only): queries whose best real class
scores above `panoptic_threshold` (0.85) are kept; each pixel goes to the kept query with the
highest mask logit, and stays background where even that one's sigmoid is at most 0.5 (the
official post-processing gives every pixel to some query because COCO's stuff classes cover the
rest of the image; with things only, background must stay unclaimed); segments of at most 4
pixels are dropped, as there. Masks are evaluated on the input canvas (within `size`, the real
pixels), where the instance map lives: for the digit scenes that is the stored 64x64 scene.

Mask AP: every query is a detection with its score and class (as for box AP) and its mask the
pixels whose upsampled sigmoid exceeds 0.5 (the official PostProcessSegm), through pycocotools'
segm evaluation (eval/coco.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.eval.coco import METRIC_NAMES, coco_segmentation_metrics
from attn_jax.eval.panoptic import PanopticQuality
from attn_jax.tasks.detection import Detection

MASK_METRICS = ("mask_AP", "mask_AP50", "mask_AP75")
PANOPTIC_METRICS = ("PQ", "SQ", "RQ")
MIN_SEGMENT_AREA = 5  # the official post-processing drops segments of <= 4 pixels


def sigmoid_focal_loss(
    logits: jax.Array, targets: jax.Array, alpha: float = 0.25, gamma: float = 2.0
) -> jax.Array:
    """Per-element focal loss (Lin et al. 2017, eq. 5) of logits against {0, 1} targets."""
    prob = jax.nn.sigmoid(logits)
    bce = jnp.logaddexp(0.0, logits) - logits * targets  # BCE with logits, stable
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * bce


def dice_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """1 - soft DICE of masks [..., P] (pixels flattened last), +1 smoothing as in DETR."""
    prob = jax.nn.sigmoid(logits)
    numerator = 2 * (prob * targets).sum(-1)
    return 1 - (numerator + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def resize_logits(masks: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[..., h, w] -> [..., H, W] bilinearly, half-pixel centres (torch's align_corners=False)."""
    return jax.image.resize(masks, (*masks.shape[:-2], *size), "bilinear", antialias=False)


def panoptic_ids(
    logits: jax.Array, masks: jax.Array, threshold: float, size: tuple[int, int]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Things-only panoptic maps of a batch (module docstring).

    Args:
      logits: [B, Q, K + 1] class logits.
      masks: [B, Q, h, w] mask logits.
      threshold: the class score a query needs to be kept.
      size: (H, W) of the canvas.

    Returns:
      ids int32 [B, H, W] (0 background, 1 + query), scores [B, Q], labels [B, Q].
    """
    prob = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]  # as `postprocess`
    scores, labels = prob.max(-1), prob.argmax(-1).astype(jnp.int32)
    kept = scores > threshold  # [B, Q]
    up = resize_logits(masks.astype(jnp.float32), size)  # [B, Q, H, W]
    up = jnp.where(kept[..., None, None], up, -jnp.inf)
    best = up.argmax(1)  # [B, H, W]
    claimed = up.max(1) > 0  # sigmoid > 0.5
    return jnp.where(claimed, best + 1, 0).astype(jnp.int32), scores, labels


class PanopticDetection(Detection):
    """DETR with its mask head: the detection set loss plus DICE and focal mask losses, PQ/SQ/RQ
    and mask AP (module docstring). The model must return outputs["masks"] [B, Q, h, w] (DETR
    with `mask_head=True`) and the batches `instances` (a detection dataset with instance masks).

    Args:
      mask_weight: weight of the focal term (1).
      dice_weight: weight of the DICE term (1).
      focal_alpha, focal_gamma: the focal loss's alpha and gamma (0.25, 2).
      panoptic_threshold: class score a query needs to enter the panoptic map (0.85).
      (and `Detection`'s arguments)

    Evaluation metrics: Detection's (box AP and the losses), "loss_mask", "loss_dice", "PQ",
    "SQ", "RQ" (things only) and "mask_AP", "mask_AP50", "mask_AP75" (pycocotools segm), in
    [0, 1]. Choose the best checkpoint by "<split>/PQ" with target_mode "max".
    """

    target_metrics = ("PQ", "mask_AP", "AP", "AP50", "loss")
    host_metric_names = METRIC_NAMES + PANOPTIC_METRICS + MASK_METRICS
    curve_metrics = ("loss", "PQ", "mask_AP", "AP50", "loss_mask", "loss_dice")

    def __init__(
        self,
        num_classes: int,
        mask_weight: float = 1.0,
        dice_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        panoptic_threshold: float = 0.85,
        **detection_kwargs: Any,
    ):
        super().__init__(num_classes, **detection_kwargs)
        self._check_weights(mask_weight=mask_weight, dice_weight=dice_weight)
        if not 0 <= float(panoptic_threshold) < 1:
            raise ValueError(f"task.panoptic_threshold must be in [0, 1), got {panoptic_threshold}")
        self.mask_weights = (float(mask_weight), float(dice_weight))
        self.focal = (float(focal_alpha), float(focal_gamma))
        self.panoptic_threshold = float(panoptic_threshold)

    def _mask_predictions(self, model, params, batch, rng=None, train=False):
        if "instances" not in batch:
            raise ValueError(
                "the panoptic task needs the batch's 'instances' map: use a detection dataset "
                "with instance masks (digit_detection)"
            )
        outputs, layer_logits, layer_boxes = self._predictions(model, params, batch, rng, train)
        if "masks" not in outputs:
            raise ValueError("the panoptic task needs the model's masks: set model.mask_head=True")
        return outputs, layer_logits, layer_boxes

    def mask_terms(
        self, masks: jax.Array, query: jax.Array, batch: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """Sums of the focal and DICE terms over the matched targets.

        Args:
          masks: [B, Q, h, w] mask logits.
          query: [B, N] the query matched to each target (-1: none).
          batch: with "instances" [B, H, W] (1 + box slot), "box_mask", "mask".

        Returns:
          {"focal": sum over matched pairs of the per-pixel mean focal loss, "dice": sum of the
          DICE losses}.
        """
        instances = batch["instances"].astype(jnp.int32)
        size = instances.shape[1:3]
        n = query.shape[1]
        matched = (query >= 0) & batch["box_mask"].astype(bool) & batch["mask"][:, None]
        picked = jnp.take_along_axis(masks, jnp.maximum(query, 0)[..., None, None], axis=1)
        pred = resize_logits(picked.astype(jnp.float32), size).reshape(*query.shape, -1)
        slots = jnp.arange(1, n + 1)[None, :, None, None]
        target = (instances[:, None] == slots).astype(jnp.float32).reshape(*query.shape, -1)
        alpha, gamma = self.focal
        focal = sigmoid_focal_loss(pred, target, alpha, gamma).mean(-1)  # [B, N]
        dice = dice_loss(pred, target)
        weight = matched.astype(jnp.float32)
        return {"focal": (focal * weight).sum(), "dice": (dice * weight).sum()}

    def _terms(self, outputs, layer_logits, layer_boxes, batch):
        query = self.match(layer_logits, layer_boxes, batch)
        terms = self.loss_terms(layer_logits, layer_boxes, batch, query=query)
        return {**terms, **self.mask_terms(outputs["masks"], query[-1], batch)}

    def _normalize(self, terms) -> dict[str, Any]:
        metrics = super()._normalize(terms)
        xp = jnp if isinstance(terms["ce"], jax.Array) else np
        num_boxes = xp.maximum(terms["num_boxes"], 1.0)
        loss_mask, loss_dice = terms["focal"] / num_boxes, terms["dice"] / num_boxes
        w_mask, w_dice = self.mask_weights
        metrics["loss"] = metrics["loss"] + w_mask * loss_mask + w_dice * loss_dice
        return {**metrics, "loss_mask": loss_mask, "loss_dice": loss_dice}

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Detection's loss plus the weighted focal and DICE terms of the last layer's masks."""
        preds = self._mask_predictions(model, params, batch, rng, train)
        metrics = self._normalize(self._terms(*preds, batch))
        return metrics["loss"], metrics

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return self._terms(*self._mask_predictions(model, params, batch), batch)

    def eval_outputs(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Detection's outputs plus the panoptic map, every query's binary mask and the ground
        truth's instance map, all on the input canvas."""
        outputs, _, _ = self._mask_predictions(model, params, batch)
        size = batch["instances"].shape[1:3]
        ids, _, _ = panoptic_ids(outputs["logits"], outputs["masks"], self.panoptic_threshold, size)
        binary = resize_logits(outputs["masks"].astype(jnp.float32), size) > 0
        return {
            # One forward pass for both: Detection.eval_outputs would run the model again.
            **self._box_outputs(outputs, batch),
            "panoptic": ids,
            "pred_masks": binary,
            "instances": batch["instances"].astype(jnp.int32),
            "size": batch["size"],
        }

    def finalize_outputs(
        self, outputs: list[dict[str, np.ndarray]], sums: dict[str, Any]
    ) -> dict[str, float]:
        """Detection's metrics plus PQ, SQ, RQ and mask AP of the split's real examples."""
        metrics = super().finalize_outputs(outputs, sums)
        cat = {k: np.concatenate([np.asarray(o[k]) for o in outputs]) for k in outputs[0]}
        real = np.flatnonzero(cat["mask"])
        pq = PanopticQuality()
        gt_masks, gt_labels, gt_images, sizes = [], [], [], []
        det_masks, det_images = [], []
        for image, i in enumerate(real):
            h, w = (int(v) for v in cat["size"][i])
            sizes.append((h, w))
            gt_ids = cat["instances"][i, :h, :w]
            slots = np.flatnonzero(cat["gt_valid"][i])
            gt_class = {int(s) + 1: int(cat["gt_labels"][i, s]) for s in slots}
            pred_ids = drop_small_segments(cat["panoptic"][i, :h, :w])
            pred_class = {int(p): int(cat["labels"][i, p - 1]) for p in np.unique(pred_ids) if p}
            pq.add(gt_ids, gt_class, pred_ids, pred_class)
            for s in slots:
                gt_masks.append(gt_ids == s + 1)
                gt_labels.append(gt_class[int(s) + 1])
                gt_images.append(image)
            det_masks += list(cat["pred_masks"][i, :, :h, :w])
            det_images += [image] * cat["pred_masks"].shape[1]
        metrics.update(pq.result())
        segm = coco_segmentation_metrics(
            image_ids=np.arange(len(real)),
            image_sizes=np.asarray(sizes).reshape(-1, 2),
            gt_image_ids=np.asarray(gt_images, np.int64),
            gt_masks=gt_masks,
            gt_labels=np.asarray(gt_labels, np.int64),
            det_image_ids=np.asarray(det_images, np.int64),
            det_masks=det_masks,
            det_scores=cat["scores"][real].reshape(-1),
            det_labels=cat["labels"][real].reshape(-1),
        )
        metrics.update({f"mask_{k}": segm[k] for k in ("AP", "AP50", "AP75")})
        return metrics

    # -- figures ---------------------------------------------------------------------------------
    def figure_data(
        self, model, params, batch: dict[str, Any], vocab, max_images: int = 4
    ) -> dict[str, Any]:
        """Detection's figure plus {"panoptic_overlays": a few images with their ground-truth and
        predicted segments (attn_jax/figures/panoptic.py)}; {} without a real example."""
        data = super().figure_data(model, params, batch, vocab, max_images)
        real = np.flatnonzero(np.asarray(batch["mask"]))[:max_images]
        if real.size == 0:
            return data
        sub = {k: jnp.asarray(np.asarray(v)[real]) for k, v in batch.items()}
        outputs, _ = model.apply({"params": params}, sub["image"], sub["pixel_mask"], train=False)
        size = tuple(sub["instances"].shape[1:3])
        ids, scores, labels = jax.device_get(
            panoptic_ids(outputs["logits"], outputs["masks"], self.panoptic_threshold, size)
        )
        overlays: dict[str, list] = {k: [] for k in ("images", "truth", "predicted")}
        overlays.update(truth_names=[], predicted_names=[])
        for i in range(len(real)):
            h, w = (int(v) for v in np.asarray(sub["size"][i]))
            gt_ids = np.asarray(sub["instances"][i, :h, :w])
            pred_ids = drop_small_segments(ids[i, :h, :w])
            overlays["images"].append(np.asarray(sub["image"][i, :h, :w], np.float32))
            overlays["truth"].append(gt_ids)
            overlays["predicted"].append(pred_ids)
            gt_labels = np.asarray(sub["labels"][i])
            overlays["truth_names"].append(
                {
                    int(s): self._class_name(int(gt_labels[s - 1]), vocab)
                    for s in np.unique(gt_ids)
                    if s
                }
            )
            overlays["predicted_names"].append(
                {
                    int(p): f"{self._class_name(int(labels[i, p - 1]), vocab)} "
                    f"{scores[i, p - 1]:.2f}"
                    for p in np.unique(pred_ids)
                    if p
                }
            )
        return {**data, "panoptic_overlays": overlays}


def drop_small_segments(ids: np.ndarray, min_area: int = MIN_SEGMENT_AREA) -> np.ndarray:
    """The id map with segments of fewer than `min_area` pixels turned to background (0)."""
    ids = np.asarray(ids)
    values, counts = np.unique(ids, return_counts=True)
    small = values[(counts < min_area) & (values != 0)]
    return np.where(np.isin(ids, small), 0, ids)


__all__ = [
    "MASK_METRICS",
    "PANOPTIC_METRICS",
    "PanopticDetection",
    "dice_loss",
    "drop_small_segments",
    "panoptic_ids",
    "resize_logits",
    "sigmoid_focal_loss",
]
