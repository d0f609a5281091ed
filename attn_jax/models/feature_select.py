"""A classifier behind a learned input-feature gate: feature selection as the earliest, hard form
of attention (one 0/1 mask over the pixels, shared by every image, keeping exactly k of them).

The gate is `attention.feature_selection.FeatureGate`: a straight-through top-k over learned
logits (Bengio, Leonard and Courville 2013, "Estimating or Propagating Gradients Through
Stochastic Neurons for Conditional Computation"), optionally with Gumbel-top-k exploration
(Kool, van Hoof and Welling 2019, "Stochastic Beams and Where to Find Them"); the module
docstring there says why this rather than hard-concrete L0 gates (Louizos et al. 2018). Behind the
gate sits a small ReLU MLP on the flattened image. Dropped pixels are set to 0, which for the
normalized inputs of the data pipeline is the dataset mean of that channel.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.dropout import Dropout
from attn_jax.attention.feature_selection import FeatureGate
from attn_jax.models.variants import VariantTable, preset_kwargs


class FeatureSelectMLP(nn.Module):
    """images [B, H, W, C] -> (logits [B, num_classes], aux) through a k-of-H*W*C pixel gate.

    Attributes:
      num_classes: output classes.
      k: input features (pixels x channels) kept by the gate.
      hidden_sizes: widths of the MLP's hidden layers.
      dropout_rate: dropout after each hidden layer.
      temperature: width of the gate's surrogate sigmoid.
      gumbel_scale: Gumbel noise on the gate logits during training (0: none).
      learn_mask: False keeps the gate at its random init (a random k-pixel baseline).

    aux: {"mask": [H, W, C] the 0/1 gate, "gate_logits": [H*W*C], "pre_logits": [B, hidden]}.
    """

    num_classes: int | None = None
    k: int = 16
    hidden_sizes: tuple[int, ...] = (256, 256)
    dropout_rate: float = 0.1
    temperature: float = 1.0
    gumbel_scale: float = 0.0
    learn_mask: bool = True

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        if images.ndim != 4:
            raise ValueError(
                f"FeatureSelectMLP expects images [B, H, W, C], got shape {images.shape}; "
                f"add the batch/channel axis"
            )
        b, h, w, c = images.shape
        x = images.reshape(b, h * w * c)  # [B, D], D = H*W*C in row-major pixel order
        x, mask = FeatureGate(
            self.k,
            temperature=self.temperature,
            gumbel_scale=self.gumbel_scale,
            learn=self.learn_mask,
            name="gate",
        )(x, train=train)
        for i, width in enumerate(self.hidden_sizes):
            x = nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
            x = Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, name="head")(x)
        gate_logits = self.variables["params"]["gate"]["logits"]
        aux = {"mask": mask.reshape(h, w, c), "gate_logits": gate_logits, "pre_logits": x}
        return logits, aux

    def figure_data(self, params: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"kept_pixels": the gate's mask [H, W]
        (first channel) and eight eval images with their labels and the model's predictions}."""
        images = np.asarray(batch["image"])[:8]
        labels = np.asarray(batch["label"])[:8]
        logits, aux = self.apply({"params": params}, jnp.asarray(images), train=False)
        mask = np.asarray(aux["mask"])[..., 0] > 0.5  # first channel: the digits have one
        predictions = np.asarray(jnp.argmax(logits, -1))
        return {
            "kept_pixels": {
                "mask": mask,
                "images": images,
                "labels": labels,
                "predictions": predictions,
            }
        }


FEATURE_SELECT_VARIANTS = VariantTable("feature_select", "no presets: k and widths are set", {})


def feature_select_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """FeatureSelectMLP kwargs from the config; there are no presets.

    Raises:
      ValueError: a variant is given, or k is not a positive integer.
    """
    if variant is not None:
        raise ValueError(
            f"model 'feature_select' has no variants (got {variant!r}); leave variant unset"
        )
    kwargs = preset_kwargs(FEATURE_SELECT_VARIANTS, variant, overrides)
    k = kwargs.get("k", 16)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"feature_select k must be a positive integer, got {k!r}; e.g. k=16")
    return kwargs
