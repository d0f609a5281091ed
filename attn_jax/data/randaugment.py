"""RandAugment (Cubuk, Zoph, Shlens and Le 2020, "RandAugment: Practical automated data
augmentation with a reduced search space") in the form timm gives it and DeiT (Touvron et al.
2021) and Swin (Liu et al. 2021) train with: `rand-m9-mstd0.5-inc1`.

Each image goes through `num_layers` operations drawn uniformly, with replacement, from the op
set; each drawn op is applied with probability `prob` at a magnitude m drawn per op from
N(magnitude, magnitude_std) and clipped to [0, magnitude_max] (uniform on [0, magnitude] when the
std is infinite). The magnitude maps to the op's argument on timm's scale of 10 (level = m / 10):

| op | argument at level l | sign |
|---|---|---|
| AutoContrast, Equalize, Invert | none | |
| Rotate | 30 l degrees | random |
| Posterize / PosterizeIncreasing | keep int(4 l) / 4 - int(4 l) bits | |
| Solarize / SolarizeIncreasing | threshold min(256, int(256 l)) / 256 minus that | |
| SolarizeAdd | add min(128, int(110 l)) to pixels below 128 | |
| Color, Contrast, Brightness, Sharpness | enhance factor 1.8 l + 0.1 | |
| the same, "Increasing" | enhance factor max(0.1, 1 + 0.9 l s) | s random |
| ShearX, ShearY | shear 0.3 l | random |
| TranslateXRel, TranslateYRel | shift 0.45 l of the width / height | random |

"Increasing" ops grow stronger with the magnitude (`inc1`); the original set (`inc0`) has
Posterize, Solarize and the plain enhancements instead. A random sign is negative with
probability 1/2. Geometric ops fill with the dataset mean (timm's `img_mean`) and resample with
the pipeline's interpolation. Every op is PIL's (ImageOps, ImageEnhance, Image.transform), the
library timm itself calls; only SolarizeAdd is a lookup table of ours, PIL having no such op.

Randomness comes from counter-based uniforms (transforms.py), `DRAWS_PER_LAYER` per layer: op,
apply, two for the Gaussian magnitude (Box-Muller), sign.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from attn_jax.data.errors import DataConfigError

LEVEL_SCALE = 10.0  # timm's magnitude scale: level = magnitude / 10
DRAWS_PER_LAYER = 5  # op, apply, Gaussian (2), sign

INCREASING_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
ORIGINAL_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
_ENHANCERS = {
    "Color": ImageEnhance.Color,
    "Contrast": ImageEnhance.Contrast,
    "Brightness": ImageEnhance.Brightness,
    "Sharpness": ImageEnhance.Sharpness,
}
SIGNED_OPS = frozenset(
    {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
    | {f"{name}Increasing" for name in _ENHANCERS}
)


@dataclasses.dataclass(frozen=True)
class RandAugmentPolicy:
    """A parsed RandAugment policy string (see `parse_policy`).

    Attributes:
        num_layers: ops per image (`n`, default 2).
        magnitude: mean magnitude on the scale of 10 (`m`, default 10).
        magnitude_std: std of the per-op Gaussian magnitude noise (`mstd`, default 0); inf:
            uniform on [0, magnitude].
        magnitude_max: upper clip of the drawn magnitude (`mmax`, default 10).
        prob: probability of applying each drawn op (`p`, default 0.5).
        increasing: the op set whose ops grow stronger with the magnitude (`inc1`).
    """

    num_layers: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_SCALE
    prob: float = 0.5
    increasing: bool = False

    @property
    def ops(self) -> tuple[str, ...]:
        return INCREASING_OPS if self.increasing else ORIGINAL_OPS

    @property
    def draws(self) -> int:
        """Uniforms one image consumes."""
        return DRAWS_PER_LAYER * self.num_layers


def parse_policy(spec: str) -> RandAugmentPolicy:
    """Parses timm's RandAugment string: "rand" then dash-separated sections in any order, `m`
    (magnitude), `n` (layers), `p` (op probability), `mstd` (magnitude std; > 100 means
    uniform), `mmax` (magnitude clip), `inc` (0/1: the increasing op set).

        parse_policy("rand-m9-mstd0.5-inc1")  # DeiT's: 2 layers, m 9, std 0.5, increasing ops

    Raises:
        DataConfigError: not such a string (named sections other than these, e.g. timm's weighted
            op sets `t...`, are refused).
    """
    fix = "e.g. 'rand-m9-mstd0.5-inc1' (sections m, n, p, mstd, mmax, inc)"
    parts = str(spec).split("-")
    if parts[0] != "rand":
        raise DataConfigError(f"config.data.randaugment {spec!r} must start with 'rand'; {fix}")
    values: dict[str, float] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)(\d+(?:\.\d*)?|\.\d+)", part)
        if match is None:
            raise DataConfigError(
                f"config.data.randaugment {spec!r}: unknown section {part!r}; {fix}"
            )
        values[match.group(1)] = float(match.group(2))
    std = values.get("mstd", 0.0)
    policy = RandAugmentPolicy(
        num_layers=int(values.get("n", 2)),
        magnitude=values.get("m", LEVEL_SCALE),
        magnitude_std=math.inf if std > 100 else std,
        magnitude_max=values.get("mmax", LEVEL_SCALE),
        prob=values.get("p", 0.5),
        increasing=bool(int(values.get("inc", 0))),
    )
    if policy.num_layers < 1 or not 0.0 <= policy.prob <= 1.0:
        raise DataConfigError(
            f"config.data.randaugment {spec!r}: needs n >= 1 and p in [0, 1]; {fix}"
        )
    return policy


def op_argument(name: str, magnitude: float, negate: bool = False) -> float | int | None:
    """The argument of op `name` at `magnitude` (already clipped), with the sign of ops that have
    one flipped when `negate`: degrees, bits, threshold, addend, enhance factor, shear, or the
    fraction of the side to translate by; None for ops without an argument."""
    level = magnitude / LEVEL_SCALE
    sign = -1.0 if negate and name in SIGNED_OPS else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return sign * 30.0 * level
    if name == "Posterize":
        return int(4 * level)
    if name == "PosterizeIncreasing":
        return 4 - int(4 * level)
    if name == "Solarize":
        return min(256, int(256 * level))
    if name == "SolarizeIncreasing":
        return 256 - min(256, int(256 * level))
    if name == "SolarizeAdd":
        return min(128, int(110 * level))
    if name in _ENHANCERS:
        return 1.8 * level + 0.1
    if name.removesuffix("Increasing") in _ENHANCERS:
        return max(0.1, 1.0 + sign * 0.9 * level)
    if name in ("ShearX", "ShearY"):
        return sign * 0.3 * level
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * 0.45 * level
    raise KeyError(f"unknown RandAugment op {name!r}")


def _solarize_add(image: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = np.arange(256)
    lut[:threshold] = np.minimum(255, lut[:threshold] + add)
    return Image.fromarray(lut.astype(np.uint8)[np.asarray(image)], image.mode)


def apply_op(
    image: Image.Image,
    name: str,
    magnitude: float,
    negate: bool = False,
    *,
    fill: int | tuple[int, ...] = 128,
    resample: int = Image.BILINEAR,
) -> Image.Image:
    """Op `name` at `magnitude` on an 8-bit "L" or "RGB" image (see the module's table).

    Args:
        image: the PIL image.
        name: one of ORIGINAL_OPS or INCREASING_OPS.
        magnitude: on the scale of 10, already clipped.
        negate: flip the sign of the ops that have one.
        fill: the color geometric ops bring in.
        resample: PIL filter of the geometric ops.
    """
    arg = op_argument(name, magnitude, negate)
    geometric = {"fillcolor": fill, "resample": resample}
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    if name == "Rotate":
        return image.rotate(arg, **geometric)
    if name.startswith("Posterize"):
        if arg <= 0:  # keeps no bit: black (PIL >= 11 refuses 0 bits, older PIL made it black)
            return Image.new(image.mode, image.size)
        return image if arg >= 8 else ImageOps.posterize(image, arg)
    if name.startswith("Solarize") and name != "SolarizeAdd":
        return ImageOps.solarize(image, arg)
    if name == "SolarizeAdd":
        return _solarize_add(image, arg)
    if name.removesuffix("Increasing") in _ENHANCERS:
        return _ENHANCERS[name.removesuffix("Increasing")](image).enhance(arg)
    # PIL maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    width, height = image.size
    matrix = {
        "ShearX": (1, arg, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, arg, 1, 0),
        "TranslateXRel": (1, 0, arg * width, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, arg * height),
    }[name]
    return image.transform(image.size, Image.AFFINE, matrix, **geometric)


def draw_magnitudes(policy: RandAugmentPolicy, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Per-op magnitudes from two uniforms each: Gaussian around `policy.magnitude` (Box-Muller),
    or uniform on [0, magnitude] for an infinite std; clipped to [0, magnitude_max]."""
    if math.isinf(policy.magnitude_std):
        m = u1 * policy.magnitude
    elif policy.magnitude_std > 0:
        normal = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
        m = policy.magnitude + policy.magnitude_std * normal
    else:
        m = np.full_like(u1, policy.magnitude)
    return np.clip(m, 0.0, policy.magnitude_max)


def randaugment(
    images: np.ndarray,
    u: np.ndarray,
    policy: RandAugmentPolicy,
    *,
    fill: int | tuple[int, ...] = 128,
    resample: int = Image.BILINEAR,
) -> np.ndarray:
    """RandAugment on a batch of 8-bit images.

    Args:
        images: uint8 [N, H, W, C], C 1 or 3.
        u: uniforms in [0, 1), [N, policy.draws].
        policy: the parsed policy.
        fill: the color geometric ops bring in (the dataset mean on 0..255).
        resample: PIL filter of the geometric ops.

    Returns:
        uint8 [N, H, W, C], a new array.
    """
    ops = policy.ops
    u = np.asarray(u, np.float64).reshape(len(images), policy.num_layers, DRAWS_PER_LAYER)
    which = np.minimum((u[..., 0] * len(ops)).astype(np.int64), len(ops) - 1)
    applied = u[..., 1] < policy.prob
    magnitudes = draw_magnitudes(policy, u[..., 2], u[..., 3])
    negate = u[..., 4] >= 0.5
    out = np.empty_like(images)
    gray = images.shape[-1] == 1
    for i, array in enumerate(images):
        if not applied[i].any():
            out[i] = array
            continue
        pil = Image.fromarray(array[..., 0] if gray else array)
        for k in np.flatnonzero(applied[i]):
            pil = apply_op(
                pil,
                ops[which[i, k]],
                float(magnitudes[i, k]),
                bool(negate[i, k]),
                fill=fill,
                resample=resample,
            )
        out[i] = np.asarray(pil).reshape(array.shape)
    return out
