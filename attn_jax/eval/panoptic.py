"""Panoptic quality: Kirillov, He, Girshick, Rother and Dollar 2019, "Panoptic Segmentation"
(CVPR 2019), sec. 4, eq. 1, computed the way the authors' panopticapi does (it is not on the
package index; this is an independent numpy implementation, tested on hand-computed cases).

A panoptic segmentation gives every pixel at most one segment id, and every segment one class.
Per class c, over the whole dataset:

- a predicted and a ground-truth segment of class c match when their IoU is strictly above 0.5;
  since segments of one image do not overlap, no segment can have two such partners, so the
  matching is unique and needs no assignment algorithm (Theorem 1 of the paper);
- TP = matched pairs, FP = unmatched predicted segments, FN = unmatched ground-truth segments;
- PQ_c = sum_{TP} IoU / (|TP| + |FP| / 2 + |FN| / 2)
       = [sum_{TP} IoU / |TP|] x [|TP| / (|TP| + |FP| / 2 + |FN| / 2)] = SQ_c x RQ_c,
  with SQ_c = 0 where |TP| = 0.

PQ, SQ and RQ are the means over the classes that occur (in the ground truth or the predictions,
|TP| + |FP| + |FN| > 0), as panopticapi averages; with no such class they are 0.

Void pixels (unlabelled in the ground truth, `void`): a predicted segment's void pixels are
removed from it before its IoU is taken (they count in neither intersection nor union), and a
predicted segment more than half void is dropped rather than counted as a false positive (sec. 4,
"Void labels"). Crowd regions are not modelled. The embedded digit scenes have things only (the
digits) and no stuff classes: their background is labelled "no segment" and is not void, so a
predicted mask that spills onto it lowers its IoU.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MATCH_IOU = 0.5  # a match needs IoU strictly above it


def _areas(ids: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(ids, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


class PanopticQuality:
    """Accumulates the per-class TP, FP, FN and IoU sums of panoptic segmentations.

    Call `add` once per image, then `result` for PQ, SQ and RQ over everything added.

    Attributes:
      stats: {class: [iou_sum, tp, fp, fn]} so far.
    """

    def __init__(self):
        self.stats: dict[int, list[float]] = {}

    def _row(self, label: int) -> list[float]:
        return self.stats.setdefault(int(label), [0.0, 0, 0, 0])

    def add(
        self,
        gt_ids: np.ndarray,
        gt_labels: Mapping[int, int],
        pred_ids: np.ndarray,
        pred_labels: Mapping[int, int],
        void: np.ndarray | None = None,
    ) -> None:
        """Adds one image.

        Args:
          gt_ids: int [H, W] ground-truth segment id of each pixel, 0 = no segment.
          gt_labels: class of each ground-truth segment id (ids absent from the map are segments
            of no pixel: they are ignored).
          pred_ids: int [H, W] predicted segment id of each pixel, 0 = no segment.
          pred_labels: class of each predicted segment id.
          void: bool [H, W], True on unlabelled pixels; None = none.

        Raises:
          ValueError: maps of different shapes, or a segment id without a class.
        """
        gt_ids = np.asarray(gt_ids)
        pred_ids = np.asarray(pred_ids)
        if gt_ids.shape != pred_ids.shape or gt_ids.ndim != 2:
            raise ValueError(
                f"panoptic maps must be [H, W] of one shape; got {gt_ids.shape} and "
                f"{pred_ids.shape}"
            )
        void = np.zeros(gt_ids.shape, bool) if void is None else np.asarray(void, bool)
        for ids, labels, what in (
            (gt_ids, gt_labels, "ground-truth"),
            (pred_ids, pred_labels, "predicted"),
        ):
            missing = set(np.unique(ids[ids != 0]).tolist()) - set(labels)
            if missing:
                raise ValueError(f"{what} segment ids {sorted(missing)} have no class")

        # Areas and pairwise intersections from one count over (gt id, pred id) pixel pairs.
        pairs, counts = np.unique(
            np.stack([gt_ids.ravel(), pred_ids.ravel()]), axis=1, return_counts=True
        )
        gt_area = _areas(gt_ids[gt_ids != 0])
        pred_area = _areas(pred_ids[pred_ids != 0])
        pred_void = _areas(pred_ids[void & (pred_ids != 0)])

        matched_gt, matched_pred = set(), set()
        for (g, p), inter in zip(pairs.T.tolist(), counts.tolist(), strict=True):
            if g == 0 or p == 0 or gt_labels[g] != pred_labels[p]:
                continue
            # Void pixels lie outside every ground-truth segment, so they never meet g.
            union = pred_area[p] - pred_void.get(p, 0) + gt_area[g] - inter
            iou = inter / union
            if iou > MATCH_IOU:
                row = self._row(gt_labels[g])
                row[0] += iou
                row[1] += 1
                matched_gt.add(g)
                matched_pred.add(p)
        for g in gt_area:
            if g not in matched_gt:
                self._row(gt_labels[g])[3] += 1
        for p, area in pred_area.items():
            if p not in matched_pred and pred_void.get(p, 0) <= MATCH_IOU * area:
                self._row(pred_labels[p])[2] += 1

    def per_class(self) -> dict[int, dict[str, float]]:
        """{class: {"PQ", "SQ", "RQ", "TP", "FP", "FN"}} of every class seen so far."""
        out = {}
        for label, (iou_sum, tp, fp, fn) in sorted(self.stats.items()):
            denominator = tp + 0.5 * fp + 0.5 * fn
            out[label] = {
                "PQ": iou_sum / denominator if denominator else 0.0,
                "SQ": iou_sum / tp if tp else 0.0,
                "RQ": tp / denominator if denominator else 0.0,
                "TP": float(tp),
                "FP": float(fp),
                "FN": float(fn),
            }
        return out

    def result(self) -> dict[str, float]:
        """{"PQ", "SQ", "RQ"}: means over the classes with |TP| + |FP| + |FN| > 0 (0 if none)."""
        rows = [v for v in self.per_class().values() if v["TP"] + v["FP"] + v["FN"] > 0]
        if not rows:
            return {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
        return {k: float(np.mean([r[k] for r in rows])) for k in ("PQ", "SQ", "RQ")}


def panoptic_quality(
    images: list[tuple[np.ndarray, Mapping[int, int], np.ndarray, Mapping[int, int]]],
) -> dict[str, float]:
    """PQ, SQ and RQ over images given as (gt_ids, gt_labels, pred_ids, pred_labels) tuples
    (see `PanopticQuality.add`)."""
    pq = PanopticQuality()
    for image in images:
        pq.add(*image)
    return pq.result()


__all__ = ["MATCH_IOU", "PanopticQuality", "panoptic_quality"]
