"""Segmentation metrics (mmsegmentation's convention): confusion matrix, IoU, mIoU with absent
classes left out, pixel and mean accuracy; the overlay colors."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.eval.segmentation import (
    IGNORE_RGBA,
    class_colors,
    colorize_mask,
    confusion_matrix,
    device_confusion_matrix,
    segmentation_metrics,
)

# Seven pixels, K = 4: the last is ignored (and predicted as 3, the class absent from the truth).
TRUTH = np.array([0, 0, 1, 1, 1, 2, 255])
PRED = np.array([0, 1, 1, 1, 0, 0, 3])
CONFUSION = np.array([[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_confusion_matrix_of_a_hand_example_skips_ignored_pixels():
    np.testing.assert_array_equal(confusion_matrix(TRUTH, PRED, 4), CONFUSION)


def test_confusion_matrix_mask_drops_padded_examples_and_out_of_range_labels():
    truth = np.stack([TRUTH, np.array([3, 3, 3, 3, 3, 3, 7])])  # row 1 is padding; 7 >= K
    pred = np.stack([PRED, np.zeros(7, int)])
    got = confusion_matrix(truth, pred, 4, mask=np.array([True, False]))
    np.testing.assert_array_equal(got, CONFUSION)
    got = confusion_matrix(truth, pred, 4)  # unmasked: six pixels of class 3 predicted 0
    assert got[3, 0] == 6 and got.sum() == CONFUSION.sum() + 6


def test_device_confusion_matrix_equals_numpy():
    rng = np.random.default_rng(0)
    k = 5
    truth = rng.integers(0, k, (3, 6, 7))
    truth[rng.random(truth.shape) < 0.2] = 255
    pred = rng.integers(0, k, truth.shape)
    mask = np.array([True, False, True])
    expected = np.zeros((k, k), int)
    for t, p in zip(truth[mask].ravel(), pred[mask].ravel(), strict=True):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(truth, pred, k, mask=mask), expected)
    got = device_confusion_matrix(jnp.asarray(truth), jnp.asarray(pred), k, 255, jnp.asarray(mask))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_metrics_of_the_hand_example_leave_the_absent_class_out():
    m = segmentation_metrics(CONFUSION)
    # IoU = tp / (truth + pred - tp) = 1/4, 2/4, 0/1, and NaN for class 3 (union 0).
    np.testing.assert_allclose(m["iou"][:3], [0.25, 0.5, 0.0])
    assert np.isnan(m["iou"][3])
    assert m["miou"] == pytest.approx(0.25)  # 0.1875 if class 3 counted as 0, 0.4375 as 1
    assert m["accuracy"] == pytest.approx(0.5)  # 3 of 6 counted pixels
    assert m["mean_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


def test_metrics_of_an_empty_confusion_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = segmentation_metrics(np.zeros((3, 3), int))
    assert np.isnan(m["miou"]) and np.isnan(m["accuracy"]) and np.isnan(m["mean_accuracy"])


def test_perfect_prediction_has_miou_one():
    m = segmentation_metrics(np.diag([5, 0, 2]))
    assert m["miou"] == 1.0 and m["accuracy"] == 1.0 and np.isnan(m["iou"][1])


def test_colorize_background_transparent_ignore_grey_classes_distinct():
    assert len({tuple(np.round(c, 3)) for c in class_colors(30)}) == 30
    colors = class_colors(11)
    np.testing.assert_array_equal(colors, class_colors(30)[:11])  # fixed per class id
    mask = np.array([[0, 1, 2], [255, 1, 0]])
    rgba = colorize_mask(mask, 11)
    assert (rgba[0, 0] == 0).all() and (rgba[1, 2] == 0).all()
    np.testing.assert_allclose(rgba[1, 0], IGNORE_RGBA)
    np.testing.assert_allclose(rgba[0, 1, :3], colors[1], rtol=1e-6)
    np.testing.assert_allclose(rgba[0, 1], rgba[1, 1])
    assert rgba[0, 1, 3] > 0 and not np.allclose(rgba[0, 1], rgba[0, 2])
