"""Spatial Transformer Network classifier: Jaderberg, Simonyan, Zisserman, Kavukcuoglu 2015,
"Spatial Transformer Networks" (NeurIPS 2015).

Implements sec. 3 (the spatial transformer module) and the ST-CNN of sec. 4.1:
  sec. 3.1  localisation network theta = f_loc(U): a small conv net whose final regression
            layer outputs the 6 affine parameters; it is initialised to zero weights and the
            identity bias [1, 0, 0, 0, 1, 0], so training starts from the identity transform
            (the paper's "initialised to regress the identity").
  sec. 3.2  grid generator, eq. 1 (`attn_jax.attention.spatial_transformer.affine_pixel_coords`)
  sec. 3.3  differentiable bilinear sampler, eqs. 5-7 (`bilinear_sample`)
  sec. 4.1  ST-CNN: the spatial transformer placed at the input of a CNN classifier; the
            TRANSFORMED image (not the original) feeds the classifier, which is the same `CNN` as
            the "cnn" baseline (attn_jax/models/cnn.py), so that the two differ by the module only.

Only the affine transformation (the paper's "Aff" rows) is implemented; projective and thin-plate
spline transformations are not. The sampler reads zeros outside the image, as the paper's kernel
sum does; the image it samples is the normalised input, so that padding has the dataset's mean
intensity (grey, not black, in the figure of `figure_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.spatial_transformer import IDENTITY_THETA, spatial_transform
from attn_jax.models.cnn import CNN
from attn_jax.models.variants import VariantTable, preset_kwargs

STN_VARIANTS = VariantTable(
    "stn",
    "ours: experiments/stn_digits.py",
    {
        # experiments/stn_digits.py on the 24x24 distorted digits (the classifier is cnn "digits").
        "digits": {
            "loc_features": (8, 16),
            "loc_kernel_size": 5,
            "loc_dense": 32,
            "features": (32, 64),
            "kernel_size": 3,
            "dense": 128,
            "num_classes": 10,
        },
    },
)


def _identity_bias(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    del key
    assert tuple(shape) == (6,), shape
    return jnp.asarray(IDENTITY_THETA, dtype)


class LocalisationNet(nn.Module):
    """f_loc of sec. 3.1: conv-ReLU-pool stages, a ReLU dense layer, and the theta regressor.

    Attributes:
      features: channels of each conv stage (each halves H and W).
      kernel_size: side of the conv kernels.
      dense: hidden units before the regressor (0 = none).
    """

    features: Sequence[int] = (8, 16)
    kernel_size: int = 5
    dense: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """theta [B, 2, 3] of images x [B, H, W, C]."""
        k = self.kernel_size
        for i, f in enumerate(self.features):
            x = nn.Conv(f, (k, k), padding="SAME", name=f"conv{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape(x.shape[0], -1)  # [B, h * w * f_n]
        if self.dense:
            x = nn.relu(nn.Dense(self.dense, name="dense")(x))
        # Zero weights + identity bias: theta = identity for every input at initialisation.
        theta = nn.Dense(
            6, kernel_init=nn.initializers.zeros, bias_init=_identity_bias, name="theta"
        )(x)
        return theta.reshape(-1, 2, 3)


class SpatialTransformer(nn.Module):
    """The spatial transformer module: localisation net -> grid generator -> sampler.

    Attributes:
      loc_features: conv channels of the localisation net.
      loc_kernel_size: kernel side of the localisation net's convs.
      loc_dense: hidden units of the localisation net.
      out_size: (H_out, W_out) of the transformed image; None keeps the input size.
    """

    loc_features: Sequence[int] = (8, 16)
    loc_kernel_size: int = 5
    loc_dense: int = 32
    out_size: tuple[int, int] | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(transformed [B, H_out, W_out, C], theta [B, 2, 3]) of images x [B, H, W, C]."""
        theta = LocalisationNet(
            self.loc_features, self.loc_kernel_size, self.loc_dense, name="localisation"
        )(x)
        return spatial_transform(x, theta, self.out_size), theta


class STN(nn.Module):
    """ST-CNN (sec. 4.1): a `SpatialTransformer` in front of the "cnn" classifier.

    Attributes:
      loc_features, loc_kernel_size, loc_dense, out_size: the `SpatialTransformer`'s.
      features, kernel_size, dense, num_classes, dropout_rate: the classifier `CNN`'s.
    """

    loc_features: Sequence[int] = (8, 16)
    loc_kernel_size: int = 5
    loc_dense: int = 32
    out_size: tuple[int, int] | None = None
    features: Sequence[int] = (32, 64)
    kernel_size: int = 3
    dense: int = 128
    num_classes: int = 10
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits [B, num_classes] of images x [B, H, W, C].

        aux: "theta" [B, 2, 3], "transformed" [B, H_out, W_out, C] (the classifier's input),
        "pre_logits" [B, dense].
        """
        if x.ndim != 4:
            raise ValueError(
                f"stn expects images [B, H, W, C], got shape {tuple(x.shape)}; add the batch "
                f"and/or channel axis (e.g. x[..., None] for grey images)"
            )
        if self.out_size is not None and (len(self.out_size) != 2 or min(self.out_size) < 1):
            raise ValueError(
                f"stn out_size must be (height, width) of positive ints, got {self.out_size!r}"
            )
        transformed, theta = SpatialTransformer(
            self.loc_features,
            self.loc_kernel_size,
            self.loc_dense,
            None if self.out_size is None else tuple(self.out_size),
            name="transformer",
        )(x)
        logits, aux = CNN(
            self.features,
            self.kernel_size,
            self.dense,
            self.num_classes,
            self.dropout_rate,
            name="classifier",
        )(transformed, train=train)
        return logits, {"theta": theta, "transformed": transformed, **aux}

    def figure_data(self, params: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"stn_transforms": up to 8 eval images,
        spread over the batch, their transformed versions, true and predicted labels}."""
        images = np.asarray(batch["image"])
        keep = np.asarray(batch.get("mask", np.ones(len(images), bool))).astype(bool)
        images, labels = images[keep], np.asarray(batch["label"])[keep]
        # Spread the picks over the batch: neighbouring examples are often copies of one digit.
        picks = np.unique(np.linspace(0, len(images) - 1, min(8, len(images))).astype(int))
        images, labels = images[picks], labels[picks]
        logits, aux = jax.jit(self.apply)({"params": params}, jnp.asarray(images))
        return {
            "stn_transforms": {
                "images": images,
                "labels": labels,
                "transformed": np.asarray(aux["transformed"]),
                "predictions": np.asarray(jnp.argmax(logits, -1)),
            }
        }


def stn_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`STN` fields of `variant` (None = class defaults) updated by the non-None overrides.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(STN_VARIANTS, variant, overrides)
