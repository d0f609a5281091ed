"""Image classification: softmax cross-entropy with optional label smoothing (Szegedy et al. 2016,
"Rethinking the Inception Architecture", sec. 7: q' = (1 - eps) q + eps / K).

With Mixup/CutMix on (`config.data.mixup` / `cutmix`, DeiT's recipe; the trainer copies
`data.mix_options(config.data)` into `task.mix`), each training batch is mixed on the device
with a key split from the step's key, and the loss is the cross-entropy against the mixed,
smoothed soft labels (data/mixing.py). Evaluation is never mixed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from attn_jax.data import mixing


class Classification:
    """Loss and metrics for `model(images) -> (logits, aux)` on batches {image, label, mask}.

    Args:
      num_classes: K.
      label_smoothing: eps above; 0 gives plain cross-entropy.
    """

    evaluation = "classification"  # the evaluator type it serves (eval/evaluators.py)

    # Keyword arguments of `mixing.mix_batch` (mixup_alpha, cutmix_alpha, switch_prob, prob),
    # set by the trainer from the data config; None: training batches are not mixed.
    mix: dict[str, float] | None = None

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

    def train_inputs(
        self, batch: dict[str, jax.Array], rng: jax.Array
    ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """(images, soft targets or None, dropout key) of a training batch.

        Without `mix` the batch's images, None (the loss builds its targets from the labels)
        and `rng` unchanged; with it the mixed images, their soft labels [B, K] (summing to 1,
        label smoothing included) and the other half of a split of `rng`.
        """
        if not self.mix:
            return batch["image"], None, rng
        dropout_key, mix_key = jax.random.split(rng)
        images, targets = mixing.mix_batch(
            batch["image"],
            batch["label"],
            mix_key,
            num_classes=self.num_classes,
            label_smoothing=self.label_smoothing,
            **self.mix,
        )
        return images, targets, dropout_key

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean loss over the real (mask=True) examples, and per-batch metrics.

        Training batches are mixed when `mix` is set (see `train_inputs`); the accuracy is then
        that of the mixed images against their own, unmixed labels.
        """
        images, targets, rng = (
            self.train_inputs(batch, rng) if train else (batch["image"], None, rng)
        )
        logits, _ = model.apply({"params": params}, images, train=train, rngs={"dropout": rng})
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.maximum(mask.sum(), 1.0)
        if targets is None:
            per_example = self._cross_entropy(logits, batch["label"])
        else:
            per_example = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
        loss = (per_example * mask).sum() / count
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return loss, {"loss": loss, "accuracy": (correct * mask).sum() / count}

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the batch, so that a padded final batch and many devices add up exactly."""
        logits, _ = model.apply({"params": params}, batch["image"], train=False)
        loss = self._cross_entropy(logits, batch["label"])
        return masked_accuracy_sums(logits, batch["label"], loss, batch["mask"])

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        count = max(float(sums["count"]), 1.0)
        return {"loss": float(sums["loss"]) / count, "accuracy": float(sums["accuracy"]) / count}

    @staticmethod
    def figure_data(model, params, batch: dict[str, Any], vocab) -> dict[str, Any]:
        """What the model shows of where it attends (kept pixels, glimpse paths, warped inputs),
        from its own `figure_data(params, batch)` when it defines one ({} otherwise); the trainer
        asks once after training with a batch of the eval split, and attn_jax.figures draws it."""
        del vocab  # images have none
        return model.figure_data(params, batch) if hasattr(model, "figure_data") else {}


def masked_accuracy_sums(
    logits: jax.Array, labels: jax.Array, loss: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """{"loss", "accuracy", "count"} summed over the real examples (mask 1) of a padded batch, for
    `Classification.finalize`: per-example `loss` [B], argmax accuracy of `logits` [B, K]."""
    mask = mask.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss": (loss * mask).sum(), "accuracy": (correct * mask).sum(), "count": mask.sum()}
