"""Random erasing (Zhong, Zheng, Kang, Li and Yang 2020, "Random Erasing Data Augmentation") as
DeiT trains with it: timm's RandomErasing in mode "pixel", after normalization.

With probability `prob` an image gets one rectangle of per-pixel, per-channel N(0, 1) noise (the
normalized scale, so the noise looks like the data's own spread). Its area is uniform in
`area` (0.02 to 1/3) of the image, its aspect ratio h / w log-uniform in `aspect` (0.3 to 1/0.3);
h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)) must be smaller than the image's
sides, else the draw is retried, up to ATTEMPTS times, then the image is left alone. The top-left
corner is uniform over the integer positions that keep the rectangle inside.

Every random number, the noise included, comes from counter-based draws (transforms.py) of the
example's stream position, so the erasing is the same in any process, thread or restart.
"""

from __future__ import annotations

import math

import numpy as np

from attn_jax.data import transforms as T

ATTEMPTS = 10
DRAWS = 1 + 4 * ATTEMPTS  # apply, then (area, aspect, top, left) per attempt


def erase_box(
    height: int,
    width: int,
    u: np.ndarray,
    area: tuple[float, float] = (0.02, 1 / 3),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> tuple[int, int, int, int] | None:
    """The rectangle (top, left, h, w) that `u` (4 uniforms per attempt) draws on a height x width
    image, or None when no attempt fits."""
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for a, r, y, x in np.asarray(u, np.float64).reshape(-1, 4):
        target = (area[0] + a * (area[1] - area[0])) * height * width
        ratio = math.exp(log_lo + r * (log_hi - log_lo))
        h, w = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if h < height and w < width:
            top = min(int(y * (height - h + 1)), height - h)
            left = min(int(x * (width - w + 1)), width - w)
            return top, left, h, w
    return None


def standard_normal(key: int, counters: np.ndarray) -> np.ndarray:
    """float32 N(0, 1) draws, one per counter, a pure function of (key, counter) (Box-Muller on
    two uniforms)."""
    counters = np.asarray(counters, np.uint64)
    bits = T.random_bits(key, np.stack([2 * counters, 2 * counters + np.uint64(1)]))
    u1, u2 = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def random_erase(
    images: np.ndarray,
    positions: np.ndarray,
    key: int,
    prob: float,
    *,
    area: tuple[float, float] = (0.02, 1 / 3),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> np.ndarray:
    """Erases one random rectangle per image with probability `prob`, in place.

    Args:
        images: normalized float32 [N, H, W, C].
        positions: int [N], the examples' stream positions (the counters of every draw).
        key: the erasing's key (`transforms.fold_key(seed, purpose)`).
        prob: probability that an image is erased.
        area: range of the rectangle's fraction of the image area.
        aspect: range of the rectangle's h / w.

    Returns:
        `images`, with the erased rectangles filled with N(0, 1) noise.
    """
    n, height, width, channels = images.shape
    u = T.random_uniform(key, positions, DRAWS)
    noise_key = T.fold_key(key, 1)
    per_image = height * width * channels
    for i in np.flatnonzero(u[:, 0] < prob):
        box = erase_box(height, width, u[i, 1:], area, aspect)
        if box is None:
            continue
        top, left, h, w = box
        # Counters: the image's own block of H * W * C, indexed by the erased pixels' offsets.
        offsets = np.arange(h * w * channels, dtype=np.uint64)
        first = np.uint64(int(positions[i]) * per_image)
        noise = standard_normal(noise_key, first + offsets).reshape(h, w, channels)
        images[i, top : top + h, left : left + w] = noise
    return images
