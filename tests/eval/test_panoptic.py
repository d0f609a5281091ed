"""Panoptic quality (Kirillov et al. 2019, eq. 1) on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax.eval.panoptic import PanopticQuality, panoptic_quality


def _map(shape, segments):
    """An id map with segment id k on the (row, col) slices of segments[k]."""
    ids = np.zeros(shape, np.int32)
    for k, region in segments.items():
        ids[region] = k
    return ids


# Two things on a 6x8 canvas: id 1 (class 3) a 2x2 square, id 2 (class 5) a 2x4 bar.
GT_IDS = _map((6, 8), {1: np.s_[0:2, 0:2], 2: np.s_[4:6, 2:6]})
GT_LABELS = {1: 3, 2: 5}


def _pq(pred_ids, pred_labels, gt_ids=GT_IDS, gt_labels=GT_LABELS, void=None):
    pq = PanopticQuality()
    pq.add(gt_ids, gt_labels, pred_ids, pred_labels, void)
    return pq


def test_perfect_prediction_is_one():
    # Segment ids need not agree, only the pixels and classes.
    pred = np.where(GT_IDS == 1, 7, np.where(GT_IDS == 2, 9, 0))
    assert _pq(pred, {7: 3, 9: 5}).result() == {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0}


def test_empty_prediction_is_zero():
    pq = _pq(np.zeros_like(GT_IDS), {})
    assert pq.result() == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
    assert pq.per_class()[3]["FN"] == 1 and pq.per_class()[5]["FN"] == 1


def test_one_false_positive():
    # Both things found exactly, plus a stray segment of class 3: class 3 has TP 1, FP 1:
    # PQ_3 = 1 / (1 + 1/2) = 2/3, SQ_3 = 1, RQ_3 = 2/3; class 5 scores 1. Means over 2 classes.
    pred = _map((6, 8), {1: np.s_[0:2, 0:2], 2: np.s_[4:6, 2:6], 3: np.s_[0:1, 6:8]})
    pq = _pq(pred, {1: 3, 2: 5, 3: 3})
    assert pq.per_class()[3] == pytest.approx(
        {"PQ": 2 / 3, "SQ": 1.0, "RQ": 2 / 3, "TP": 1, "FP": 1, "FN": 0}
    )
    assert pq.result() == pytest.approx({"PQ": 5 / 6, "SQ": 1.0, "RQ": 5 / 6})


def test_one_false_negative():
    # Only the bar is predicted: class 5 scores 1, class 3 (FN only) 0.
    pred = np.where(GT_IDS == 2, 1, 0)
    pq = _pq(pred, {1: 5})
    assert pq.per_class()[3] == pytest.approx(
        {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "TP": 0, "FP": 0, "FN": 1}
    )
    assert pq.result() == pytest.approx({"PQ": 0.5, "SQ": 0.5, "RQ": 0.5})


def test_iou_of_exactly_one_half_is_no_match():
    # The bar (8 px) predicted as its left half (4 px): IoU = 4 / 8 = 0.5, not above 0.5, so the
    # pair counts as one FP and one FN: PQ_5 = 0.
    pred = _map((6, 8), {1: np.s_[0:2, 0:2], 2: np.s_[4:6, 2:4]})
    pq = _pq(pred, {1: 3, 2: 5})
    assert pq.per_class()[5] == pytest.approx(
        {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "TP": 0, "FP": 1, "FN": 1}
    )
    # Three quarters of it (6 px): IoU 6/8 = 0.75, a match: PQ_5 = SQ_5 = 0.75, RQ_5 = 1.
    pred = _map((6, 8), {1: np.s_[0:2, 0:2], 2: np.s_[4:6, 2:5]})
    assert _pq(pred, {1: 3, 2: 5}).per_class()[5]["PQ"] == pytest.approx(0.75)
    # Spilling onto the background: 8 px + 4 px outside -> IoU 8 / 12 = 2/3.
    pred = _map((6, 8), {1: np.s_[0:2, 0:2], 2: np.s_[3:6, 2:6]})
    assert _pq(pred, {1: 3, 2: 5}).per_class()[5]["SQ"] == pytest.approx(2 / 3)


def test_the_class_must_agree():
    pred = np.where(GT_IDS == 1, 1, np.where(GT_IDS == 2, 2, 0))
    # The square called class 5: a FN of class 3 and a FP of class 5, whose bar still matches:
    # PQ_5 = 1 / (1 + 1/2) = 2/3.
    pq = _pq(pred, {1: 5, 2: 5})
    rows = pq.per_class()
    assert rows[3]["FN"] == 1 and rows[5] == pytest.approx(
        {"PQ": 2 / 3, "SQ": 1.0, "RQ": 2 / 3, "TP": 1, "FP": 1, "FN": 0}
    )


def test_void_pixels_leave_the_prediction():
    # Void: the two rows above the bar. A bar predicted over 16 px, 8 of them void: IoU 8/8 = 1.
    void = np.zeros_like(GT_IDS, bool)
    void[2:4, :] = True
    pred = _map((6, 8), {1: np.s_[0:2, 0:2], 2: np.s_[2:6, 2:6]})
    assert _pq(pred, {1: 3, 2: 5}, void=void).result()["PQ"] == pytest.approx(1.0)
    # A segment mostly on void pixels is dropped, not a false positive; half void is one.
    extra = pred.copy()
    extra[2:4, 6:8] = 3  # all void
    extra[0:1, 6:8] = 4  # outside void: counted
    pq = _pq(extra, {1: 3, 2: 5, 3: 3, 4: 3}, void=void)
    assert pq.per_class()[3]["FP"] == 1


def test_sums_run_over_the_dataset_not_per_image():
    # Image A: the square found exactly; image B: missed. Class 3 has TP 1, FN 1 over both:
    # PQ = 1 / (1 + 1/2) = 2/3, not the mean of the images' PQ (1 and 0).
    gt = _map((4, 4), {1: np.s_[0:2, 0:2]})
    images = [(gt, {1: 3}, gt, {1: 3}), (gt, {1: 3}, np.zeros_like(gt), {})]
    assert panoptic_quality(images) == pytest.approx({"PQ": 2 / 3, "SQ": 1.0, "RQ": 2 / 3})


def test_nothing_anywhere_scores_zero_and_bad_input_is_named():
    blank = np.zeros((3, 3), np.int32)
    assert panoptic_quality([(blank, {}, blank, {})]) == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
    with pytest.raises(ValueError, match="have no class"):
        _pq(GT_IDS, {1: 3})
    with pytest.raises(ValueError, match="one shape"):
        _pq(GT_IDS[:3], GT_LABELS)
