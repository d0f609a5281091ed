"""The Recurrent Attention Model (RAM) of Mnih, Heess, Graves and Kavukcuoglu (2014), "Recurrent
Models of Visual Attention" (NeurIPS).

Sec. 3.1 and fig. 1, one glimpse per time step t = 1..T:
  - glimpse sensor rho(x, l_{t-1}): `attn_jax.attention.glimpse.glimpse_sensor`;
  - glimpse network f_g: h_g = ReLU(Linear(rho)), h_l = ReLU(Linear(l_{t-1})),
    g_t = ReLU(Linear(h_g) + Linear(h_l))  (sec. 4.1: h_g, h_l 128 units, g 256);
  - core network f_h: h_t = ReLU(Linear(h_{t-1}) + Linear(g_t)), 256 units (sec. 4.1; an LSTM
    with `core="lstm"`, as the paper uses for its dynamic environment);
  - location network f_l: l_t ~ N(mu_t, sigma^2 I), mu_t = tanh(Linear(h_t)) with sigma FIXED
    (sec. 4.1 "a fixed variance"), the sample held constant (stop_gradient) so that no
    classification gradient reaches f_l through the sensor or f_g;
  - action network f_a: class logits = Linear(h_T) on the last state (sec. 3.1, classification
    only at the end);
  - baseline b_t = Linear(stop_gradient(h)) (sec. 3.2, the variance-reducing baseline; it learns
    by regression to the reward and sends no gradient into the core).

The first location comes from f_l on h_0 = 0 (a learned starting point: tanh of the location
layer's bias), so the T glimpses are taken at l_0 .. l_{T-1}, each drawn from the state before
it, with T log-probabilities and T baselines. The hybrid loss (sec. 3.2, eq. 2 with b_t, plus
the cross-entropy of the action network) lives in `attn_jax/tasks/reinforce.py`.

Training (`train=True`) samples the locations from the "location" PRNG stream
(`rngs={"location": key}`); evaluation (`train=False`) takes the mean location mu_t, so it is
deterministic and needs no key. By default the location network reads stop_gradient(h_t) as in
the reference implementation of kevinzakka/recurrent-visual-attention, so REINFORCE trains f_l
alone and the core learns from the classification loss; `policy_gradient_to_core=True` lets the
REINFORCE gradient reach the core and the glimpse network as in the paper's eq. 2 over all of
theta.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.glimpse import glimpse_boxes, glimpse_sensor, patch_sides
from attn_jax.models.variants import VariantTable, preset_kwargs

# Presets of sec. 4.1 (28x28 MNIST: 8x8 single-scale glimpses; 60x60 translated MNIST: 12x12
# glimpses at 3 scales); both with h_g = h_l = 128, g = 256 and a 256-unit ReLU RNN core.
RAM_VARIANTS = VariantTable(
    "RAM",
    "Mnih et al. 2014, sec. 4.1",
    {
        "paper_mnist": dict(glimpse_size=8, num_scales=1, num_glimpses=6),
        "paper_translated": dict(glimpse_size=12, num_scales=3, num_glimpses=8),
    },
)


def ram_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`RAM` fields of `variant` (None: class defaults) updated by the non-None `overrides`.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(RAM_VARIANTS, variant, overrides)


def ram_param_count(
    channels: int = 1,
    glimpse_size: int = 8,
    num_scales: int = 3,
    glimpse_hidden: int = 128,
    location_hidden: int = 128,
    glimpse_features: int = 256,
    hidden_size: int = 256,
    num_classes: int = 10,
    core: str = "rnn",
) -> int:
    """Closed-form number of trainable parameters of `RAM` (independent of the image size)."""
    rho = num_scales * glimpse_size**2 * channels
    total = rho * glimpse_hidden + glimpse_hidden  # h_g
    total += 2 * location_hidden + location_hidden  # h_l
    total += (glimpse_hidden + 1) * glimpse_features + location_hidden * glimpse_features  # g
    if core == "rnn":
        total += (hidden_size + 1) * hidden_size + glimpse_features * hidden_size
    else:  # LSTM: four gates, input kernels without bias, hidden kernels with bias
        total += 4 * (glimpse_features * hidden_size + hidden_size * hidden_size + hidden_size)
    total += (hidden_size + 1) * 2  # location mean
    total += hidden_size + 1  # baseline
    total += (hidden_size + 1) * num_classes  # action network
    return total


def _gaussian_log_prob(x: jax.Array, mean: jax.Array, std: float) -> jax.Array:
    """log N(x; mean, std^2 I) summed over the last axis (the two coordinates)."""
    z = (x - mean) / std
    return jnp.sum(-0.5 * z**2 - math.log(std) - 0.5 * math.log(2 * math.pi), axis=-1)


class _GlimpseStep(nn.Module):
    """One time step: choose l from the state, look, update the state (scanned over T)."""

    glimpse_size: int
    num_scales: int
    scale: int
    glimpse_hidden: int
    location_hidden: int
    glimpse_features: int
    hidden_size: int
    core: str
    location_std: float
    policy_gradient_to_core: bool
    train: bool

    @nn.compact
    def __call__(self, carry, images: jax.Array):
        h = carry[1] if self.core == "lstm" else carry  # LSTM carry = (c, h)
        policy_input = h if self.policy_gradient_to_core else jax.lax.stop_gradient(h)
        mean = jnp.tanh(nn.Dense(2, name="location")(policy_input))  # mu_t [B, 2]
        # The sample is a constant for backpropagation: the location is an action, and a
        # gradient through it would let the classification loss steer f_l via the glimpse
        # network (kevinzakka/recurrent-visual-attention #29); f_l learns from REINFORCE only.
        if self.train:
            noise = jax.random.normal(self.make_rng("location"), mean.shape, mean.dtype)
            sample = jax.lax.stop_gradient(mean + self.location_std * noise)
        else:
            sample = jax.lax.stop_gradient(mean)
        # The density of the draw itself, before clipping to the image (the reference code's
        # order); pi is a plain Gaussian, so the score function stays exact.
        log_prob = _gaussian_log_prob(sample, mean, self.location_std)  # [B]
        baseline = nn.Dense(1, name="baseline")(jax.lax.stop_gradient(h))[:, 0]  # [B]
        location = jnp.clip(sample, -1.0, 1.0)  # what the sensor sees

        patches = glimpse_sensor(images, location, self.glimpse_size, self.num_scales, self.scale)
        h_g = nn.relu(
            nn.Dense(self.glimpse_hidden, name="glimpse_what")(
                patches.reshape(patches.shape[0], -1)
            )
        )
        h_l = nn.relu(nn.Dense(self.location_hidden, name="glimpse_where")(location))
        g = nn.relu(
            nn.Dense(self.glimpse_features, name="glimpse_what_out")(h_g)
            + nn.Dense(self.glimpse_features, use_bias=False, name="glimpse_where_out")(h_l)
        )
        if self.core == "lstm":
            carry, _ = nn.OptimizedLSTMCell(self.hidden_size, name="core")(carry, g)
        else:
            carry = nn.relu(
                nn.Dense(self.hidden_size, name="core_recurrent")(h)
                + nn.Dense(self.hidden_size, use_bias=False, name="core_input")(g)
            )
        outputs = {
            "locations": location,
            "location_samples": sample,
            "location_means": mean,
            "log_probs": log_prob,
            "baselines": baseline,
        }
        return carry, outputs


class RAM(nn.Module):
    """Recurrent Attention Model for classification (module docstring: equations and choices).

    Attributes:
      num_classes: number of classes of the action network.
      num_glimpses: T, glimpses per image.
      glimpse_size: g_w, side of each retina patch.
      num_scales: k, patches per glimpse, each `scale` times the side of the previous.
      scale: ratio of successive patch sides (2 in the paper).
      glimpse_hidden: units of h_g (128).
      location_hidden: units of h_l (128).
      glimpse_features: units of g (256).
      hidden_size: units of the core state h (256).
      core: "rnn" (the paper's ReLU RNN) or "lstm".
      location_std: the fixed sigma of the location policy, in [-1, 1] units.
      policy_gradient_to_core: let REINFORCE gradients into the core (module docstring).
    """

    num_classes: int = 10
    num_glimpses: int = 6
    glimpse_size: int = 8
    num_scales: int = 3
    scale: int = 2
    glimpse_hidden: int = 128
    location_hidden: int = 128
    glimpse_features: int = 256
    hidden_size: int = 256
    core: str = "rnn"
    location_std: float = 0.1
    policy_gradient_to_core: bool = False

    def _check(self, images: jax.Array) -> None:
        if self.core not in ("rnn", "lstm"):
            raise ValueError(f"RAM core must be 'rnn' or 'lstm', got {self.core!r}")
        if not (isinstance(self.num_glimpses, int) and self.num_glimpses >= 1):
            raise ValueError(f"RAM num_glimpses must be an int >= 1, got {self.num_glimpses!r}")
        if not self.location_std > 0:
            raise ValueError(f"RAM location_std must be > 0, got {self.location_std!r}")
        if images.ndim != 4:
            raise ValueError(
                f"RAM expects images [B, H, W, C], got shape {tuple(images.shape)}; add a "
                "channel axis to grayscale images"
            )
        patch_sides(self.glimpse_size, self.num_scales, self.scale)  # validates the sizes

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        """Classifies `images` [B, H, W, C] after `num_glimpses` glimpses.

        Args:
          images: [B, H, W, C].
          train: sample the locations (needs `rngs={"location": key}`); False takes the means.

        Returns:
          (logits [B, num_classes], aux) with aux "locations" (what the sensor saw, clipped),
          "location_samples" (the draws, unclipped), "location_means", each [B, T, 2] as
          (row, column) in [-1, 1]; "log_probs" log pi(l_t) [B, T]; "baselines" b_t [B, T];
          "state" the last core state h_T [B, hidden_size].
        """
        self._check(images)
        batch = images.shape[0]
        step = nn.scan(
            _GlimpseStep,
            variable_broadcast="params",
            split_rngs={"params": False, "location": True},
            in_axes=nn.broadcast,
            length=self.num_glimpses,
        )(
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale=self.scale,
            glimpse_hidden=self.glimpse_hidden,
            location_hidden=self.location_hidden,
            glimpse_features=self.glimpse_features,
            hidden_size=self.hidden_size,
            core=self.core,
            location_std=self.location_std,
            policy_gradient_to_core=self.policy_gradient_to_core,
            train=train,
            name="glimpses",
        )
        h0 = jnp.zeros((batch, self.hidden_size), images.dtype)
        carry = (h0, h0) if self.core == "lstm" else h0
        carry, per_step = step(carry, images)  # per_step leaves: [T, B, ...]
        h_last = carry[1] if self.core == "lstm" else carry
        logits = nn.Dense(self.num_classes, name="classifier")(h_last)
        aux = {k: jnp.swapaxes(v, 0, 1) for k, v in per_step.items()}  # [B, T, ...]
        aux["state"] = h_last
        return logits, aux

    def figure_data(
        self, params: Mapping, batch: Mapping[str, Any], count: int = 8
    ) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"glimpse_paths": `count` images of
        `batch` (different classes first), their labels and predictions, and in evaluation mode
        (mean locations) each glimpse's location [n, T, 2], patch corners [n, T, K, 2] and the
        patch side of each scale [K]}."""
        images = np.asarray(batch["image"])
        labels = np.asarray(batch["label"])
        valid = np.asarray(batch.get("mask", np.ones(len(labels), bool)), bool)
        # One example of each class first (eval batches come sorted by digit), then the rest.
        order = np.flatnonzero(valid)
        firsts = [order[labels[order] == c][0] for c in np.unique(labels[order])]
        chosen = (firsts + [i for i in order if i not in firsts])[:count]
        images, labels = images[chosen], labels[chosen]
        logits, aux = self.apply({"params": params}, jnp.asarray(images), train=False)
        locations = np.asarray(aux["locations"])  # [n, T, 2]
        corners = glimpse_boxes(
            locations, images.shape[1:3], self.glimpse_size, self.num_scales, self.scale
        )  # [n, T, K, 2]
        return {
            "glimpse_paths": {
                "images": images,
                "labels": labels,
                "predictions": np.asarray(jnp.argmax(logits, -1)),
                "locations": locations,
                "corners": np.asarray(corners),
                "sides": patch_sides(self.glimpse_size, self.num_scales, self.scale),
            }
        }
