"""COCO AP through pycocotools on cases whose value is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax.eval.coco import METRIC_NAMES, coco_detection_metrics

# Two images: a 50x50 object of class 1 in the first, an 80x50 one of class 1 in the second
# (both "medium": between 32^2 and 96^2 pixels of area).
GT = {
    "image_ids": np.array([7, 9]),
    "image_sizes": np.array([[200, 200], [300, 400]]),
    "gt_image_ids": np.array([7, 9]),
    "gt_boxes": np.array([[10.0, 10.0, 60.0, 60.0], [100.0, 100.0, 180.0, 150.0]]),
    "gt_labels": np.array([1, 1]),
}


def _dets(image_ids, boxes, scores, labels):
    return {
        "det_image_ids": np.asarray(image_ids),
        "det_boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
        "det_scores": np.asarray(scores, np.float64),
        "det_labels": np.asarray(labels),
    }


def test_perfect_predictions_score_one():
    metrics = coco_detection_metrics(**GT, **_dets([7, 9], GT["gt_boxes"], [0.9, 0.8], [1, 1]))
    assert set(metrics) == set(METRIC_NAMES)
    for name in ("AP", "AP50", "AP75", "APm", "AR1", "AR100"):
        assert metrics[name] == pytest.approx(1.0), name
    assert metrics["APs"] == -1 and metrics["APl"] == -1  # no small or large objects


def test_one_of_two_objects_found():
    """Precision is 1 up to recall 0.5 and 0 beyond: of the 101 recall points 0, 0.01, ..., 1
    the 51 up to 0.5 have precision 1, so AP = 51/101 = 0.50495 (not 0.5) at every IoU."""
    metrics = coco_detection_metrics(**GT, **_dets([7], GT["gt_boxes"][:1], [0.9], [1]))
    for name in ("AP", "AP50", "AP75"):
        assert metrics[name] == pytest.approx(51 / 101), name
    assert metrics["AR100"] == pytest.approx(0.5)


def test_iou_threshold_and_class_matter():
    # A box 50 x 80.6 over the first object (50 x 50): IoU = 2500 / (50 * 80.6) = 0.62, a hit at
    # the thresholds 0.50, 0.55, 0.60 and a miss at the 7 others, where only the second object
    # is found (AP 51/101, its detection ranked first).
    taller = [[10.0, 10.0, 60.0, 10.0 + 50.0 / 0.62], GT["gt_boxes"][1]]
    metrics = coco_detection_metrics(**GT, **_dets([7, 9], taller, [0.8, 0.9], [1, 1]))
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(51 / 101)
    assert metrics["AP"] == pytest.approx((3 * 1.0 + 7 * 51 / 101) / 10)
    # The right box with the wrong class finds nothing of class 1.
    wrong = coco_detection_metrics(**GT, **_dets([7], GT["gt_boxes"][:1], [0.9], [2]))
    assert wrong["AP"] == 0.0


def test_no_predictions_score_zero():
    metrics = coco_detection_metrics(**GT, **_dets(np.zeros(0, int), np.zeros((0, 4)), [], []))
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["AR100"] == 0.0


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="image_ids must be unique"):
        coco_detection_metrics(
            **{**GT, "image_ids": np.array([7, 7])}, **_dets([7], GT["gt_boxes"][:1], [0.9], [1])
        )
    with pytest.raises(ValueError, match="one row per box"):
        coco_detection_metrics(**GT, **_dets([7, 9], GT["gt_boxes"][:1], [0.9], [1]))
