"""Semantic segmentation metrics from a confusion matrix, and the class colours of mask overlays.

The metrics follow the convention of mmsegmentation's `mean_iou` / `eval_metrics`, the evaluation
code behind the SETR results (Zheng et al. 2021) and most segmentation tables:

- confusion C[t, p]: pixels of true class t predicted as p, over the pixels that count (label not
  the ignore label, example not padding);
- IoU_k = C[k, k] / (sum_p C[k, p] + sum_t C[t, k] - C[k, k]), NaN where that union is 0 (a class
  absent from both the ground truth and the prediction);
- mIoU = nanmean over classes of IoU_k, so absent classes are left out rather than counted as 0
  or 1;
- per-class accuracy (recall) Acc_k = C[k, k] / sum_p C[k, p], NaN for classes absent from the
  ground truth; mean accuracy = nanmean of Acc_k;
- pixel accuracy ("aAcc") = trace(C) / sum(C).

The confusion matrix is a sum over pixels, so it adds up exactly over batches, devices and hosts;
`device_confusion_matrix` builds it inside a compiled evaluation step with one segment sum over
t * K + p (no [pixels, K, K] one-hot), `confusion_matrix` is the same in numpy for use outside the
trainer.
"""

from __future__ import annotations

import colorsys

import jax
import jax.numpy as jnp
import numpy as np


def _counted(truth, num_classes: int, ignore_label: int | None, mask, xp):
    valid = (truth >= 0) & (truth < num_classes)
    if ignore_label is not None:
        valid = valid & (truth != ignore_label)
    if mask is not None:
        mask = xp.asarray(mask).astype(bool)
        valid = valid & mask.reshape(mask.shape + (1,) * (truth.ndim - mask.ndim))
    return valid


def confusion_matrix(
    truth: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    ignore_label: int | None = 255,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Confusion matrix [K, K] (rows: truth, columns: prediction) of integer label maps.

    Args:
      truth: int class ids of any shape, e.g. [B, H, W]; `ignore_label` and ids outside [0, K)
        do not count.
      pred: int predicted class ids of the same shape, in [0, K).
      num_classes: K.
      ignore_label: the label of pixels that do not count (None: every label in [0, K) counts).
      mask: optional bool of the leading dims of `truth` (e.g. [B]); False = padding, not counted.

    Returns:
      int64 [K, K] pixel counts.
    """
    truth = np.asarray(truth).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and pred {pred.shape} differ in shape")
    valid = _counted(truth, num_classes, ignore_label, mask, np)
    index = truth[valid] * num_classes + pred[valid]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def device_confusion_matrix(
    truth: jax.Array,
    pred: jax.Array,
    num_classes: int,
    ignore_label: int | None = 255,
    mask: jax.Array | None = None,
) -> jax.Array:
    """`confusion_matrix` as a traceable int32 [K, K] (static shapes, no host round trip)."""
    valid = _counted(truth, num_classes, ignore_label, mask, jnp)
    # Pixels that do not count go to one extra segment that is dropped: no masking of weights.
    index = jnp.where(valid, truth * num_classes + pred, num_classes**2)
    counts = jax.ops.segment_sum(
        jnp.ones(index.size, jnp.int32), index.reshape(-1), num_segments=num_classes**2 + 1
    )
    return counts[:-1].reshape(num_classes, num_classes)


def _nanmean(x: np.ndarray) -> float:
    finite = x[~np.isnan(x)]
    return float(finite.mean()) if finite.size else float("nan")


def segmentation_metrics(confusion: np.ndarray) -> dict[str, float | np.ndarray]:
    """Pixel accuracy, mIoU, mean accuracy and per-class IoU/accuracy of a confusion matrix.

    Args:
      confusion: [K, K] counts, rows truth, columns prediction.

    Returns:
      {"accuracy": pixel accuracy, "miou": nanmean IoU, "mean_accuracy": nanmean per-class recall,
       "iou": [K] (NaN where union is 0), "class_accuracy": [K] (NaN where the class is absent
       from the ground truth)}; the scalar metrics are NaN when no pixel counted.
    """
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion matrix must be square [K, K], got shape {c.shape}")
    tp = np.diag(c)
    truth_area = c.sum(axis=1)
    pred_area = c.sum(axis=0)
    union = truth_area + pred_area - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        class_accuracy = np.where(truth_area > 0, tp / truth_area, np.nan)
    total = c.sum()
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "miou": _nanmean(iou),
        "mean_accuracy": _nanmean(class_accuracy),
        "iou": iou,
        "class_accuracy": class_accuracy,
    }


# -- overlays -------------------------------------------------------------------------------------
IGNORE_RGBA = (0.5, 0.5, 0.5, 0.75)
OVERLAY_ALPHA = 0.6


# Kelly's (1965) colors of maximum contrast, without white, black and grey (grey marks ignored
# pixels); more classes continue with hues stepped by the golden ratio.
KELLY_COLORS = (
    "#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#008856", "#E68FAC",
    "#0067A5", "#F99379", "#604E97", "#F6A600", "#B3446C", "#DCD300", "#882D17", "#8DB600",
    "#654522", "#E25822", "#2B3D26",
)  # fmt: skip


def class_colors(num_classes: int) -> np.ndarray:
    """[K, 3] fixed, well separated RGB colors in [0, 1]; class k has the same color in every
    figure."""
    colors = [tuple(int(h[i : i + 2], 16) / 255.0 for i in (1, 3, 5)) for h in KELLY_COLORS]
    golden = 0.618033988749895
    colors += [
        colorsys.hsv_to_rgb((0.13 + k * golden) % 1.0, 0.85, 0.95)
        for k in range(max(0, num_classes - len(colors)))
    ]
    return np.array(colors[:num_classes])


def colorize_mask(
    mask: np.ndarray,
    num_classes: int,
    *,
    ignore_label: int | None = 255,
    background: int | None = 0,
    alpha: float = OVERLAY_ALPHA,
) -> np.ndarray:
    """An RGBA overlay [H, W, 4] of a class-id map: class colors at `alpha`, the background class
    transparent, ignored (and out-of-range) pixels grey."""
    mask = np.asarray(mask).astype(np.int64)
    rgba = np.zeros(mask.shape + (4,), np.float32)
    inside = (mask >= 0) & (mask < num_classes)
    rgba[inside, :3] = class_colors(num_classes)[mask[inside]]
    rgba[inside, 3] = alpha
    if background is not None:
        rgba[mask == background] = 0.0
    if ignore_label is not None:
        rgba[(mask == ignore_label) | ~inside] = IGNORE_RGBA
    return rgba
