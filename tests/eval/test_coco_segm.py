"""COCO mask AP (pycocotools' segm evaluation) on cases whose value is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax.eval.coco import coco_segmentation_metrics


def _masks():
    # Image 0: an L-shaped object of class 1 (a box would not fit it); image 1: a bar of class 2.
    a = np.zeros((2, 40, 40), bool)
    a[0, 5:35, 5:12] = True
    a[0, 28:35, 5:30] = True
    a[1, 10:20, 0:40] = True
    return a


GT = {
    "image_ids": np.array([0, 1]),
    "image_sizes": np.array([[40, 40], [40, 40]]),
    "gt_image_ids": np.array([0, 1]),
    "gt_masks": _masks(),
    "gt_labels": np.array([1, 2]),
}


def test_perfect_masks_score_one_and_a_missed_one_halves_the_recall():
    masks = _masks()
    metrics = coco_segmentation_metrics(
        **GT,
        det_image_ids=np.array([0, 1]),
        det_masks=masks,
        det_scores=np.array([0.9, 0.8]),
        det_labels=np.array([1, 2]),
    )
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)
    # Only the L found: class 2 has AP 0, class 1 AP 1: the mean over classes is 1/2.
    missed = coco_segmentation_metrics(
        **GT,
        det_image_ids=np.array([0]),
        det_masks=masks[:1],
        det_scores=np.array([0.9]),
        det_labels=np.array([1]),
    )
    assert missed["AP"] == pytest.approx(0.5)


def test_mask_iou_not_box_iou_decides():
    # The L's bounding box filled in: box IoU 1, mask IoU = |L| / |box| = 336 / 750 = 0.45,
    # below every threshold, so class 1 scores 0 and the mean over the two classes is 1/2.
    masks = _masks()
    box = np.zeros_like(masks[0])
    box[5:35, 5:30] = True
    assert masks[0].sum() / box.sum() == pytest.approx(336 / 750)
    metrics = coco_segmentation_metrics(
        **GT,
        det_image_ids=np.array([0, 1]),
        det_masks=np.stack([box, masks[1]]),
        det_scores=np.array([0.9, 0.8]),
        det_labels=np.array([1, 2]),
    )
    assert metrics["AP50"] == pytest.approx(0.5)
