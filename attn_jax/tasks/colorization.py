"""Colorization as a pretext task: Zhang, Isola, Efros 2016, "Colorful Image Colorization" (ECCV
2016). The model sees the lightness L* of a colour image and predicts its chromatic channels a*b*
(CIE L*a*b*, sec. 2); labels are never read.

Objective: the regression baseline of sec. 2.1, eq. 1 (L2 on a*b*), or L1; not the paper's
classification over 313 quantized ab bins with class rebalancing (eqs. 2-4). Rebalancing exists
to counter the desaturated averages that a regression predicts where the colour is ambiguous
(natural images: a shirt may be any colour); the coloured digits (attn_jax/data/color_digits/)
have one such ambiguity, the background's hue, which is uniform and which no objective can
recover from the lightness, and none where the colour can be known: the ink's hue follows its
digit. The regression also costs 2 outputs per pixel rather than 313, and reaches zero at a
perfect prediction. With targets t = ab / AB_SCALE and predictions y (both [B, H, W, 2]):

    L2:  L = mean over the pixels of the real examples of ||y - t||^2
    L1:  L = mean over the pixels of the real examples of |y_a - t_a| + |y_b - t_b|

Evaluation reports the colour error: the mean over pixels of the Euclidean a*b* distance between
prediction and truth in L*a*b* units, i.e. Delta E*ab (CIE 1976) between the predicted colour
(the input's L*, the predicted a*b*) and the true one.

Batches hold sRGB in [0, 1] (the colour datasets are fed with mean 0 and std 1): the task converts
them to L*a*b* on the device (attn_jax/data/colorspace.py) and feeds the model the standardized
lightness (L* - lightness_mean) / lightness_std as one channel; with the statistics of the training
images, and L* an affine map of the grayscale source (as in color_digits), that input is exactly
the standardized grayscale image, so the encoder meets the same inputs when it is probed on the
grayscale digits.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from attn_jax.data.colorspace import srgb_to_lab
from attn_jax.errors import UserError

AB_SCALE = 50.0  # targets a*b* / 50: about -1..1 on the coloured digits
LOSSES = ("l2", "l1")


class ColorizationConfigError(UserError, ValueError):
    """A colorization setting that cannot work with the data or the model; one line."""


def lab_of(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(L* [B, H, W, 1], a*b* [B, H, W, 2]) of sRGB images in [0, 1]."""
    lab = srgb_to_lab(jnp.clip(images.astype(jnp.float32), 0.0, 1.0), jnp)
    return lab[..., :1], lab[..., 1:]


def colorization_loss(
    prediction: jax.Array, ab: jax.Array, weights: jax.Array, loss: str = "l2"
) -> jax.Array:
    """The mean per-pixel loss of module docstring over the weighted examples.

    Args:
      prediction: [B, H, W, 2], in units of AB_SCALE.
      ab: [B, H, W, 2] true a*b* (L*a*b* units).
      weights: [B], 1 for the real examples.
      loss: "l2" or "l1".

    Returns:
      the scalar loss (0 when no example counts).
    """
    diff = prediction.astype(jnp.float32) - ab / AB_SCALE
    per_pixel = jnp.sum(diff**2 if loss == "l2" else jnp.abs(diff), axis=-1)  # [B, H, W]
    w = jnp.broadcast_to(weights.astype(jnp.float32)[:, None, None], per_pixel.shape)
    return (per_pixel * w).sum() / jnp.maximum(w.sum(), 1.0)


