"""Channel attention: Hu, Shen, Sun 2018, "Squeeze-and-Excitation Networks" (CVPR 2018).

Sec. 3 of the paper, for a feature map U = [u_1, ..., u_C]:
  (2) z_c = F_sq(u_c) = 1 / (H W) sum_{i,j} u_c(i, j)          squeeze: global average pooling
  (3) s   = F_ex(z, W) = sigmoid(W_2 ReLU(W_1 z))               excitation, W_1: C -> C/r,
                                                                W_2: C/r -> C
  (4) x~_c = F_scale(u_c, s_c) = s_c u_c                        channel-wise rescaling

The two fully connected layers carry biases, as the authors' released Caffe models (1x1
convolutions with bias) do; their parameter count is 2 C^2 / r + C / r + C (8,464 for C = 256,
r = 16), which is what makes SE-ResNet-50 28,088,024 parameters. Inside a residual block the paper
applies the block to the residual branch, after its last convolution and normalisation and before
the identity addition (Fig. 3); `attn_jax.models.resnet` places it there.

The gate is a sigmoid, not a softmax: channels are not in competition, several can be fully on.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def squeeze(x: jax.Array) -> jax.Array:
    """Eq. 2: the mean of each channel over every spatial (and temporal) position.

    Args:
      x: [B, ..., C], channels last (images [B, H, W, C], videos [B, T, H, W, C]).

    Returns:
      z: [B, C].
    """
    if x.ndim < 3:
        raise ValueError(f"squeeze expects [B, ..., C] with spatial axes; got shape {x.shape}")
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def excite(x: jax.Array, scales: jax.Array) -> jax.Array:
    """Eq. 4: multiplies channel c of every example by its scale s_c.

    Args:
      x: [B, ..., C].
      scales: [B, C].

    Returns:
      [B, ..., C], x rescaled per channel.
    """
    assert scales.shape == (x.shape[0], x.shape[-1]), (scales.shape, x.shape)
    return x * scales.reshape(x.shape[0], *(1,) * (x.ndim - 2), x.shape[-1]).astype(x.dtype)


class SqueezeExcitation(nn.Module):
    """The SE block of eqs. 2-4 on a channels-last feature map of any spatial rank.

    The gates s [B, C] are sown as ('intermediates', 'excitation'), read with
    `mutable=['intermediates']` (the paper's Fig. 6 plots their class averages).

    Attributes:
      reduction: r, the bottleneck ratio of the excitation MLP (16 in the paper, Table 10).
      min_hidden: a floor for C / r, so that very thin layers keep a usable bottleneck
        (the paper never needs it; 1 = no floor beyond one unit).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    reduction: int = 16
    min_hidden: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies eqs. 2-4.

        Args:
          x: [B, ..., C].

        Returns:
          [B, ..., C]: x with channel c scaled by s_c in (0, 1).
        """
        if self.reduction < 1:
            raise ValueError(f"SE reduction must be >= 1; got {self.reduction}")
        channels = x.shape[-1]
        hidden = max(channels // self.reduction, self.min_hidden)
        z = squeeze(x)
        h = nn.Dense(hidden, dtype=self.dtype, param_dtype=self.param_dtype, name="reduce")(z)
        h = nn.relu(h)
        s = nn.Dense(channels, dtype=self.dtype, param_dtype=self.param_dtype, name="expand")(h)
        s = jax.nn.sigmoid(s.astype(jnp.float32))
        self.sow("intermediates", "excitation", s)
        return excite(x, s)


def se_param_count(channels: int, reduction: int = 16) -> int:
    """Parameters of one SE block with biases: 2 C^2 / r + C / r + C."""
    hidden = channels // reduction
    return channels * hidden + hidden + hidden * channels + channels
