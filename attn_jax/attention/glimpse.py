"""The glimpse sensor rho(x, l) of Mnih, Heess, Graves and Kavukcuoglu (2014), "Recurrent Models
of Visual Attention" (NeurIPS), sec. 3.1 and fig. 1A: a retina-like representation of the image
around a location, made of `num_scales` square patches centred at l, the first `size` x `size`
pixels and each next one `scale` times the side of the previous, all brought down to `size` x
`size` and stacked.

Coordinates: l = (row, column) in [-1, 1]^2, the paper's normalised convention with the image
centre at (0, 0): -1 is the top (left) edge of the image and +1 the bottom (right) edge. A pixel
coordinate c = (l + 1) / 2 * H lies on the pixel grid's edges (0 .. H), and the patch of side s
covers the rows floor(c - s / 2 + 1/2) .. that + s - 1, so at l = 0 an even patch is the exact
central crop. Pixels outside the image read as zero (the paper's zero padding), and locations
outside [-1, 1] are clipped to it. Patches larger than `size` are reduced by averaging
`scale^k` x `scale^k` blocks, an exact integer-factor average pool (no interpolation).

The crop positions are integers, so rho is not differentiable in l: the location is trained by
REINFORCE (see attn_jax/models/ram.py), never by backpropagation through the sensor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check(size: int, num_scales: int, scale: int) -> None:
    for name, value, least in (
        ("size", size, 1),
        ("num_scales", num_scales, 1),
        ("scale", scale, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise ValueError(f"glimpse {name} must be an int >= {least}, got {value!r}")


def patch_sides(size: int, num_scales: int, scale: int = 2) -> tuple[int, ...]:
    """Sides of the patches of one glimpse before reduction: size, size*scale, size*scale^2..."""
    _check(size, num_scales, scale)
    return tuple(size * scale**k for k in range(num_scales))


def glimpse_boxes(
    locations: jax.Array | np.ndarray,
    image_hw: tuple[int, int],
    size: int,
    num_scales: int,
    scale: int = 2,
):
    """Top-left pixel (row, column) of every patch of the glimpses at `locations`.

    Args:
      locations: [..., 2] (row, column) in [-1, 1] (clipped to it).
      image_hw: (H, W) of the image.
      size, num_scales, scale: as in `glimpse_sensor`.

    Returns:
      int32 [..., num_scales, 2]; patch k spans `patch_sides(...)[k]` pixels from there, possibly
      beyond the image.
    """
    xp = jnp if isinstance(locations, jax.Array) else np
    sides = xp.asarray(patch_sides(size, num_scales, scale), xp.float32)  # [K]
    hw = xp.asarray(image_hw, xp.float32)  # [2]
    centre = (xp.clip(locations, -1.0, 1.0) + 1.0) / 2.0 * hw  # [..., 2] on the pixel edges
    start = xp.floor(centre[..., None, :] - sides[:, None] / 2.0 + 0.5)  # [..., K, 2]
    return start.astype(xp.int32)


def glimpse_sensor(
    images: jax.Array, locations: jax.Array, size: int, num_scales: int, scale: int = 2
) -> jax.Array:
    """rho(x, l): multi-resolution patches of `images` centred at `locations`.

    Vectorised over the batch (no Python loop over examples); usable inside jit, vmap and scan.

    Args:
      images: [B, H, W, C].
      locations: [B, 2] (row, column) in [-1, 1]^2 (see the module docstring).
      size: side of the first patch and of every returned patch (the paper's g_w).
      num_scales: number of patches per glimpse (the paper's k).
      scale: ratio of the sides of successive patches (2 in the paper).

    Returns:
      [B, num_scales, size, size, C]: patch k is the (size * scale^k)-pixel square around l,
      averaged over scale^k x scale^k blocks; zero where it extends beyond the image.

    Raises:
      ValueError: images not [B, H, W, C], locations not [B, 2], or bad sizes.
    """
    _check(size, num_scales, scale)
    if images.ndim != 4:
        raise ValueError(
            f"glimpse_sensor expects images [B, H, W, C], got shape {tuple(images.shape)}; add "
            "a channel axis to grayscale images"
        )
    if locations.shape != (images.shape[0], 2):
        raise ValueError(
            f"glimpse_sensor expects locations [B, 2] = [{images.shape[0]}, 2] (row, column), "
            f"got shape {tuple(locations.shape)}"
        )
    _, height, width, channels = images.shape
    sides = patch_sides(size, num_scales, scale)
    # Enough zeros around the image that the largest patch never leaves the padded array
    # (dynamic_slice would otherwise silently shift it back inside).
    pad = sides[-1] // 2 + 1
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    starts = glimpse_boxes(locations, (height, width), size, num_scales, scale) + pad  # [B, K, 2]

    def one_example(image: jax.Array, corners: jax.Array) -> jax.Array:
        patches = []
        for k, side in enumerate(sides):  # static: one slice per scale, unrolled at trace time
            patch = jax.lax.dynamic_slice(
                image, (corners[k, 0], corners[k, 1], 0), (side, side, channels)
            )
            factor = side // size
            # [side, side, C] -> [size, factor, size, factor, C] -> block means [size, size, C]
            patch = patch.reshape(size, factor, size, factor, channels).mean(axis=(1, 3))
            patches.append(patch)
        return jnp.stack(patches)  # [K, size, size, C]

    return jax.vmap(one_example)(padded, starts)