class Colorization:
    """Predict a*b* from L*: `model(lightness [B, H, W, 1]) -> (a*b* / AB_SCALE [B, H, W, 2],
    aux)` on batches {"image" sRGB in [0, 1] [B, H, W, 3], "mask" bool [B]}; labels unused.

    Args:
      num_classes: ignored (the dataset's classes).
      lightness_mean: subtracted from L* before it is fed (the training images' mean L*).
      lightness_std: L* is divided by it after (their standard deviation).
      loss: "l2" (Zhang et al.'s regression baseline) or "l1".
    """

    evaluation = "colorization"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("color_error", "loss")  # configs: target_mode="min"
    curve_metrics = ("loss",)

    def __init__(
        self,
        num_classes: int = 0,
        lightness_mean: float = 50.0,
        lightness_std: float = 29.0,
        loss: str = "l2",
    ):
        del num_classes
        if loss not in LOSSES:
            raise ColorizationConfigError(
                f"colorization loss={loss!r} is not one of {', '.join(LOSSES)}"
            )
        if not lightness_std > 0:
            raise ColorizationConfigError(
                f"colorization lightness_std={lightness_std} must be positive"
            )
        self.lightness_mean = float(lightness_mean)
        self.lightness_std = float(lightness_std)
        self.loss_name = loss

    @staticmethod
    def init_inputs(spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: one lightness image."""
        if spec.image_shape is None or spec.image_shape[-1] != 3:
            raise ColorizationConfigError(
                f"colorization needs colour images (3 channels); dataset {spec.name!r} has "
                f"{'none' if spec.image_shape is None else spec.image_shape[-1]}: use "
                "color_digits, color_digit_scenes or color_digits_random"
            )
        return (jax.ShapeDtypeStruct((1, *spec.image_shape[:2], 1), jnp.float32),)

    def inputs_and_targets(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(standardized lightness [B, H, W, 1], true a*b* [B, H, W, 2]) of sRGB batches."""
        lightness, ab = lab_of(images)
        return (lightness - self.lightness_mean) / self.lightness_std, ab

    def _predict(self, model, params, inputs, *, train: bool, rng=None) -> jax.Array:
        rngs = {"dropout": rng} if rng is not None else {}
        prediction, _ = model.apply({"params": params}, inputs, train=train, rngs=rngs)
        if prediction.shape != inputs.shape[:-1] + (2,):
            raise ColorizationConfigError(
                f"colorization needs a prediction of a*b* per pixel, {inputs.shape[:-1] + (2,)}; "
                f"the model gives {tuple(prediction.shape)}: use model.name=colorizer with "
                "out_channels=2"
            )
        return prediction

    def predict_lab(self, model, params, images: jax.Array) -> jax.Array:
        """The predicted colours in L*a*b* [B, H, W, 3] (the input's L*, the predicted a*b*)."""
        inputs, _ = self.inputs_and_targets(images)
        prediction = self._predict(model, params, inputs, train=False)
        lightness = inputs * self.lightness_std + self.lightness_mean
        return jnp.concatenate([lightness, prediction * AB_SCALE], axis=-1)

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss over the real examples' pixels, and {"loss", "color_error"}."""
        inputs, ab = self.inputs_and_targets(batch["image"])
        prediction = self._predict(model, params, inputs, train=train, rng=rng)
        weights = batch["mask"].astype(jnp.float32)
        loss = colorization_loss(prediction, ab, weights, self.loss_name)
        sums = self._error_sums(prediction, ab, weights)
        return loss, {"loss": loss, "color_error": sums["color_error"] / sums["pixels"]}

    @staticmethod
    def _error_sums(prediction, ab, weights) -> dict[str, jax.Array]:
        error = jnp.linalg.norm(prediction.astype(jnp.float32) * AB_SCALE - ab, axis=-1)
        w = jnp.broadcast_to(weights[:, None, None], error.shape)
        return {"color_error": (error * w).sum(), "pixels": w.sum()}

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the real examples' pixels: the loss, the colour error and the count."""
        inputs, ab = self.inputs_and_targets(batch["image"])
        prediction = self._predict(model, params, inputs, train=False)
        weights = batch["mask"].astype(jnp.float32)
        pixels = weights.sum() * ab.shape[1] * ab.shape[2]
        loss = colorization_loss(prediction, ab, weights, self.loss_name)
        return {"loss": loss * pixels, **self._error_sums(prediction, ab, weights)}

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        pixels = max(float(sums["pixels"]), 1.0)
        return {
            "loss": float(sums["loss"]) / pixels,
            "color_error": float(sums["color_error"]) / pixels,
        }


__all__ = ["AB_SCALE", "Colorization", "ColorizationConfigError", "colorization_loss", "lab_of"]
