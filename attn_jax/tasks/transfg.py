"""TransFG's training objective (He et al. 2022, "TransFG: A Transformer Architecture for
Fine-Grained Recognition", AAAI 2022, sec. 3.3): cross-entropy plus a contrastive loss on the
class-token features, which pulls the features of one class together and pushes those of
different classes apart, where sub-categories differ in small details and the cross-entropy alone
leaves their features close:

    L_con = 1 / B^2 * sum_i [ sum_{j: y_j = y_i} (1 - Sim(z_i, z_j))
                              + sum_{j: y_j != y_i} max(Sim(z_i, z_j) - alpha, 0) ]
    L = L_cross + L_con

with Sim the cosine similarity of the L2-normalised features z (the class token after the final
LayerNorm, the head's input) and alpha = 0.4; the pairs i = j count (each contributes 0). The
features are the model's aux["pre_logits"], so the task also trains a plain ViT with the
contrastive term.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attn_jax.errors import UserError
from attn_jax.tasks.classification import Classification


class TransFGConfigError(UserError, ValueError):
    """A TransFG task option that cannot work; one line naming the key and the fix."""


def transfg_contrastive_loss(
    features: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    margin: float = 0.4,
) -> jax.Array:
    """L_con: the contrastive loss of the L2-normalised features over all pairs of the batch.

    Args:
      features: [B, D] features (normalised here).
      labels: int [B] classes.
      mask: [B] 1 for real examples, 0 for padding; None = all real. Only pairs of real examples
        count, and B is their number.
      margin: alpha, the cosine similarity below which a pair of different classes costs nothing.

    Returns:
      a float32 scalar.
    """
    z = features.astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    cos = jnp.einsum("id,jd->ij", z, z)  # [B, B]
    same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
    pair = same * (1.0 - cos) + (1.0 - same) * jnp.maximum(cos - margin, 0.0)
    if mask is None:
        count = jnp.asarray(labels.shape[0], jnp.float32)
    else:
        real = mask.astype(jnp.float32)
        pair = pair * real[:, None] * real[None, :]
        count = jnp.maximum(real.sum(), 1.0)
    return pair.sum() / (count * count)


class TransFGClassification(Classification):
    """Cross-entropy (with optional label smoothing) + `contrastive_weight` * L_con on the
    model's aux["pre_logits"]; evaluation is the classification task's (CE loss and accuracy).

    Args:
      num_classes: K.
      label_smoothing: as in `Classification`.
      contrastive_weight: weight of the contrastive term (the paper: 1).
      margin: alpha of L_con (the paper: 0.4).

    Raises:
      TransFGConfigError: a negative weight or a margin outside [-1, 1].
    """

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float = 0.0,
        contrastive_weight: float = 1.0,
        margin: float = 0.4,
    ):
        super().__init__(num_classes, label_smoothing)
        if contrastive_weight < 0:
            raise TransFGConfigError(
                f"task.contrastive_weight={contrastive_weight} is negative; use >= 0 (0: CE only)"
            )
        if not -1.0 <= margin <= 1.0:
            raise TransFGConfigError(
                f"task.margin={margin} is no cosine similarity; use a value in [-1, 1] (paper: 0.4)"
            )
        self.contrastive_weight = contrastive_weight
        self.margin = margin

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """L = L_cross + w L_con over the real (mask=True) examples, and per-batch metrics
        (loss, accuracy and the two terms, "cross_entropy" and "contrastive")."""
        if train and self.mix:
            # Mixed images have no single class, and L_con needs one per feature.
            raise TransFGConfigError(
                "task 'transfg' cannot train on mixed images (data.mixup / data.cutmix): set them "
                "to 0 or use task 'classification'"
            )
        logits, aux = model.apply(
            {"params": params}, batch["image"], train=train, rngs={"dropout": rng}
        )
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.maximum(mask.sum(), 1.0)
        cross_entropy = (self._cross_entropy(logits, batch["label"]) * mask).sum() / count
        contrastive = transfg_contrastive_loss(
            aux["pre_logits"], batch["label"], mask, margin=self.margin
        )
        loss = cross_entropy + self.contrastive_weight * contrastive
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return loss, {
            "loss": loss,
            "accuracy": (correct * mask).sum() / count,
            "cross_entropy": cross_entropy,
            "contrastive": contrastive,
        }


__all__ = ["TransFGClassification", "TransFGConfigError", "transfg_contrastive_loss"]
