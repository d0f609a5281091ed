"""The hybrid loss of the Recurrent Attention Model: Mnih, Heess, Graves and Kavukcuoglu (2014),
"Recurrent Models of Visual Attention", sec. 3.2.

The glimpse locations are drawn from a stochastic policy pi(l_t | h) and the sensor is not
differentiable in them, so the policy learns by REINFORCE (Williams 1992) with the reward R = 1
if the final classification is correct, else 0, given once at the end (so the return from every
step is R). With a learned baseline b_t the paper's eq. 2 estimates the gradient of E[R] by

    (1/M) sum_i sum_t grad log pi(l_t^i | s^i) (R^i - b_t^i),

which here is the gradient of the surrogate  -sum_t log pi(l_t) * stop_gradient(R - b_t),
summed over time and averaged over the batch (kevinzakka/recurrent-visual-attention #10). The
hybrid objective adds the cross-entropy of the action network (trained by backpropagation, as
the paper does for classification) and the squared error of the baseline to R:

    objective = CE + baseline_weight * mean_t (b_t - R)^2 + reinforce_weight * surrogate.

The gradient is the objective's; the metric "loss" is CE + baseline_weight * baseline error
(the surrogate's value carries no meaning), the same in training and evaluation.

The model needs a PRNG stream for its location samples: it receives `rngs={"location": rng}`.
Evaluation uses the model's deterministic mode (mean locations) and reports the same terms,
except the surrogate.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from attn_jax.tasks.classification import Classification


class Reinforce(Classification):
    """Hybrid supervised + REINFORCE loss for models returning (logits, aux) with aux
    "log_probs" [B, T] (log pi of the sampled locations) and "baselines" [B, T].

    Args:
      num_classes: K.
      label_smoothing: of the cross-entropy term (the reward stays 0/1 accuracy).
      reinforce_weight: weight of the REINFORCE surrogate (1 in the paper's plain sum).
      baseline_weight: weight of the baseline's squared error.
    """

    evaluation = "reinforce"  # the evaluator type it serves (eval/evaluators.py)

    curve_metrics = ("accuracy", "loss", "reward", "baseline_error")

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float = 0.0,
        reinforce_weight: float = 1.0,
        baseline_weight: float = 1.0,
    ):
        super().__init__(num_classes, label_smoothing)
        for name, value in (
            ("reinforce_weight", reinforce_weight),
            ("baseline_weight", baseline_weight),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"task.{name} must be a number >= 0, got {value!r}")
        self.reinforce_weight = float(reinforce_weight)
        self.baseline_weight = float(baseline_weight)

    def _terms(self, logits, aux, labels) -> dict[str, jax.Array]:
        """Per-example terms [B] of the hybrid loss."""
        if "log_probs" not in aux or "baselines" not in aux:
            raise ValueError(
                "the reinforce task needs a model whose aux holds 'log_probs' and 'baselines' "
                "(e.g. model.name='ram'); use task.name='classification' for other models"
            )
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        reward = jax.lax.stop_gradient(correct)[:, None]  # R, the same return for every step
        baselines = aux["baselines"].astype(jnp.float32)  # [B, T]
        advantage = jax.lax.stop_gradient(reward - baselines)
        surrogate = -jnp.sum(aux["log_probs"].astype(jnp.float32) * advantage, axis=-1)
        baseline_mse = jnp.mean((baselines - reward) ** 2, axis=-1)
        cross_entropy = self._cross_entropy(logits, labels)
        # The surrogate's value means nothing (only its gradient does), so the reported "loss"
        # leaves it out and stays comparable between training and evaluation.
        loss = cross_entropy + self.baseline_weight * baseline_mse
        return {
            "objective": loss + self.reinforce_weight * surrogate,
            "loss": loss,
            "cross_entropy": cross_entropy,
            "reinforce": surrogate,
            "baseline_error": baseline_mse,
            "reward": correct,
            "accuracy": correct,
        }

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The hybrid objective averaged over the real (mask=True) examples, and per-batch
        metrics: loss (without the surrogate), accuracy, cross_entropy, reinforce (the
        surrogate), baseline_error, reward."""
        logits, aux = model.apply(
            {"params": params}, batch["image"], train=train, rngs={"location": rng}
        )
        mask = batch["mask"].astype(jnp.float32)
        count = jnp.maximum(mask.sum(), 1.0)
        terms = self._terms(logits, aux, batch["label"])
        metrics = {k: (v * mask).sum() / count for k, v in terms.items()}
        return metrics.pop("objective"), metrics

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the batch of every term, with the mean (deterministic) locations."""
        logits, aux = model.apply({"params": params}, batch["image"], train=False)
        mask = batch["mask"].astype(jnp.float32)
        terms = self._terms(logits, aux, batch["label"])
        for name in ("objective", "reinforce"):  # no gradient is taken here: no surrogate
            del terms[name]
        sums = {k: (v * mask).sum() for k, v in terms.items()}
        sums["count"] = mask.sum()
        return sums

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        count = max(float(sums["count"]), 1.0)
        return {k: float(v) / count for k, v in sums.items() if k != "count"}
