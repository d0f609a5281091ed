"""Feature selection as attention: one learned 0/1 mask over the input features, shared by every
sample, that keeps exactly k of them.

The mask is a straight-through top-k over learned logits: the forward pass keeps the k features
with the largest logits (a hard 0/1 mask), the backward pass uses the gradient of a sigmoid
relaxation centred between the k-th and the (k+1)-th logit. This is the straight-through
estimator of Bengio, Leonard and Courville 2013 ("Estimating or Propagating Gradients Through
Stochastic Neurons for Conditional Computation": back-propagate through a hard threshold as if
it were a smooth surrogate) applied to a top-k threshold; the optional Gumbel
perturbation of the logits during training is the Gumbel-top-k trick (Kool, van Hoof and Welling
2019, "Stochastic Beams and Where to Find Them"), which samples k features without
replacement from softmax(logits) and so lets features outside the current top k be tried.

Why not hard-concrete gates with an L0 penalty (Louizos, Welling and Kingma 2018, "Learning Sparse
Neural Networks through L0 Regularization"): the L0 penalty fixes the number of kept features
only in expectation, through a penalty weight that must be tuned anew for every k, and the
evaluation mask then needs a top-k anyway to hold exactly k. The straight-through top-k keeps
exactly k features in every forward pass, training and evaluation alike, so the classifier behind
the gate is trained on the inputs it is evaluated on, and the loss stays the task's plain
cross-entropy (no penalty term for the task to add).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """Hard 0/1 mask with ones at the k largest entries of a 1-D `logits` (ties: lower index).

    Args:
      logits: [D] scores.
      k: number of ones, 1 <= k <= D.

    Returns:
      [D] float mask with exactly k ones.
    """
    _, idx = jax.lax.top_k(logits, k)
    return jnp.zeros_like(logits).at[idx].set(1.0)


def straight_through_top_k(logits: jax.Array, k: int, temperature: float = 1.0) -> jax.Array:
    """Top-k mask whose forward value is hard and whose gradient is a sigmoid's.

    The surrogate is sigmoid((logits - t) / temperature) with t the midpoint between the k-th and
    (k+1)-th largest logit (held constant): the features on either side of the cut-off get the
    largest gradients, which are the ones whose swap would change the selection, and shifting every
    logit by a constant changes neither the mask nor its gradient.

    Args:
      logits: [D] scores.
      k: number of kept features, 1 <= k <= D.
      temperature: width of the surrogate sigmoid.

    Returns:
      [D] mask, exactly k ones in value; d mask / d logits is the surrogate's.
    """
    d = logits.shape[-1]
    hard = top_k_mask(logits, k)
    if k < d:
        top = jax.lax.top_k(logits, k + 1)[0]
        threshold = jax.lax.stop_gradient(0.5 * (top[k - 1] + top[k]))
    else:  # every feature kept: centre on the smallest one
        threshold = jax.lax.stop_gradient(jnp.min(logits))
    soft = jax.nn.sigmoid((logits - threshold) / temperature)
    # soft - soft is exactly 0 in value, so the mask is exactly 0/1 (hard + soft - soft is not).
    return hard + (soft - jax.lax.stop_gradient(soft))


class FeatureGate(nn.Module):
    """Multiplies the last axis of its input by a learned k-hot mask shared by every sample.

    Attributes:
      k: features kept.
      temperature: surrogate sigmoid width (see `straight_through_top_k`).
      gumbel_scale: scale of the Gumbel noise added to the logits when `train` (0: none); the
        noise comes from the "dropout" PRNG stream, the one the trainer provides.
      learn: False freezes the logits at their random init: a random k-subset, the baseline a
        learned selection has to beat.
    """

    k: int
    temperature: float = 1.0
    gumbel_scale: float = 0.0
    learn: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """x [..., D] -> (x * mask, mask [D]); at evaluation the mask is the deterministic top-k."""
        d = x.shape[-1]
        if not 1 <= self.k <= d:
            raise ValueError(
                f"FeatureGate keeps k={self.k} of {d} features; set k between 1 and {d}"
            )
        # Tiny random logits break the ties of a constant init, which top_k would resolve by index.
        logits = self.param("logits", nn.initializers.normal(1e-3), (d,))
        if not self.learn:
            logits = jax.lax.stop_gradient(logits)
        scores = logits
        if train and self.gumbel_scale > 0:
            gumbel_key = self.make_rng("dropout")
            scores = logits + self.gumbel_scale * jax.random.gumbel(gumbel_key, (d,))
        mask = straight_through_top_k(scores, self.k, self.temperature)
        return x * mask.astype(x.dtype), mask
