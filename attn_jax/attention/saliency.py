"""Bottom-up saliency: Itti, Koch and Niebur 1998, "A Model of Saliency-Based Visual Attention for
Rapid Scene Analysis" (IEEE PAMI 20(11):1254-1259).

Implemented (sec. 2 of the paper, "Model"):
  - sec. 2.1, "Extraction of Early Visual Features": nine-scale dyadic Gaussian pyramids
    (scale 0 = 1:1 ... scale 8 = 1:256), each level the previous one low-passed and subsampled by
    two (`gaussian_pyramid`); intensity I = (r + g + b) / 3; r, g, b normalized by I where
    I > max(I) / 10, zero elsewhere; broadly tuned colours R = r - (g + b)/2, G = g - (r + b)/2,
    B = b - (r + g)/2, Y = (r + g)/2 - |r - g|/2 - b, negative values set to zero
    (`color_channels`); orientation O(sigma, theta) from Gabor filters at theta in
    {0, 45, 90, 135} degrees. Center-surround differences "⊖" (interpolate the surround to the
    centre's scale, subtract point by point) at c in {2, 3, 4}, s = c + delta, delta in {3, 4}:
    eqs. (1)-(4), 6 intensity + 12 colour + 24 orientation = 42 feature maps (`feature_maps`).
  - sec. 2.2, "The Saliency Map": the map normalization operator N(.) (`normalize_map`);
    across-scale addition "⊕" at scale 4 into the conspicuity maps I-bar, C-bar, O-bar,
    eqs. (5)-(7); the saliency map S = (N(I-bar) + N(C-bar) + N(O-bar)) / 3, eq. (8)
    (`itti_koch_saliency`).
The winner-take-all network and inhibition of return that scan S over time are not part of this
module: the saliency map is where the model attends first (its maximum).

Choices the paper leaves open, made here: the pyramid filter is the 5-tap binomial [1,4,6,4,1]/16
of Burt and Adelson (1983) with reflected borders, and a level of side n has side ceil(n / 2); the
Gabor filter is an even (cosine) 9x9 kernel, wavelength 4 and envelope sigma 2 pixels of the level
it filters, made zero-mean so that flat regions give no response, rectified by |.|; N(.) rescales
to [0, 1] (M = 1) and ignores local maxima below a tenth of the maximum when averaging them.

Everything is jax.numpy with static shapes; the Python loops run over the fixed scales while
tracing. `itti_koch_saliency_jit` is the compiled entry point (one compilation per image shape).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

NUM_SCALES = 9  # sigma = 0..8
CENTER_SCALES = (2, 3, 4)
SURROUND_DELTAS = (3, 4)
CONSPICUITY_SCALE = 4
ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)  # degrees
MIN_SIDE = 2 ** (NUM_SCALES - 1)  # scale 8 is 1:256

_BINOMIAL_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def _conv2d(image: jax.Array, kernel: jax.Array) -> jax.Array:
    """'same'-size correlation of a [H, W] map with a [kh, kw] kernel, reflected borders."""
    kh, kw = kernel.shape
    padded = jnp.pad(image, ((kh // 2, kh // 2), (kw // 2, kw // 2)), mode="reflect")
    out = jax.lax.conv_general_dilated(
        padded[None, :, :, None],  # [1, H, W, 1]
        kernel[:, :, None, None].astype(image.dtype),  # [kh, kw, 1, 1]
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return out[0, :, :, 0]


def pyramid_reduce(image: jax.Array) -> jax.Array:
    """One pyramid step: binomial low-pass, then keep every other row and column (sec. 2.1)."""
    k = jnp.asarray(_BINOMIAL_5)
    blurred = _conv2d(_conv2d(image, k[None, :]), k[:, None])  # separable 5x5
    return blurred[::2, ::2]


def gaussian_pyramid(image: jax.Array, num_scales: int = NUM_SCALES) -> list[jax.Array]:
    """Dyadic Gaussian pyramid [scale 0 = image, ..., scale num_scales-1] of a [H, W] map.

    Scale sigma has shape (ceil(H / 2**sigma), ceil(W / 2**sigma)).
    """
    levels = [image]
    for _ in range(num_scales - 1):
        levels.append(pyramid_reduce(levels[-1]))
    return levels


def pyramid_shape(shape: tuple[int, int], scale: int) -> tuple[int, int]:
    """(height, width) of pyramid level `scale` of a map of `shape`."""
    h, w = shape
    for _ in range(scale):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def _upsample(image: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Bilinear interpolation of a coarse map to a finer scale's `shape`."""
    return jax.image.resize(image, shape, method="linear", antialias=False)


