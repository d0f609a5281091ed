"""Box geometry: format and unit round trips, and IoU / GIoU against exact values (Rezatofighi et
al. 2019; the numbers are those of FAITHFULNESS.md sec. 10)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax import boxes as B


def _random_xyxy(rng, n):
    lo = rng.uniform(0, 1, (n, 2))
    return np.concatenate([lo, lo + rng.uniform(0.01, 1, (n, 2))], axis=1).astype(np.float32)


def test_format_and_unit_round_trips():
    rng = np.random.default_rng(0)
    xyxy = _random_xyxy(rng, 50)
    np.testing.assert_allclose(B.cxcywh_to_xyxy(B.xyxy_to_cxcywh(xyxy)), xyxy, atol=1e-5)
    cxcywh = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    np.testing.assert_allclose(B.cxcywh_to_xyxy(cxcywh), [[0.4, 0.3, 0.6, 0.7]], atol=1e-6)

    size = np.array([[480, 640], [100, 50]], np.int32)  # (h, w) per image
    boxes = rng.uniform(0, 1, (2, 7, 4)).astype(np.float32)
    pixels = B.to_pixels(boxes, size)
    np.testing.assert_allclose(pixels[0, :, 0], boxes[0, :, 0] * 640, rtol=1e-6)  # x by width
    np.testing.assert_allclose(pixels[1, :, 3], boxes[1, :, 3] * 100, rtol=1e-6)  # y by height
    np.testing.assert_allclose(B.to_normalized(pixels, size), boxes, rtol=1e-6)


def test_iou_and_giou_exact_values():
    a = jnp.array([0.0, 0.0, 1.0, 1.0])
    overlapping = jnp.array([0.5, 0.5, 1.5, 1.5])
    disjoint = jnp.array([2.0, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(B.iou(a, overlapping), 1 / 7, rtol=1e-6)
    # union 1.75, hull 2.25: 1/7 - 0.5/2.25
    np.testing.assert_allclose(B.generalized_iou(a, overlapping), -0.079365, atol=1e-6)
    np.testing.assert_allclose(B.generalized_iou(a, disjoint), -7 / 9, rtol=1e-6)
    np.testing.assert_allclose(B.generalized_iou(a, a), 1.0, rtol=1e-6)
    np.testing.assert_allclose(B.box_area(jnp.array([1.0, 2.0, 4.0, 3.0])), 3.0)


def test_giou_equals_iou_when_the_hull_is_the_union():
    outer = jnp.array([0.0, 0.0, 4.0, 4.0])
    inner = jnp.array([1.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(B.iou(outer, inner), 2 / 16, rtol=1e-6)
    np.testing.assert_allclose(B.generalized_iou(outer, inner), B.iou(outer, inner), rtol=1e-6)


def test_pairwise_matches_elementwise_and_giou_is_bounded():
    rng = np.random.default_rng(1)
    a, b = _random_xyxy(rng, 40), _random_xyxy(rng, 30)
    giou = np.asarray(B.pairwise_generalized_iou(a, b))
    iou = np.asarray(B.pairwise_iou(a, b))
    assert giou.shape == iou.shape == (40, 30)
    np.testing.assert_allclose(giou[3, 7], B.generalized_iou(a[3], b[7]), rtol=1e-6)
    assert np.all(giou > -1) and np.all(giou <= 1 + 1e-6)
    assert np.all(giou <= iou + 1e-6) and np.all((iou >= 0) & (iou <= 1))
    assert np.any(giou < 0) and np.any(iou > 0)  # the sample covers both regimes


@pytest.mark.parametrize(
    "other",
    [
        [2.0, 2.0, 3.0, 3.0],  # disjoint: no intersection gradient, only the hull's
        [0.5, 0.5, 0.5, 0.5],  # zero-area box inside the first
        [0.2, 0.2, 0.2, 0.9],  # zero width
    ],
)
def test_giou_gradient_is_finite_for_disjoint_and_degenerate_boxes(other):
    other = jnp.array(other)
    grad = jax.grad(lambda a: B.generalized_iou(a, other))(jnp.array([0.0, 0.0, 1.0, 1.0]))
    assert np.all(np.isfinite(grad))
    point = jnp.array([0.3, 0.3, 0.3, 0.3])
    value, grad = jax.value_and_grad(lambda a: B.generalized_iou(a, point))(point)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
