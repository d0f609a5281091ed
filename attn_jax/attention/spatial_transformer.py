"""Affine grid generator and differentiable bilinear sampler of Jaderberg, Simonyan, Zisserman,
Kavukcuoglu 2015, "Spatial Transformer Networks" (NeurIPS 2015), sec. 3.2-3.3.

Equations implemented:
  (1)   (x_s, y_s)^T = A_theta (x_t, y_t, 1)^T      grid generator: each TARGET (output) pixel
                                                    looks up a SOURCE (input) location, i.e.
                                                    inverse warping (`affine_grid`)
  (3)   V_i^c = sum_nm U_nm^c k(x_s_i - m) k(y_s_i - n)     generic sampling kernel
  (5)   k(d) = max(0, 1 - |d|)                      the bilinear kernel (`bilinear_sample`)
  (6-7) dV/dU and dV/dx_s: the sub-gradients of (5); here they are what autodiff of the
        four-neighbour form gives, i.e. dV/dx_s = sum_n k(y_s - n) (U_{n,m1} - U_{n,m0}) between
        neighbours m0 = floor(x_s) and m1 = m0 + 1 (the one-sided sub-gradient at integer x_s).

Coordinate convention (the paper only says "normalised to [-1, 1]"): the CENTRES of the corner
pixels sit at -1 and +1 (PyTorch's `align_corners=True`), so a side of W pixels has centres at
x = -1 + 2 j / (W - 1), j = 0..W-1, and x = 0 is the image centre; x indexes columns and y rows.
With this convention the identity theta maps every target pixel centre onto a source pixel
centre, which makes the identity transform exact rather than a half-pixel blur. To keep it
exact in floating point too, `affine_pixel_coords` evaluates (1) directly in pixel units,
  m = c_in + a (j - c_out) c_in / c_out + b (i - c_out') c_in / c_out' + t c_in,
with c = (side - 1) / 2: for equal sizes every factor is a small integer or half-integer, so
identity and translations by whole multiples of 2 / (W - 1) that are dyadic land on exact integers.
Locations outside the image read zeros, as the kernel sum in (3) runs over image pixels only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # A_theta = [[1, 0, 0], [0, 1, 0]], row-major


def _theta_matrix(theta: jax.Array) -> jax.Array:
    if theta.ndim == 2 and theta.shape[-1] == 6:
        return theta.reshape(theta.shape[0], 2, 3)
    if theta.ndim == 3 and theta.shape[1:] == (2, 3):
        return theta
    raise ValueError(
        f"theta must be [B, 2, 3] or [B, 6] (row-major A_theta), got shape {tuple(theta.shape)}"
    )


def normalized_grid(height: int, width: int) -> jax.Array:
    """Target pixel centres (x_t, y_t) in [-1, 1], corners' centres at +-1.

    Args:
      height: rows H of the target grid.
      width: columns W of the target grid.

    Returns:
      [H, W, 2], last axis (x_t, y_t); a side of 1 pixel sits at 0.
    """
    xs = jnp.linspace(-1.0, 1.0, width) if width > 1 else jnp.zeros((1,))
    ys = jnp.linspace(-1.0, 1.0, height) if height > 1 else jnp.zeros((1,))
    x, y = jnp.meshgrid(xs, ys)  # both [H, W]
    return jnp.stack([x, y], axis=-1)


def affine_grid(theta: jax.Array, out_size: tuple[int, int]) -> jax.Array:
    """Eq. 1: normalised source coordinates (x_s, y_s) of every target pixel.

    Args:
      theta: [B, 2, 3] or [B, 6] affine parameters A_theta.
      out_size: (H_out, W_out) of the target grid.

    Returns:
      [B, H_out, W_out, 2], last axis (x_s, y_s) in the normalised frame of the source image.
    """
    a = _theta_matrix(theta)
    grid = normalized_grid(*out_size)
    homogeneous = jnp.concatenate([grid, jnp.ones_like(grid[..., :1])], axis=-1)  # [H, W, 3]
    return jnp.einsum("bij,hwj->bhwi", a, homogeneous)


def _half(side: int) -> float:
    return (side - 1) / 2.0


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def affine_pixel_coords(
    theta: jax.Array, in_size: tuple[int, int], out_size: tuple[int, int]
) -> jax.Array:
    """Eq. 1 mapped to source pixel units: (column, row) that each target pixel samples.

    Equal to `(affine_grid(theta, out_size) + 1) * (in_size[::-1] - 1) / 2` in exact arithmetic;
    written so that identity and dyadic translations stay exact in floating point (module
    docstring).

    Args:
      theta: [B, 2, 3] or [B, 6].
      in_size: (H_in, W_in) of the source image.
      out_size: (H_out, W_out) of the target grid.

    Returns:
      [B, H_out, W_out, 2], last axis (x = column, y = row) in source pixels.
    """
    a = _theta_matrix(theta)
    (h_in, w_in), (h_out, w_out) = in_size, out_size
    cx_in, cy_in, cx_out, cy_out = _half(w_in), _half(h_in), _half(w_out), _half(h_out)
    # Target offsets from the output centre in output pixels; a 1-pixel side has x_t = 0.
    j = jnp.arange(w_out, dtype=a.dtype)[None, None, :] - cx_out  # [1, 1, W_out]
    i = jnp.arange(h_out, dtype=a.dtype)[None, :, None] - cy_out  # [1, H_out, 1]
    # c_in * x_t written as j * (c_in / c_out): the ratio is exactly 1 when sizes are equal, so
    # the diagonal terms stay integers; a 1-pixel side has j = 0 and any finite ratio.
    jx, jy = j * _ratio(cx_in, cx_out), j * _ratio(cy_in, cx_out)
    ix, iy = i * _ratio(cx_in, cy_out), i * _ratio(cy_in, cy_out)
    coef = a[:, :, :, None, None]  # [B, 2, 3, 1, 1]
    x = cx_in + coef[:, 0, 0] * jx + coef[:, 0, 1] * ix + coef[:, 0, 2] * cx_in
    y = cy_in + coef[:, 1, 0] * jy + coef[:, 1, 1] * iy + coef[:, 1, 2] * cy_in
    return jnp.stack([x, y], axis=-1)


def bilinear_sample(images: jax.Array, coords: jax.Array) -> jax.Array:
    """Eq. 5: bilinear sampling of `images` at real-valued pixel coordinates, zero outside.

    Only the four neighbours with non-zero kernel weight are gathered, so the cost is
    O(B H_out W_out C) rather than the O(H W) per output pixel of the literal double sum.

    Args:
      images: U, [B, H, W, C].
      coords: [B, H_out, W_out, 2], last axis (x = column, y = row) in pixels; pixel (i, j) has
        its centre at (x, y) = (j, i).

    Returns:
      V, [B, H_out, W_out, C]; differentiable w.r.t. both `images` and `coords` (eqs. 6-7).
    """
    if images.ndim != 4:
        raise ValueError(
            f"images must be [B, H, W, C], got shape {tuple(images.shape)}; add the channel axis"
        )
    b, h, w, _ = images.shape
    x, y = coords[..., 0], coords[..., 1]
    x0, y0 = jnp.floor(x), jnp.floor(y)
    # floor has zero gradient, so d(wx1)/dx = 1: autodiff gives exactly the eq. 7 sub-gradient.
    wx1, wy1 = x - x0, y - y0
    wx0, wy0 = 1.0 - wx1, 1.0 - wy1
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    batch = jnp.arange(b)[:, None, None]

    def tap(yi: jax.Array, xi: jax.Array, weight: jax.Array) -> jax.Array:
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        # Clipped indices keep the gather in bounds; `inside` zeroes what they read.
        pixel = images[batch, jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]  # [B, Ho, Wo, C]
        return pixel * jnp.where(inside, weight, 0.0)[..., None].astype(images.dtype)

    return (
        tap(y0, x0, wy0 * wx0)
        + tap(y0, x0 + 1, wy0 * wx1)
        + tap(y0 + 1, x0, wy1 * wx0)
        + tap(y0 + 1, x0 + 1, wy1 * wx1)
    )


def spatial_transform(
    images: jax.Array, theta: jax.Array, out_size: tuple[int, int] | None = None
) -> jax.Array:
    """Grid generator + sampler: warps `images` by A_theta into an `out_size` target grid.

    Args:
      images: [B, H, W, C].
      theta: [B, 2, 3] or [B, 6].
      out_size: (H_out, W_out); None keeps (H, W).

    Returns:
      [B, H_out, W_out, C].
    """
    if images.ndim != 4:
        raise ValueError(
            f"images must be [B, H, W, C], got shape {tuple(images.shape)}; add the channel axis"
        )
    in_size = (images.shape[1], images.shape[2])
    coords = affine_pixel_coords(theta.astype(images.dtype), in_size, out_size or in_size)
    return bilinear_sample(images, coords)