def center_surround(center: jax.Array, surround: jax.Array) -> jax.Array:
    """|center ⊖ surround|: the surround interpolated to the centre's scale, subtracted, rectified
    (eqs. 1-4)."""
    return jnp.abs(center - _upsample(surround, center.shape))


def color_channels(image: jax.Array) -> dict[str, jax.Array]:
    """Intensity and the four broadly tuned colour channels of an [H, W, 3] RGB image (sec. 2.1).

    Returns:
      {"I": (r+g+b)/3, "R", "G", "B", "Y"}, each [H, W]; the colours are computed from r, g, b
      divided by I where I > max(I)/10 (zero elsewhere, "to decouple hue from intensity"), and
      clipped at zero.
    """
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    intensity = (r + g + b) / 3.0
    lit = intensity > 0.1 * jnp.max(intensity)
    inv = jnp.where(lit, 1.0 / jnp.where(lit, intensity, 1.0), 0.0)
    r, g, b = r * inv, g * inv, b * inv
    relu = jax.nn.relu
    return {
        "I": intensity,
        "R": relu(r - (g + b) / 2),
        "G": relu(g - (r + b) / 2),
        "B": relu(b - (r + g) / 2),
        "Y": relu((r + g) / 2 - jnp.abs(r - g) / 2 - b),
    }


