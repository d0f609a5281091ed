"""Plain image classifiers without attention: the baselines that attention models are measured
against.

"cnn" is the conv-ReLU-max-pool stack followed by a ReLU dense layer and a linear classifier,
the "CNN" baseline of Jaderberg, Simonyan, Zisserman, Kavukcuoglu 2015, "Spatial Transformer
Networks" (NeurIPS 2015, sec. 4.1, Table 1) and of Mnih, Heess, Graves, Kavukcuoglu 2014,
"Recurrent Models of Visual Attention" (NeurIPS 2014, sec. 4, "Conv" rows of Tables 1-2); "mlp"
is their fully connected baseline ("FCN" in the former, "FC" in the latter). Sizes are configurable
rather than the papers' (theirs are for 28x28 to 100x100 MNIST; ours run on 8x8 to 32x32 digits).

Layer shapes, for an input [B, H, W, C] and `features=(f_1, ..., f_n)`:
  conv_i:   k x k, SAME padding, f_i channels, ReLU, then 2x2 max-pool stride 2 (VALID, so an odd
            side floors: H -> H // 2)
  dense:    flatten [B, (H / 2^n) * (W / 2^n) * f_n] -> `dense` units, ReLU
  head:     -> `num_classes` logits
so the parameter count is sum_i (k^2 f_{i-1} f_i + f_i) + (h w f_n + 1) dense
+ (dense + 1) num_classes, with f_0 = C and h, w the pooled sides; `cnn_param_count` computes it
and tests/models/test_cnn.py checks it against the built model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from attn_jax.attention.dropout import Dropout
from attn_jax.models.variants import VariantTable, preset_kwargs

# Presets: "digits" is the default of experiments/stn_digits.py:cnn and of the STN's classifier.
CNN_VARIANTS = VariantTable(
    "cnn",
    "ours: the digits experiments",
    {
        "digits": {"features": (32, 64), "kernel_size": 3, "dense": 128, "num_classes": 10},
        "tiny": {"features": (8, 16), "kernel_size": 3, "dense": 32, "num_classes": 10},
    },
)
MLP_VARIANTS = VariantTable(
    "mlp",
    "ours: the digits experiments",
    {
        "digits": {"hidden": (256, 256), "num_classes": 10},
        "tiny": {"hidden": (64,), "num_classes": 10},
    },
)


def _check_images(model: str, x: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{model} expects images [B, H, W, C], got shape {tuple(x.shape)}; add the batch "
            f"and/or channel axis (e.g. x[..., None] for grey images)"
        )


class CNN(nn.Module):
    """Conv-ReLU-pool stacks, then a ReLU dense layer and a linear classifier.

    Attributes:
      features: channels of each conv stage; each stage halves H and W.
      kernel_size: side of the square conv kernels.
      dense: units of the hidden dense layer (0 = none: the head reads the flattened features).
      num_classes: number of logits.
      dropout_rate: dropout before the head, active only when `train=True`.
    """

    features: Sequence[int] = (32, 64)
    kernel_size: int = 3
    dense: int = 128
    num_classes: int = 10
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits [B, num_classes] of images x [B, H, W, C]; aux holds "pre_logits"."""
        _check_images("cnn", x)
        h, w = x.shape[1], x.shape[2]
        if min(h, w) < 2 ** len(self.features):
            raise ValueError(
                f"cnn with {len(self.features)} pooling stages needs images of side >= "
                f"{2 ** len(self.features)}, got {h}x{w}; use fewer `features` or larger images"
            )
        k = self.kernel_size
        for i, f in enumerate(self.features):
            x = nn.Conv(f, (k, k), padding="SAME", name=f"conv{i}")(x)
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape(x.shape[0], -1)  # [B, h * w * f_n]
        if self.dense:
            x = nn.relu(nn.Dense(self.dense, name="dense")(x))
        pre_logits = x
        x = Dropout(self.dropout_rate)(x, deterministic=not train)
        logits = nn.Dense(self.num_classes, name="head")(x)
        return logits, {"pre_logits": pre_logits}


class MLP(nn.Module):
    """Flatten, ReLU hidden layers, linear classifier.

    Attributes:
      hidden: units of each hidden layer.
      num_classes: number of logits.
      dropout_rate: dropout after each hidden layer, active only when `train=True`.
    """

    hidden: Sequence[int] = (256, 256)
    num_classes: int = 10
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits [B, num_classes] of images x [B, H, W, C]; aux holds "pre_logits"."""
        _check_images("mlp", x)
        x = x.reshape(x.shape[0], -1)  # [B, H * W * C]
        for i, units in enumerate(self.hidden):
            x = nn.relu(nn.Dense(units, name=f"hidden{i}")(x))
            x = Dropout(self.dropout_rate)(x, deterministic=not train)
        logits = nn.Dense(self.num_classes, name="head")(x)
        return logits, {"pre_logits": x}


def cnn_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`CNN` fields of `variant` (None = class defaults) updated by the non-None overrides.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(CNN_VARIANTS, variant, overrides)


def mlp_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`MLP` fields of `variant` (None = class defaults) updated by the non-None overrides.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(MLP_VARIANTS, variant, overrides)


def cnn_param_count(
    image_shape: tuple[int, int, int],
    features: Sequence[int] = (32, 64),
    kernel_size: int = 3,
    dense: int = 128,
    num_classes: int = 10,
) -> int:
    """Closed-form parameter count of `CNN` on images [H, W, C] (formula: module docstring)."""
    h, w, c = image_shape
    total, cin = 0, c
    for f in features:
        total += kernel_size * kernel_size * cin * f + f
        cin = f
        h, w = h // 2, w // 2
    flat = h * w * cin
    if dense:
        total += flat * dense + dense
        flat = dense
    return total + flat * num_classes + num_classes


def mlp_param_count(
    image_shape: tuple[int, int, int], hidden: Sequence[int] = (256, 256), num_classes: int = 10
) -> int:
    """Closed-form parameter count of `MLP` on images [H, W, C]."""
    fan_in = math.prod(image_shape)
    total = 0
    for units in (*hidden, num_classes):
        total += fan_in * units + units
        fan_in = units
    return total
