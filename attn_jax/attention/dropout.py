"""Dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
Overfitting", eq. 1 with the inverted scaling of sec. 10) with masks that cost half the random bits.

On a CPU, drawing the random bits is the most expensive part of dropout: a threefry hash costs
about 30 ns per 32-bit word against under 1 ns for an elementwise op, and JAX's partitionable
threefry hashes once per element whatever the requested width, so `jax.random.bernoulli` and
`jax.random.bits(..., uint16)` both cost one hash per mask element. Here each 32-bit word gives two
masks (its two 16-bit halves), so a mask of n elements costs n / 2 hashes (benchmarks/README.md:
the textbook ViT's step, whose attention-weight dropout draws 4.2 M masks per layer, ran 0.75x of
the time with it). The keep probability is exact to 2^-16.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

_HALF = 1 << 16


def keep_mask(rng: jax.Array, keep_prob: float | jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A boolean mask of `shape`, True with probability `keep_prob` (rounded to a multiple of
    2^-16), drawn from ceil(n / 2) 32-bit words. `keep_prob` may be traced (a scanned stack's
    per-layer rate)."""
    n = math.prod(shape)
    words = jax.random.bits(rng, ((n + 1) // 2,), jnp.uint32)
    halves = jnp.concatenate([words & 0xFFFF, words >> 16])[:n].reshape(shape)
    threshold = jnp.round(jnp.asarray(keep_prob, jnp.float32) * _HALF).astype(jnp.uint32)
    return halves < threshold


def dropout(x: jax.Array, rate: float | jax.Array, rng: jax.Array | None, shape=None) -> jax.Array:
    """Inverted dropout of `x`: zero with probability `rate`, scale the rest by 1 / (1 - rate);
    identity when `rng` is None. `shape` (broadcastable to x) shares one mask along its unit axes
    (stochastic depth drops a sample's whole branch with shape [B, 1, ..., 1])."""
    if rng is None:
        return x
    keep = keep_mask(rng, 1.0 - rate, x.shape if shape is None else shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class Dropout(nn.Module):
    """`flax.linen.Dropout`'s interface (rate, deterministic, the 'dropout' RNG stream) with
    `keep_mask`'s half-cost masks."""

    rate: float
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        return dropout(x, self.rate, self.make_rng("dropout"))
