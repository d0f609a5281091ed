"""Host-side image transforms on whole batches, and the counter-based randomness they draw from.

Every random choice (shuffle order, shift, flip, crop) is a pure function of a key folded from
(seed, purpose, ...) and a counter, here the example's position in the global stream. A batch can
thus be computed in any order, on any process, in any thread, and again after a restart, with the
same result: no generator state to carry, nothing to checkpoint but the step.

The bits are the output of splitmix64 (Steele, Lea and Flood 2014, "Fast splittable pseudorandom
number generators"): draw c of the generator seeded with key k is mix64(k + (c + 1) * golden),
computed here for a whole array of counters at once.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, splitmix64's increment


def _mix64_int(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array (wrapping arithmetic is intended)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def fold_key(*words: int) -> int:
    """One 64-bit key from integers such as (seed, purpose, epoch); negative ints are fine."""
    key = 0
    for word in words:
        key = _mix64_int(((key + _GOLDEN) & _MASK64) ^ (word & _MASK64))
    return key


def random_bits(key: int, counters: np.ndarray) -> np.ndarray:
    """uint64 random bits, one per counter: draw `counter` of splitmix64 seeded with `key`."""
    counters = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(np.uint64(key) + (counters + np.uint64(1)) * np.uint64(_GOLDEN))


def random_uniform(key: int, counters: np.ndarray, num: int) -> np.ndarray:
    """float64 [len(counters), num] uniform in [0, 1): `num` independent draws per counter."""
    counters = np.asarray(counters, dtype=np.uint64)
    flat = counters[:, None] * np.uint64(num) + np.arange(num, dtype=np.uint64)
    return (random_bits(key, flat) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def random_permutation(key: int, n: int) -> np.ndarray:
    """A permutation of range(n) as int64, a pure function of (key, n)."""
    return np.argsort(random_bits(key, np.arange(n)), kind="stable")


# -- pixel transforms on batches [N, H, W, C] --------------------------------------------------
def uniform_shifts(u: np.ndarray, max_shift: int) -> np.ndarray:
    """Integer shifts in [-max_shift, max_shift], equally likely, from uniforms in [0, 1)."""
    return np.floor(u * (2 * max_shift + 1)).astype(np.int64) - max_shift


def translate(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shifts each image by (dy, dx) = shifts[i] pixels, filling with zeros.

    out[i, y, x] = images[i, y - dy, x - dx] where that lies inside the image, else 0; the same as
    zero-padding by max|shift| and cropping the original size at an offset.

    Args:
        images: [N, H, W, C].
        shifts: int [N, 2] of (dy, dx).

    Returns:
        [N, H, W, C], the dtype of `images`.
    """
    pad = int(np.abs(shifts).max(initial=0))
    if pad == 0:
        return images
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(images)
    # One slice copy per image: ~7x faster than a single fancy-indexing gather on [N, H, W, C].
    for i, (top, left) in enumerate((pad - np.asarray(shifts)).tolist()):
        out[i] = padded[i, top : top + h, left : left + w]
    return out


def flip_left_right(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirrors the images whose `flip` entry is True; [N, H, W, C] -> [N, H, W, C]."""
    out = images.copy()
    for i in np.flatnonzero(flip):
        out[i] = images[i, :, ::-1]
    return out


def normalize(images: np.ndarray, max_value: float, mean: Sequence[float], std: Sequence[float]):
    """float32 (images / max_value - mean) / std per channel (last axis)."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    scale = np.float32(1.0 / max_value) / std
    n, h, w, c = images.shape
    # Rows of W * C values against tiled constants, in place: broadcasting over a last axis of 3
    # runs numpy's inner loop 3 elements at a time, and temporaries double the memory traffic.
    out = images.reshape(n * h, w * c).astype(np.float32)
    out *= np.tile(scale, w)
    out -= np.tile(mean / std, w)
    return out.reshape(n, h, w, c)


def resize(images: np.ndarray, size: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """Resize of uint8 [N, H, W, C] to [N, size, size, C] with a PIL filter (bilinear by
    default; PIL's filters antialias when shrinking)."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[-1]), images.dtype)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out[i] = np.asarray(pil.resize((size, size), resample)).reshape(size, size, -1)
    return out


# -- ImageNet-style crops, one variable-size image at a time -----------------------------------
Box = tuple[float, float, float, float]  # (left, top, right, bottom) in pixels


def center_crop_box(width: int, height: int, fraction: float = 0.875) -> Box:
    """The centered square whose side is `fraction` of the shorter side (the usual eval crop:
    resize the shorter side to size / fraction, keep the central size x size)."""
    side = fraction * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def inception_crop_box(
    width: int,
    height: int,
    u: np.ndarray,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A random crop covering `scale` of the area with aspect ratio in `ratio` (Szegedy et al.
    2015, "Going deeper with convolutions"); tries len(u) // 4 times, then falls back to the
    largest central crop whose ratio is inside `ratio`.

    Args:
        width: image width.
        height: image height.
        u: uniforms in [0, 1), 4 per attempt (area, log ratio, left, top).
        scale: range of the crop's fraction of the image area.
        ratio: range of the crop's width / height.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for a, r, x, y in np.asarray(u).reshape(-1, 4):
        target = area * (scale[0] + a * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + r * (log_hi - log_lo))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if w <= width and h <= height:
            left, top = x * (width - w), y * (height - h)
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, width / ratio[0]
    elif aspect > ratio[1]:
        w, h = height * ratio[1], height
    else:
        w, h = width, height
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


def crop_resize(
    image: bytes | np.ndarray,
    size: int,
    box_fn: Callable[[int, int], Box],
    flip: bool = False,
    resample: int = Image.BILINEAR,
) -> np.ndarray:
    """Decodes (if encoded), crops `box_fn(width, height)`, resizes to size x size with the PIL
    filter `resample`, maybe flips.

    JPEGs are decoded at the smallest power-of-two reduction that still leaves at least `size`
    pixels across the crop (PIL's draft mode): ImageNet's ~400x350 JPEGs then decode several
    times faster when cropped to 224 or less.

    Returns:
        uint8 [size, size, 3].
    """
    if isinstance(image, np.ndarray):
        pil = Image.fromarray(image)
    else:
        pil = Image.open(io.BytesIO(image))
    width, height = pil.size
    left, top, right, bottom = box_fn(width, height)
    if pil.format == "JPEG":
        wanted = (
            math.ceil(width * size / max(right - left, 1e-6)),
            math.ceil(height * size / max(bottom - top, 1e-6)),
        )
        pil.draft("RGB", wanted)
    sx, sy = pil.size[0] / width, pil.size[1] / height
    box = (left * sx, top * sy, right * sx, bottom * sy)
    out = pil.convert("RGB").resize((size, size), resample, box=box)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out)
