"""Semantic segmentation: per-pixel softmax cross-entropy, pixel accuracy and mIoU.

The loss is the mean cross-entropy over the pixels that count (label in [0, K) and not the ignore
label, example not padding), as mmsegmentation's CrossEntropyLoss with ignore_index averages it
for SETR (Zheng et al. 2021); auxiliary heads (SETR: layers 10/15/20/24) add their own mean
cross-entropy times `aux_weight` (0.4 in the official configs). Evaluation sums a K x K confusion
matrix over batches and devices, and `finalize` turns it into mmsegmentation's metrics (see
`attn_jax.eval.segmentation`: mIoU is the nanmean of per-class IoU, classes absent from both the
ground truth and the prediction being left out).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attn_jax.eval.segmentation import device_confusion_matrix, segmentation_metrics

# The figure kind of `figure_data` (attn_jax.figures draws it into <kind>.png).
OVERLAY_FIGURE = "segmentation_overlays"
OVERLAY_FILE = f"{OVERLAY_FIGURE}.png"


class Segmentation:
    """Loss and metrics for `model(images) -> (logits [B, H, W, K], aux)` on batches
    {"image" [B, H, W, C], "segmentation" int [B, H, W], "mask" bool [B]}.

    Args:
      num_classes: K, background included.
      ignore_label: the label of pixels that do not count (padding, ignored classes).
      aux_weight: weight of each auxiliary head's loss, for models that return
        aux["aux_logits"] (a tuple of [B, H, W, K]).
      background: class id drawn transparent in the overlays (None: all classes drawn).
      num_plot_examples: examples in the figure of `figure_data`.
    """

    evaluation = "miou"  # the evaluator type it serves (eval/evaluators.py)

    # Checkpoints are kept by mIoU: the experiment's `target_metric` is "<split>/miou" with
    # `target_mode` "max" (every metric here but "loss" is higher-is-better).
    target_metrics = ("miou", "accuracy", "loss")
    curve_metrics = ("accuracy", "loss", "miou")

    def __init__(
        self,
        num_classes: int,
        ignore_label: int = 255,
        aux_weight: float = 0.4,
        background: int | None = 0,
        num_plot_examples: int = 4,
    ):
        if num_classes < 2:
            raise ValueError(
                f"segmentation needs num_classes >= 2 (background included), got {num_classes}"
            )
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.aux_weight = float(aux_weight)
        self.background = background
        self.num_plot_examples = int(num_plot_examples)

    def init_inputs(self, spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: an image batch of size 1."""
        spec_ignore = getattr(spec, "ignore_label", None)
        if spec_ignore is not None and int(spec_ignore) != self.ignore_label:
            raise ValueError(
                f"task ignore_label={self.ignore_label} differs from the dataset's "
                f"{spec_ignore}: set task.ignore_label={spec_ignore}"
            )
        if spec.image_shape is None:
            raise ValueError(f"dataset {spec.name!r} has no images; segmentation needs images")
        return (jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32),)

    # -- pieces ----------------------------------------------------------------------------------
    def counted(self, batch: dict[str, jax.Array]) -> jax.Array:
        """float32 [B, H, W]: 1 where a pixel counts (valid label, real example), else 0."""
        labels = batch["segmentation"]
        valid = (labels >= 0) & (labels < self.num_classes) & (labels != self.ignore_label)
        valid = valid & batch["mask"].astype(bool)[:, None, None]
        return valid.astype(jnp.float32)

    def pixel_losses(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """float32 [B, H, W] cross-entropy; pixels that do not count get any finite value."""
        safe = jnp.where((labels >= 0) & (labels < self.num_classes), labels, 0)
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)

    def _check_logits(self, logits: jax.Array, labels: jax.Array) -> None:
        if logits.shape[:-1] != labels.shape or logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"segmentation logits {tuple(logits.shape)} do not match labels "
                f"{tuple(labels.shape)} with {self.num_classes} classes: the model must return "
                "[B, H, W, num_classes] at the label resolution"
            )

    # -- the trainer's protocol ------------------------------------------------------------------
    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The objective (main + aux_weight * auxiliary losses) and per-batch metrics: "loss" is
        the main head's cross-entropy (comparable with the evaluation loss), "accuracy" the pixel
        accuracy; with auxiliary heads also "aux_loss" (their sum) and "total_loss"."""
        logits, aux = model.apply(
            {"params": params}, batch["image"], train=train, rngs={"dropout": rng}
        )
        labels = batch["segmentation"]
        self._check_logits(logits, labels)
        weights = self.counted(batch)
        count = jnp.maximum(weights.sum(), 1.0)
        loss = (self.pixel_losses(logits, labels) * weights).sum() / count
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        metrics = {"loss": loss, "accuracy": (correct * weights).sum() / count}
        total = loss
        aux_logits = aux.get("aux_logits", ()) if isinstance(aux, dict) else ()
        if aux_logits:
            aux_loss = sum(
                (self.pixel_losses(a, labels) * weights).sum() / count for a in aux_logits
            )
            total = loss + self.aux_weight * aux_loss
            metrics.update(aux_loss=aux_loss, total_loss=total)
        return total, metrics

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the batch: the int32 confusion matrix [K, K] (rows truth, columns
        prediction), the summed loss and the pixel count, all over counted pixels only."""
        logits, _ = model.apply({"params": params}, batch["image"], train=False)
        labels = batch["segmentation"]
        self._check_logits(logits, labels)
        weights = self.counted(batch)
        confusion = device_confusion_matrix(
            labels,
            jnp.argmax(logits, -1),
            self.num_classes,
            self.ignore_label,
            mask=batch["mask"],
        )
        return {
            "confusion": confusion,
            "loss": (self.pixel_losses(logits, labels) * weights).sum(),
            "count": weights.astype(jnp.int32).sum(),
        }

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        """{"loss", "accuracy" (pixel), "miou", "mean_accuracy", "iou/<k>" per class (NaN for a
        class absent from ground truth and prediction)}."""
        m = segmentation_metrics(np.asarray(sums["confusion"]))
        count = max(float(sums["count"]), 1.0)
        out = {
            "loss": float(sums["loss"]) / count,
            "accuracy": m["accuracy"],
            "miou": m["miou"],
            "mean_accuracy": m["mean_accuracy"],
        }
        out.update({f"iou/{k}": float(v) for k, v in enumerate(m["iou"])})
        return out

    def figure_data(self, model, params, batch: dict[str, Any], vocab) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"segmentation_overlays": the first real
        examples of `batch`, their ground truth and predicted masks}; {} when the batch holds no
        real example."""
        del vocab  # images have none
        keep = np.flatnonzero(np.asarray(batch["mask"]))[: self.num_plot_examples]
        if keep.size == 0:
            return {}
        images = np.asarray(batch["image"])[keep]
        # Compiled: op-by-op execution of a Swin or ViT-L is many times slower than one compile.
        predict = jax.jit(
            lambda p, x: jnp.argmax(model.apply({"params": p}, x, train=False)[0], -1)
        )
        return {
            OVERLAY_FIGURE: {
                "images": images,
                "truths": np.asarray(batch["segmentation"])[keep],
                "preds": np.asarray(predict(params, jnp.asarray(images))),
                "num_classes": self.num_classes,
                "ignore_label": self.ignore_label,
                "background": self.background,
            }
        }
