"""Image classification: softmax cross-entropy with optional label smoothing (Szegedy et al. 2016,
"Rethinking the Inception Architecture", sec. 7: q' = (1 - eps) q + eps / K)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


class Classification:
    """Loss and metrics for `model(images) -> (logits, aux)` on batches {image, label, mask}.

    Args:
      num_classes: K.
      label_smoothing: eps above; 0 gives plain cross-entropy.
    """

    evaluation = "classification"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("accuracy", "loss")

    def __init__(self, num_classes: int, label_smoothing: float = 0.0):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    @staticmethod
    def init_inputs(spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: an image batch of size 1."""
        return (jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32),)

    def _cross_entropy(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        targets = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
        if self.label_smoothing:
            targets = optax.smooth_labels(targets, self.label_smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean loss over the real (mask=True) examples, and per-batch metrics."""
        logits, _ = model.apply(
            {"params": params}, batch["image"], train=train, rngs={"dropout": rng}
        )
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.maximum(mask.sum(), 1.0)
        loss = (self._cross_entropy(logits, batch["label"]) * mask).sum() / count
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return loss, {"loss": loss, "accuracy": (correct * mask).sum() / count}

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the batch, so that a padded final batch and many devices add up exactly."""
        logits, _ = model.apply({"params": params}, batch["image"], train=False)
        mask = batch["mask"].astype(jnp.float32)
        loss = self._cross_entropy(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {
            "loss": (loss * mask).sum(),
            "accuracy": (correct * mask).sum(),
            "count": mask.sum(),
        }

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        count = max(float(sums["count"]), 1.0)
        return {"loss": float(sums["loss"]) / count, "accuracy": float(sums["accuracy"]) / count}

    @staticmethod
    def plot_examples(model, params, batch: dict[str, Any], vocab, out_dir) -> None:
        """Figures of where the model attends (kept pixels, glimpse paths, warped inputs), drawn
        by the model itself when it defines `plot_examples(params, batch, out_dir)`; the loop
        calls this once after training with a batch of the eval split."""
        del vocab  # images have none
        if hasattr(model, "plot_examples"):
            model.plot_examples(params, batch, out_dir)
