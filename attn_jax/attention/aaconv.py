"""Attention-augmented convolution: Bello, Zoph, Vaswani, Shlens, Le 2019, "Attention Augmented
Convolutional Networks" (ICCV 2019), sec. 3.

For an input X [H, W, F_in] flattened to H W positions, head h of multi-head attention (sec. 3.1):
  (1) O_h = Softmax((X W_q)(X W_k)^T / sqrt(d_k^h)) (X W_v)
  (2) MHA(X) = Concat[O_1, ..., O_Nh] W^O                       (W^O a 1x1 convolution, d_v -> d_v)
with 2D relative position logits (sec. 3.1.1) for pixel i = (i_x, i_y) and j = (j_x, j_y):
  (3) l_{i,j} = q_i^T / sqrt(d_k^h) (k_j + r^W_{j_x - i_x} + r^H_{j_y - i_y})
  (4) O_h = Softmax((Q K^T + S_H^rel + S_W^rel) / sqrt(d_k^h)) V,
      S_H^rel[i, j] = q_i^T r^H_{j_y - i_y},  S_W^rel[i, j] = q_i^T r^W_{j_x - i_x}
and the augmented convolution (sec. 3.2):
  (5) AAConv(X) = Concat[Conv(X), MHA(X)]     (Conv with F_out - d_v filters, MHA with d_v channels)

The relative embeddings r^W (2W - 1 rows) and r^H (2H - 1 rows) are learned, d_k^h wide and shared
by the heads. S_W^rel is computed from q [.., W, d] and r^W [2W - 1, d] as [.., W, 2W - 1] logits
over relative offsets, turned into [.., W, W] logits over absolute key columns by `rel_to_abs`,
the pad-and-reshape trick of Huang et al. 2019 (Music Transformer), never materialising the
[H W, H W, d] tensor of gathered embeddings; `relative_logits_naive` is the O((H W)^2) loop of
eq. 3 that the tests compare against.

Downsampling (stride > 1): the convolution strides; the attention branch runs on the input
average-pooled to the same grid, so that its H' W' positions match the convolution's output
(the paper does not spell this case out).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def rel_to_abs(x: jax.Array) -> jax.Array:
    """Logits over relative offsets -> logits over absolute key positions.

    Args:
      x: [..., L, 2L - 1]; x[..., i, m] is the logit of query i for the offset m - (L - 1).

    Returns:
      [..., L, L] with out[..., i, j] = x[..., i, j - i + L - 1], the logit of key j.
    """
    *lead, length, span = x.shape
    assert span == 2 * length - 1, x.shape
    # One zero column makes each row 2L long; flattened, row i of the result then starts
    # (2L - 1) * i + (L - 1) entries in, i.e. shifted left by one offset per row.
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (0, 1)])  # [..., L, 2L]
    x = x.reshape(*lead, length * 2 * length)
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, length - 1)])  # [..., 2L^2 + L - 1]
    x = x.reshape(*lead, length + 1, 2 * length - 1)
    return x[..., :length, length - 1 :]


def relative_logits_1d(q: jax.Array, rel: jax.Array) -> jax.Array:
    """q_i^T r_{j - i} along the second-to-last spatial axis of q, for every row.

    Args:
      q: [B, R, L, Nh, d], queries on R rows of L positions (along the axis that `rel` encodes).
      rel: [2L - 1, d], the embedding of offset m - (L - 1) at row m.

    Returns:
      [B, Nh, R, L, L]: [b, h, r, i, j] = q[b, r, i, h] . rel[j - i + L - 1].
    """
    logits = jnp.einsum("brlhd,md->bhrlm", q, rel)  # [B, Nh, R, L, 2L-1]
    return rel_to_abs(logits)


def relative_logits_2d(q: jax.Array, rel_h: jax.Array, rel_w: jax.Array) -> jax.Array:
    """S_H^rel + S_W^rel of eq. 4 (before the 1 / sqrt(d_k^h) scale).

    Args:
      q: [B, H, W, Nh, d] queries.
      rel_h: [2H - 1, d] height embeddings r^H.
      rel_w: [2W - 1, d] width embeddings r^W.

    Returns:
      [B, Nh, H W, H W] logits; [.., (i_y, i_x), (j_y, j_x)] =
      q_i . (r^H_{j_y - i_y} + r^W_{j_x - i_x}).
    """
    b, h, w, nh, _ = q.shape
    s_w = relative_logits_1d(q, rel_w)  # [B, Nh, H, W, W]: rows are image rows
    s_h = relative_logits_1d(jnp.swapaxes(q, 1, 2), rel_h)  # [B, Nh, W, H, H]: rows are columns
    # S_W depends on the key column only, S_H on the key row only: broadcast the other key axis.
    logits = s_w[:, :, :, :, None, :] + jnp.transpose(s_h, (0, 1, 3, 2, 4))[:, :, :, :, :, None]
    return logits.reshape(b, nh, h * w, h * w)  # [B, Nh, (iy ix), (jy jx)]


def relative_logits_naive(q: np.ndarray, rel_h: np.ndarray, rel_w: np.ndarray) -> np.ndarray:
    """Eq. 3's relative terms by an explicit loop over all (H W)^2 pairs (a test reference).

    Args:
      q: [B, H, W, Nh, d]; rel_h: [2H - 1, d]; rel_w: [2W - 1, d].

    Returns:
      [B, Nh, H W, H W] float64.
    """
    q, rel_h, rel_w = (np.asarray(a, np.float64) for a in (q, rel_h, rel_w))
    b, h, w, nh, _ = q.shape
    out = np.zeros((b, nh, h * w, h * w))
    for iy in range(h):
        for ix in range(w):
            for jy in range(h):
                for jx in range(w):
                    r = rel_h[jy - iy + h - 1] + rel_w[jx - ix + w - 1]
                    out[:, :, iy * w + ix, jy * w + jx] = np.einsum("bhd,d->bh", q[:, iy, ix], r)
    return out


class AttentionAugmentedConv(nn.Module):
    """AAConv of eq. 5: a convolution with F_out - d_v filters next to d_v channels of
    multi-head self-attention over all positions, with 2D relative position logits (eq. 4).

    The attention weights [B, Nh, H' W', H' W'] are sown as ('intermediates', 'attention').

    Attributes:
      features: F_out, the output channels.
      key_dim: d_k, the total query/key width over heads (paper: kappa F_out).
      value_dim: d_v, the total attention output width (paper: upsilon F_out); 0 = plain conv.
      num_heads: N_h.
      kernel_size: the convolution's kernel.
      strides: the convolution's strides (the attention reads an average-pooled input then).
      relative: add the relative logits S_H^rel + S_W^rel (eq. 4); False = eq. 1 alone.
      use_bias: biases on the convolutions (False in a ResNet, where a norm follows).
      kernel_init: initialiser of the convolution kernels.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    features: int
    key_dim: int
    value_dim: int
    num_heads: int = 8
    kernel_size: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    relative: bool = True
    use_bias: bool = False
    kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if not 0 <= self.value_dim < self.features:
            raise ValueError(
                f"AAConv value_dim (d_v) must be in [0, features={self.features}); "
                f"got {self.value_dim}: lower the value fraction"
            )
        if self.value_dim and (self.key_dim % self.num_heads or self.value_dim % self.num_heads):
            raise ValueError(
                f"AAConv key_dim={self.key_dim} and value_dim={self.value_dim} must both be "
                f"divisible by num_heads={self.num_heads}"
            )
        if self.value_dim and self.key_dim < self.num_heads:
            raise ValueError(
                f"AAConv key_dim={self.key_dim} gives heads of width 0; "
                f"raise it to at least num_heads={self.num_heads}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies eq. 5.

        Args:
          x: [B, H, W, F_in].

        Returns:
          [B, H', W', F_out] with H' = ceil(H / stride) (SAME padding).
        """
        if x.ndim != 4:
            raise ValueError(f"AttentionAugmentedConv expects [B, H, W, C]; got shape {x.shape}")
        conv_out = nn.Conv(
            self.features - self.value_dim,
            self.kernel_size,
            strides=self.strides,
            padding="SAME",
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.value_dim == 0:
            return conv_out

        if tuple(self.strides) != (1, 1):
            x = nn.avg_pool(
                x,
                tuple(self.strides),
                strides=tuple(self.strides),
                padding="SAME",
                count_include_pad=False,
            )
        b, h, w, _ = x.shape
        nh, dk, dv = self.num_heads, self.key_dim, self.value_dim
        dkh, dvh = dk // nh, dv // nh
        qkv = nn.Conv(
            2 * dk + dv,
            (1, 1),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="qkv",
        )(x)
        q, k, v = jnp.split(qkv, [dk, 2 * dk], axis=-1)
        q = q.reshape(b, h, w, nh, dkh)  # [B, H, W, Nh, dkh]
        k = k.reshape(b, h * w, nh, dkh)  # [B, HW, Nh, dkh]
        v = v.reshape(b, h * w, nh, dvh)  # [B, HW, Nh, dvh]

        logits = jnp.einsum(
            "bqhd,bkhd->bhqk",
            q.reshape(b, h * w, nh, dkh),
            k,
            preferred_element_type=jnp.float32,
        )
        if self.relative:
            rel_init = nn.initializers.normal(stddev=dkh**-0.5)
            rel_h = self.param("rel_height", rel_init, (2 * h - 1, dkh), self.param_dtype)
            rel_w = self.param("rel_width", rel_init, (2 * w - 1, dkh), self.param_dtype)
            logits = logits + relative_logits_2d(
                q, rel_h.astype(q.dtype), rel_w.astype(q.dtype)
            ).astype(jnp.float32)
        weights = jax.nn.softmax(logits / math.sqrt(dkh), axis=-1)  # eq. 4
        self.sow("intermediates", "attention", weights)
        heads = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
        heads = heads.reshape(b, h, w, dv)  # Concat[O_1, ..., O_Nh]
        attn_out = nn.Conv(
            dv,
            (1, 1),
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attention_output",
        )(heads)
        assert attn_out.shape[1:3] == conv_out.shape[1:3], (attn_out.shape, conv_out.shape)
        return jnp.concatenate([conv_out, attn_out.astype(conv_out.dtype)], axis=-1)
