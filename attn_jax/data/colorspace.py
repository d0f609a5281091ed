"""sRGB <-> CIE L*a*b* (D65 white), in numpy or jax.numpy (`xp`), for the colour datasets and the
colorization task (Zhang, Isola, Efros 2016, "Colorful Image Colorization", ECCV 2016, sec. 2:
the network sees the lightness L and predicts the two chromatic channels ab).

The formulas are the standard ones: IEC 61966-2-1 for the sRGB transfer curve and its primaries
(the linear-RGB -> XYZ matrix below), CIE 1976 for L*a*b* with the D65 reference white, whose
cube root is replaced below (6/29)^3 by its tangent line, so that L* = 903.3 Y for very dark
colours. L* runs from 0 (black) to 100 (white); a* and b* are about -100..100 (green-red and
blue-yellow), 0 on the grey axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Linear sRGB -> XYZ (D65), IEC 61966-2-1.
_RGB_TO_XYZ = np.asarray(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.asarray([0.95047, 1.0, 1.08883])  # D65, Y = 1
_DELTA = 6.0 / 29.0


def _srgb_to_linear(c, xp):
    return xp.where(
        c <= 0.04045, c / 12.92, xp.power((xp.maximum(c, 0.04045) + 0.055) / 1.055, 2.4)
    )


def _linear_to_srgb(c, xp):
    high = 1.055 * xp.power(xp.maximum(c, 0.0031308), 1.0 / 2.4) - 0.055
    return xp.where(c <= 0.0031308, 12.92 * c, high)


def _f(t, xp):
    return xp.where(
        t > _DELTA**3,
        xp.power(xp.maximum(t, _DELTA**3), 1.0 / 3.0),
        t / (3 * _DELTA**2) + 4.0 / 29.0,
    )


def _f_inverse(f, xp):
    return xp.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))


def srgb_to_lab(rgb: Any, xp: Any = np) -> Any:
    """sRGB in [0, 1], [..., 3] -> L*a*b* [..., 3] (L* in 0..100)."""
    linear = _srgb_to_linear(rgb, xp)
    xyz = linear @ xp.asarray(_RGB_TO_XYZ.T, dtype=linear.dtype)
    fx, fy, fz = (_f(xyz[..., i] / _WHITE[i], xp) for i in range(3))
    return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_srgb(lab: Any, xp: Any = np) -> Any:
    """L*a*b* [..., 3] -> sRGB [..., 3], NOT clipped: a colour outside the sRGB gamut comes back
    with values below 0 or above 1 (`in_srgb_gamut` tells)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    xyz = xp.stack([_f_inverse(f, xp) * _WHITE[i] for i, f in enumerate((fx, fy, fz))], axis=-1)
    linear = xyz @ xp.asarray(_XYZ_TO_RGB.T, dtype=xyz.dtype)
    return _linear_to_srgb(linear, xp)


def in_srgb_gamut(lab: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
    """Whether each L*a*b* colour [..., 3] has an sRGB value in [0, 1] on every channel."""
    rgb = lab_to_srgb(np.asarray(lab, np.float64))
    return np.all((rgb >= -tolerance) & (rgb <= 1.0 + tolerance), axis=-1)


__all__ = ["in_srgb_gamut", "lab_to_srgb", "srgb_to_lab"]
