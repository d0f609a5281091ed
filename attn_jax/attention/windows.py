"""Shifted-window self-attention of Liu et al. 2021, "Swin Transformer: Hierarchical Vision
Transformer using Shifted Windows" (ICCV 2021), sec. 3.2.

- Window partition: the [H, W] token map is cut into non-overlapping M x M windows and
  self-attention runs inside each window (W-MSA), so the cost is linear in H W (eq. 1-2).
- Shifted windows (SW-MSA): every second block rolls the map by (-s, -s), s = M // 2, before the
  partition and back afterwards; windows that straddle the wrap-around then hold tokens that are
  not neighbours in the image, and the "efficient batch computation" mask stops them from attending
  to each other (sec. 3.2, Fig. 4).
- Relative position bias: Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V (eq. 4), with B
  taken from a learned table of (2M - 1)^2 entries per head, indexed by the relative offset of two
  tokens of a window.

The attention inside the windows is the attention core's: the windows are the batch of a
registered attention function (`registry.py`, default scaled dot-product) with the relative
position bias as its `bias` [1, heads, M^2, M^2] and the shifted-window mask as its `mask`
[B * nW, 1, M^2, M^2], computed by the path the model's `attention_impl` selects.

Maps are channels-last [B, H, W, C]; windows [B * nW, M * M, C] in row-major window order.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.dot_product import check_implementation
from attn_jax.attention.multi_head import with_logical_axes
from attn_jax.attention.registry import DEFAULT_ATTENTION, check_attention_fn, get_attention


def window_partition(x: jax.Array, window: int) -> jax.Array:
    """[B, H, W, C] -> [B * nW, M * M, C], windows in row-major order; H and W multiples of M."""
    b, h, w, c = x.shape
    if h % window or w % window:
        raise ValueError(f"map {h}x{w} is not a multiple of the window {window}; pad it first")
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
    """Inverse of `window_partition`: [B * nW, M * M, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> np.ndarray:
    """[M * M, M * M] int: the row of the (2M - 1)^2 bias table that holds B[i, j].

    Offsets (dy, dx) = pos_i - pos_j lie in [-(M - 1), M - 1]; shifted to [0, 2M - 2] they index the
    table row-major, (dy + M - 1) * (2M - 1) + (dx + M - 1).
    """
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)  # [2, M*M]: (row, col) of each token of a window
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, M*M, M*M]
    return offsets[0] * (2 * window - 1) + offsets[1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """bool [nW, M * M, M * M], True = may attend: after a cyclic roll by (-shift, -shift), tokens
    of one window may attend to each other only if they came from the same region of the unrolled
    map (the regions are cut at -window and -shift along each axis, Fig. 4 of the paper)."""
    region = np.zeros((1, height, width, 1), np.int32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            region[:, rows, cols, :] = label
            label += 1
    regions = np.asarray(window_partition(region, window))[..., 0]  # [nW, M*M]
    return regions[:, :, None] == regions[:, None, :]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside M x M windows with a relative position bias (eq. 4), over
    a map whose sides are multiples of M, optionally shifted by `shift` (SW-MSA).

    Attributes:
      num_heads: heads; the channels C must be a multiple.
      window: M.
      shift: s, 0 for W-MSA; M // 2 in every second Swin block. A window as large as the map
        needs no shift (the official code sets it to 0 then).
      qkv_bias: biases on the query/key/value projection.
      dropout_rate: attention-weight dropout.
      attention_fn: a registered attention function (registry.py) or a callable of its signature.
      implementation: "auto", "xla", "cudnn", "explicit" or "blockwise" (dot_product.py).
      sow_weights: sow the weights [B * nW, heads, M^2, M^2] as ('intermediates', 'attention').
      dtype: computation dtype (None: float32).
      param_dtype: parameter dtype.
    """

    num_heads: int
    window: int
    shift: int = 0
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_fn: Any = DEFAULT_ATTENTION
    implementation: str | None = "auto"
    sow_weights: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_attention_fn(self.attention_fn)
        check_implementation(self.implementation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """[B, H, W, C] -> [B, H, W, C]."""
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"channels {c} are not a multiple of the {self.num_heads} heads")
        if not 0 <= self.shift < self.window:
            raise ValueError(f"shift {self.shift} must lie in [0, window {self.window})")
        m, heads = self.window, self.num_heads
        table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(0.02),
            ((2 * m - 1) ** 2, heads),
            self.param_dtype,
        )
        bias = table[relative_position_index(m)]  # [M*M, M*M, heads]
        bias = jnp.transpose(bias, (2, 0, 1))[None]  # [1, heads, M*M, M*M]

        if self.shift:
            x = jnp.roll(x, (-self.shift, -self.shift), axis=(1, 2))
        tokens = window_partition(x, m)  # [B*nW, M*M, C]
        qkv = nn.DenseGeneral(
            (3, heads, c // heads),
            use_bias=self.qkv_bias,
            # Heads are the tensor-parallel split, as in multi_head.py (flax's default inits).
            kernel_init=with_logical_axes(
                nn.initializers.lecun_normal(), ("embed", None, "heads", "head_dim")
            ),
            bias_init=with_logical_axes(nn.initializers.zeros_init(), (None, "heads", "head_dim")),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="qkv",
        )(tokens)  # [B*nW, M*M, 3, heads, Dh]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        mask = None
        if self.shift:
            windows = shifted_window_mask(h, w, m, self.shift)  # [nW, M*M, M*M]
            mask = jnp.tile(jnp.asarray(windows)[:, None], (b, 1, 1, 1))  # [B*nW, 1, M*M, M*M]
        apply_dropout = train and self.dropout_rate > 0.0
        out = get_attention(self.attention_fn)(
            q,
            k,
            v,
            mask=mask,
            bias=bias.astype(q.dtype),
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if apply_dropout else None,
            deterministic=not apply_dropout,
            return_weights=self.sow_weights,
            implementation=self.implementation,
            is_causal=False,
        )  # [B*nW, M*M, heads, Dh]
        if self.sow_weights:
            out, weights = out
            self.sow("intermediates", "attention", weights)
        out = nn.DenseGeneral(
            c,
            axis=(-2, -1),
            kernel_init=with_logical_axes(
                nn.initializers.lecun_normal(), ("heads", "head_dim", "embed")
            ),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(out)
        x = window_merge(out, m, h, w)
        if self.shift:
            x = jnp.roll(x, (self.shift, self.shift), axis=(1, 2))
        return x
