"""Box geometry in jax.numpy: formats, scaling, area, IoU and generalized IoU.

Generalized IoU follows Rezatofighi, Tsoi, Gwak, Sadeghian, Reid and Savarese (2019), "Generalized
Intersection over Union: A Metric and A Loss for Bounding Box Regression", CVPR 2019, Algorithm 1:

    IoU  = |A n B| / |A u B|,
    GIoU = IoU - |C \\ (A u B)| / |C|,   C = the smallest axis-aligned box enclosing A and B,

so GIoU lies in (-1, 1], equals IoU when C is the union (one box inside the other), and tends to
-1 as two boxes move apart. DETR (Carion et al. 2020) uses -GIoU as a matching cost and 1 - GIoU
as a loss on boxes in (x0, y0, x1, y1) form.

Formats: "cxcywh" = (center x, center y, width, height), the form DETR's model predicts;
"xyxy" = (x0, y0, x1, y1), the form areas and overlaps are computed in. Boxes are normalized
([0, 1] relative to the image) or in pixels; `to_pixels`/`to_normalized` convert either format
between the two, given image sizes (height, width).

Widths and heights below zero (x1 < x0, from an unconstrained regressor) count as zero, and every
ratio divides by at least `EPS`: two zero-area boxes then have IoU = GIoU = 0 with finite
gradients instead of 0/0, which would turn the whole loss into NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-7


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1)."""
    cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h)."""
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def _xyxy_scale(size: jax.Array) -> jax.Array:
    # (h, w) -> (w, h, w, h): x coordinates and widths scale with the width, y with the height;
    # the same factors serve both formats since both list (x, y, x-extent, y-extent).
    size = jnp.asarray(size, jnp.float32)
    h, w = size[..., 0], size[..., 1]
    return jnp.stack([w, h, w, h], axis=-1)


def to_pixels(boxes: jax.Array, size: jax.Array) -> jax.Array:
    """Normalized boxes [..., n, 4] (either format) -> pixels, for image sizes [..., 2] (h, w)."""
    return boxes * _xyxy_scale(size)[..., None, :]


def to_normalized(boxes: jax.Array, size: jax.Array) -> jax.Array:
    """Pixel boxes [..., n, 4] (either format) -> [0, 1] units, for image sizes [..., 2] (h, w)."""
    return boxes / _xyxy_scale(size)[..., None, :]


def box_area(boxes: jax.Array) -> jax.Array:
    """[..., 4] xyxy -> [...] area; inverted sides count as zero."""
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)
    return jnp.maximum(x1 - x0, 0.0) * jnp.maximum(y1 - y0, 0.0)


def _intersection_union(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    lo = jnp.maximum(a[..., :2], b[..., :2])
    hi = jnp.minimum(a[..., 2:], b[..., 2:])
    wh = jnp.maximum(hi - lo, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(a) + box_area(b) - inter


def iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Intersection over union of xyxy boxes a [..., 4] and b [..., 4] (broadcast) -> [...]."""
    inter, union = _intersection_union(a, b)
    return inter / jnp.maximum(union, EPS)


def generalized_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """GIoU (Algorithm 1 of Rezatofighi et al.) of xyxy boxes a [..., 4], b [..., 4] -> [...]."""
    inter, union = _intersection_union(a, b)
    hull = box_area(
        jnp.concatenate(
            [jnp.minimum(a[..., :2], b[..., :2]), jnp.maximum(a[..., 2:], b[..., 2:])], axis=-1
        )
    )
    return inter / jnp.maximum(union, EPS) - (hull - union) / jnp.maximum(hull, EPS)


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """IoU of every pair: xyxy a [..., n, 4], b [..., m, 4] -> [..., n, m]."""
    return iou(a[..., :, None, :], b[..., None, :, :])


def pairwise_generalized_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """GIoU of every pair: xyxy a [..., n, 4], b [..., m, 4] -> [..., n, m]."""
    return generalized_iou(a[..., :, None, :], b[..., None, :, :])