def gabor_kernel(
    theta_degrees: float, size: int = 9, wavelength: float = 4.0, sigma: float = 2.0
) -> np.ndarray:
    """Even (cosine) Gabor kernel, zero-mean, unit L1 norm; the grating varies along the direction
    theta, so the filter responds to edges and bars oriented at theta + 90 degrees."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    t = np.deg2rad(theta_degrees)
    along = x * np.cos(t) + y * np.sin(t)
    kernel = np.exp(-(x**2 + y**2) / (2 * sigma**2)) * np.cos(2 * np.pi * along / wavelength)
    kernel -= kernel.mean()
    return (kernel / np.abs(kernel).sum()).astype(np.float32)


def _pairs() -> list[tuple[int, int]]:
    return [(c, c + d) for c in CENTER_SCALES for d in SURROUND_DELTAS]


def feature_maps(image: jax.Array) -> dict[str, list[jax.Array]]:
    """The 42 center-surround feature maps of an [H, W, 3] image, eqs. (1)-(4).

    Returns:
      {"intensity": 6 maps I(c, s), "rg": 6 maps RG(c, s), "by": 6 maps BY(c, s),
       "orientation_<theta>": 6 maps O(c, s, theta) for each of the 4 theta}, each list in the
      order of (c, s) = (2,5), (2,6), (3,6), (3,7), (4,7), (4,8); a map has the shape of scale c.

    Eqs. (2)-(3) write RG(c, s) = |(R(c) - G(c)) ⊖ (G(s) - R(s))|: read with ⊖ as a plain
    difference this would add the surround's opponency to the centre's and respond to uniform
    colour; the double-opponent cells the equation models respond to a centre/surround contrast
    of (R - G), so the map is |(R - G)(c) ⊖ (R - G)(s)|, and likewise for B - Y.
    """
    ch = color_channels(image)
    intensity = gaussian_pyramid(ch["I"])
    rg = gaussian_pyramid(ch["R"] - ch["G"])
    by = gaussian_pyramid(ch["B"] - ch["Y"])
    maps = {
        "intensity": [center_surround(intensity[c], intensity[s]) for c, s in _pairs()],
        "rg": [center_surround(rg[c], rg[s]) for c, s in _pairs()],
        "by": [center_surround(by[c], by[s]) for c, s in _pairs()],
    }
    needed = sorted({c for c, _ in _pairs()} | {s for _, s in _pairs()})
    for theta in ORIENTATIONS:
        kernel = jnp.asarray(gabor_kernel(theta))
        # O(sigma, theta): the Gabor response of each intensity level, rectified.
        oriented = {sc: jnp.abs(_conv2d(intensity[sc], kernel)) for sc in needed}
        maps[f"orientation_{int(theta)}"] = [
            center_surround(oriented[c], oriented[s]) for c, s in _pairs()
        ]
    return maps


def _local_maxima(image: jax.Array) -> jax.Array:
    """Boolean map of the local maxima of an [H, W] map over its 8 neighbours.

    A plateau of equal values counts once: a pixel must be strictly above the neighbours that
    come before it in raster order and at least as high as those after it.
    """
    h, w = image.shape
    padded = jnp.pad(image, 1, constant_values=-jnp.inf)
    is_max = jnp.ones(image.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            earlier = dy < 0 or (dy == 0 and dx < 0)
            is_max &= image > neighbour if earlier else image >= neighbour
    return is_max


def normalize_map(image: jax.Array, threshold: float = 0.1) -> jax.Array:
    """The map normalization operator N(.) of sec. 2.2.

    (1) rescale the map to the fixed range [0, M], M = 1; (2) find its global maximum M and the
    mean m-bar of its other local maxima; (3) multiply the map by (M - m-bar)^2. A map with one
    strong peak keeps its amplitude; a map with many comparable peaks is suppressed. Local maxima
    below `threshold` * M are ignored as noise when averaging (none left: m-bar = 0). A constant
    map becomes all zeros.
    """
    lo, hi = jnp.min(image), jnp.max(image)
    span = hi - lo
    scaled = jnp.where(span > 0, (image - lo) / jnp.where(span > 0, span, 1.0), 0.0)
    peaks = _local_maxima(scaled) & (scaled >= threshold)
    total = jnp.sum(jnp.where(peaks, scaled, 0.0))
    count = jnp.sum(peaks)
    top = jnp.max(scaled)  # 1, or 0 for a constant map
    # The global maximum is one of the counted peaks: the others are all but one of them.
    others_mean = jnp.where(count > 1, (total - top) / jnp.maximum(count - 1, 1), 0.0)
    return scaled * (top - others_mean) ** 2


def _to_scale(image: jax.Array, from_scale: int, to_scale: int) -> jax.Array:
    """Reduces a map from pyramid scale `from_scale` to the coarser `to_scale` (the "⊕" step)."""
    for _ in range(to_scale - from_scale):
        image = pyramid_reduce(image)
    return image


def _across_scale_sum(maps: list[jax.Array]) -> jax.Array:
    """⊕ over the six (c, s) maps: each reduced to scale 4, then summed point by point."""
    return sum(_to_scale(m, c, CONSPICUITY_SCALE) for m, (c, _) in zip(maps, _pairs(), strict=True))


def _check_image(image: jax.Array) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"itti_koch_saliency expects one RGB image [H, W, 3], got shape {image.shape}; "
            f"vmap it for a batch, and stack a grey image into 3 channels"
        )
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"itti_koch_saliency needs at least {MIN_SIDE} pixels a side (scale 8 is 1:256), got "
            f"{image.shape[:2]}; upsample the image"
        )


def itti_koch_saliency(image: jax.Array) -> dict[str, jax.Array]:
    """Saliency map of an RGB image [H, W, 3] (any positive range, e.g. [0, 1] or [0, 255]).

    Returns:
      {"intensity", "color", "orientation": the conspicuity maps I-bar, C-bar, O-bar of
       eqs. (5)-(7); "saliency": S of eq. (8)}, each [H4, W4], the shape of pyramid scale 4.

    Raises:
      ValueError: the image is not [H, W, 3] or a side is under 256 pixels.
    """
    _check_image(image)
    image = image.astype(jnp.float32)
    maps = feature_maps(image)
    norm = normalize_map
    intensity_bar = _across_scale_sum([norm(m) for m in maps["intensity"]])  # eq. (5)
    color_bar = _across_scale_sum(  # eq. (6)
        [norm(a) + norm(b) for a, b in zip(maps["rg"], maps["by"], strict=True)]
    )
    orientation_bar = sum(  # eq. (7)
        norm(_across_scale_sum([norm(m) for m in maps[f"orientation_{int(t)}"]]))
        for t in ORIENTATIONS
    )
    saliency = (norm(intensity_bar) + norm(color_bar) + norm(orientation_bar)) / 3.0  # eq. (8)
    return {
        "intensity": intensity_bar,
        "color": color_bar,
        "orientation": orientation_bar,
        "saliency": saliency,
    }


itti_koch_saliency_jit = jax.jit(itti_koch_saliency)


@jax.jit
def saliency_peak(saliency: jax.Array) -> jax.Array:
    """(row, col) of the maximum of a saliency map: where attention goes first."""
    return jnp.stack(jnp.unravel_index(jnp.argmax(saliency), saliency.shape))
