"""Non-local blocks: Wang, Girshick, Gupta, He 2018, "Non-local Neural Networks" (CVPR 2018).

Sec. 3 of the paper, over all positions i, j of a feature map x (flattened space, or space-time):
  (1) y_i = 1 / C(x) sum_j f(x_i, x_j) g(x_j),      g(x_j) = W_g x_j (a 1x1 convolution)
  (2) Gaussian:            f = exp(x_i^T x_j),                   C(x) = sum_j f
  (3) Embedded Gaussian:   f = exp(theta(x_i)^T phi(x_j)),       C(x) = sum_j f
      (so y = softmax_j(theta^T phi) g: single-head self-attention, sec. 3.2)
  (4) Dot product:         f = theta(x_i)^T phi(x_j),            C(x) = N, the number of positions
  (5) Concatenation:       f = ReLU(w_f^T [theta(x_i), phi(x_j)]), C(x) = N
  (6) Non-local block:     z_i = W_z y_i + x_i

theta, phi and g are 1x1 convolutions to C / 2 channels (sec. 3.3, "bottleneck"); phi and g may be
computed on a max-pooled copy of x ("subsampling", sec. 3.3), which cuts the pairwise cost by 4
without changing the output shape. In the concatenation form w_f^T [a, b] = w_a^T a + w_b^T b, so
the [N, N, C] concatenation is never built.

Initialisation follows sec. 3.3 and the authors' code (facebookresearch/video-nonlocal-net): W_z is
followed by a normalisation whose scale starts at zero when one is given, otherwise W_z itself
starts at zero, so that z = x exactly at initialisation and a block can be inserted into a trained
network without changing it. The other convolutions start from N(0, 0.01) as in that code.
`scale_logits` divides the embedded-Gaussian logits by sqrt(C'), C' = C / 2 the inner width, as the
released code does (its USE_SCALE, on in the published configs) though eq. 3 does not; it is on by
default, and `scale_logits=False` gives eq. 3 as printed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NON_LOCAL_MODES = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")


def non_local_weights(
    theta: jax.Array,
    phi: jax.Array,
    mode: str,
    *,
    concat_query: jax.Array | None = None,
    concat_key: jax.Array | None = None,
) -> jax.Array:
    """The normalised pairwise weights f(x_i, x_j) / C(x) of eqs. 2-5.

    Args:
      theta: [B, Nq, D] query embeddings (raw x for "gaussian").
      phi: [B, Nk, D] key embeddings (raw x for "gaussian").
      mode: one of `NON_LOCAL_MODES`.
      concat_query: [B, Nq] the w_f^T theta(x_i) terms of eq. 5 (concatenation only).
      concat_key: [B, Nk] the w_f^T phi(x_j) terms of eq. 5 (concatenation only).

    Returns:
      float32 weights [B, Nq, Nk]; rows sum to 1 for the softmax forms.
    """
    num_keys = phi.shape[1]
    if mode in ("gaussian", "embedded_gaussian"):
        logits = jnp.einsum("bqd,bkd->bqk", theta, phi, preferred_element_type=jnp.float32)
        return jax.nn.softmax(logits, axis=-1)  # exp(.) / sum_j exp(.), eqs. 2-3
    if mode == "dot_product":
        f = jnp.einsum("bqd,bkd->bqk", theta, phi, preferred_element_type=jnp.float32)
        return f / num_keys
    if mode == "concatenation":
        assert concat_query is not None and concat_key is not None
        f = nn.relu(concat_query[:, :, None] + concat_key[:, None, :]).astype(jnp.float32)
        return f / num_keys
    raise ValueError(f"unknown non-local mode {mode!r}; valid modes: {list(NON_LOCAL_MODES)}")


class NonLocalBlock(nn.Module):
    """The non-local block of eq. 6 on [B, H, W, C] images or [B, T, H, W, C] videos.

    The weights [B, Nq, Nk] (Nq = positions of x, Nk = positions after subsampling) are sown as
    ('intermediates', 'attention').

    Attributes:
      mode: the pairwise function, one of `NON_LOCAL_MODES`.
      inner_dim: width of theta, phi and g; None = C // 2 (the paper's bottleneck).
      subsample: compute phi and g on x max-pooled by 2 in height and width (not in time).
      scale_logits: divide the embedded-Gaussian logits by sqrt(inner_dim), as the released code
        (default); False: eq. 3 as printed.
      norm: a factory for the normalisation after W_z (called with `scale_init` and `name`), or
        None for no normalisation; in both cases the block starts as the identity.
      kernel_init: initialiser of theta, phi, g (and of W_z when a norm follows it).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    mode: str = "embedded_gaussian"
    inner_dim: int | None = None
    subsample: bool = False
    scale_logits: bool = True
    norm: Callable[..., nn.Module] | None = None
    kernel_init: Callable[..., jax.Array] = nn.initializers.normal(stddev=0.01)
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies eq. 6.

        Args:
          x: [B, H, W, C] or [B, T, H, W, C].

        Returns:
          z, the same shape as x.
        """
        if self.mode not in NON_LOCAL_MODES:
            raise ValueError(
                f"unknown non-local mode {self.mode!r}; valid modes: {list(NON_LOCAL_MODES)}"
            )
        if x.ndim not in (4, 5):
            raise ValueError(
                f"NonLocalBlock expects [B, H, W, C] or [B, T, H, W, C]; got shape {x.shape}"
            )
        channels = x.shape[-1]
        inner = self.inner_dim or max(channels // 2, 1)
        conv = lambda feats, name, init=self.kernel_init: nn.Conv(  # noqa: E731
            feats,
            kernel_size=(1,) * (x.ndim - 2),
            kernel_init=init,
            bias_init=nn.initializers.zeros_init(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        pooled = x
        if self.subsample:
            window = (2, 2) if x.ndim == 4 else (1, 2, 2)
            # SAME pads with -inf for max, so odd sizes keep their last row/column.
            pooled = nn.max_pool(x, window, strides=window, padding="SAME")

        b = x.shape[0]
        if self.mode == "gaussian":
            theta = x.reshape(b, -1, channels)  # [B, Nq, C]
            phi = pooled.reshape(b, -1, channels)  # [B, Nk, C]
        else:
            theta = conv(inner, "theta")(x).reshape(b, -1, inner)
            phi = conv(inner, "phi")(pooled).reshape(b, -1, inner)
        g = conv(inner, "g")(pooled).reshape(b, -1, inner)  # [B, Nk, inner]

        concat_query = concat_key = None
        if self.mode == "concatenation":
            w_f = self.param(
                "concat_weight", self.kernel_init, (2, inner), self.param_dtype
            )  # w_f split into the halves that meet theta and phi
            concat_query = jnp.einsum("bqd,d->bq", theta, w_f[0].astype(theta.dtype))
            concat_key = jnp.einsum("bkd,d->bk", phi, w_f[1].astype(phi.dtype))
        elif self.mode == "embedded_gaussian" and self.scale_logits:
            theta = theta * (1.0 / math.sqrt(inner))

        weights = non_local_weights(
            theta, phi, self.mode, concat_query=concat_query, concat_key=concat_key
        )
        self.sow("intermediates", "attention", weights)
        y = jnp.einsum("bqk,bkd->bqd", weights.astype(g.dtype), g)
        y = y.reshape(*x.shape[:-1], inner)

        if self.norm is None:
            z = conv(channels, "W_z", nn.initializers.zeros_init())(y)
        else:
            z = conv(channels, "W_z")(y)
            z = self.norm(scale_init=nn.initializers.zeros_init(), name="norm")(z)
        return x + z.astype(x.dtype)
