"""Image preprocessing equal to the reference processors of the converted checkpoints.

Pretrained weights only reproduce their published numbers on inputs prepared the way they were
trained: the same resize filter, the same crop arithmetic, the same rescale and normalization. This
module rebuilds, from the checkpoint's own settings, the two pipelines our converters meet:

- Hugging Face image processors (`preprocessor_config.json`), PIL backend: `ViTImageProcessorPil`
  (resize to a fixed height x width), `CLIPImageProcessorPil` (shortest edge, then center crop) and
  `DetrImageProcessorPil` (shortest edge bounded by a longest edge, zero padding, pixel mask). The
  PIL backend is the processor these checkpoints were released with; transformers >= 5 also ships
  a torchvision backend (the default of `AutoImageProcessor`) whose uint8 resampling rounds some
  pixels to the neighbouring grey level, so it differs from both the PIL backend and this module by
  up to one level (2/255 / std after normalization).
- timm's evaluation transform (`resolve_data_config` + `create_transform`): resize the shortest
  side to floor(size / crop_pct) (torchvision's `Resize` on a PIL image), center crop with
  torchvision's rounding, `ToTensor` and `Normalize`.

Resizing goes through PIL exactly as the references do (PIL's filters define the numbers); the rest
is numpy with the references' dtypes (HF rescales in float64 and normalizes in float32, torchvision
divides by 255 in float32), so the outputs agree to float32 rounding.

Every preprocessor maps a PIL image, a uint8 [H, W, 3] array or an image path to
{"image": float32 [1, H, W, 3]} (channels-last, a batch of one), plus "pixel_mask" bool [1, H, W]
(True = a real pixel) for processors that pad (DETR); `ImagePreprocessor.batch` stacks several.

Images of any PIL mode are converted to RGB first as the references convert them (`to_rgb`: PIL's
`convert("RGB")`; transparency over white for the Hugging Face processors). A file that is
missing, not an image, truncated or beyond PIL's decompression-bomb limit is an `ImageError`, one
line naming it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attn_jax.errors import UserError
from attn_jax.pretrained.checkpoint_files import one_line

# The constants of transformers' image_utils and timm's data/constants.
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# PIL's resampling filter codes, as HF configs store them ("resample": 2).
RESAMPLE_CODES = {
    0: Image.Resampling.NEAREST,
    1: Image.Resampling.LANCZOS,
    2: Image.Resampling.BILINEAR,
    3: Image.Resampling.BICUBIC,
    4: Image.Resampling.BOX,
    5: Image.Resampling.HAMMING,
}
# timm's interpolation names.
RESAMPLE_NAMES = {
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class ImageError(UserError, ValueError):
    """An image that cannot be read or used; one line naming the file and the fix."""


class PreprocessConfigError(UserError, ValueError):
    """A preprocessing config (preprocessor_config.json, timm pretrained_cfg) we cannot honour."""


# -- primitives ------------------------------------------------------------------------------------


def read_image(image: Any) -> Image.Image:
    """A decoded PIL image, in the mode it was stored in, from a path, a PIL image or a uint8
    [H, W], [H, W, 3] or [H, W, 4] array.

    Raises:
      ImageError: a missing, unreadable, truncated or oversized file (beyond PIL's
        decompression-bomb limit `Image.MAX_IMAGE_PIXELS`, which is left as it is), or an array
        that is not a uint8 image; one line naming the file and the fix.
    """
    if isinstance(image, str | Path):
        return _decode_file(Path(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (
            image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))
        ):
            raise ImageError(
                f"an image array must be uint8 [H, W], [H, W, 3] or [H, W, 4], got {image.dtype} "
                f"{image.shape}; convert it with np.asarray(PIL.Image.open(path))"
            )
        return Image.fromarray(image)
    if isinstance(image, Image.Image):
        return image
    raise ImageError(
        f"cannot preprocess a {type(image).__name__}; pass a path, a PIL image or a uint8 array"
    )


def _decode_file(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageError(f"image file {path} does not exist; pass the path of a JPEG or PNG file")
    if path.is_dir():
        raise ImageError(f"{path} is a directory; pass the path of one image file (JPEG, PNG, ...)")
    try:
        # PIL warns between MAX_IMAGE_PIXELS and twice that and raises beyond; both are checked
        # below against the limit itself, so that the message can say how large the image is.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(path, int(pixels.group(1)) if pixels else None) from None
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image file PIL can read (unknown format); pass a JPEG, PNG, BMP, "
            "GIF, TIFF or WebP file"
        ) from None
    except OSError as e:
        raise ImageError(
            f"{path} cannot be read ({e.strerror or one_line(e, 80)}); check the file and its "
            "permissions"
        ) from None
    with opened:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and opened.width * opened.height > limit:
            raise _too_large(path, opened.width * opened.height, opened.size)
        try:
            opened.load()
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the decoder trips on is the file's fault
            raise ImageError(
                f"{path} is truncated or corrupt ({opened.format or 'image'} decoder: "
                f"{one_line(e, 80)}); download or export it again"
            ) from None
        return opened.copy()


def _too_large(path: Path, pixels: int | None, size: tuple[int, int] | None = None) -> ImageError:
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None:
        what = f"{size[0]}x{size[1]} = {pixels:,} pixels"
    else:
        what = f"{pixels:,} pixels" if pixels is not None else "more than twice that limit"
    return ImageError(
        f"{path} is {what}, beyond PIL's decompression-bomb limit of {limit:,} pixels "
        "(PIL.Image.MAX_IMAGE_PIXELS); downscale it first, or raise that limit in your own "
        "script if you trust the file"
    )


def to_rgb(image: Image.Image, *, alpha_on_white: bool = True) -> Image.Image:
    """`image` as RGB, the way the reference processors convert it.

    Every mode goes through PIL's `convert("RGB")`, as transformers' `convert_to_rgb` and timm's
    loader do: grey levels are replicated, palettes looked up, CMYK converted naively, and 16-bit
    and 32-bit integer images (I;16, I) clipped to 0..255, not rescaled. Transparency (an alpha
    band, or a palette's transparent index) is composited over white with `alpha_on_white`
    (transformers' `convert_to_rgb`, which CLIPImageProcessor applies and the ViT / DETR
    processors apply with do_convert_rgb=True) and dropped without (timm's loader).

    Raises:
      ImageError: a mode PIL cannot convert to RGB.
    """
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    try:
        if has_alpha and alpha_on_white:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image if image.mode == "RGB" else image.convert("RGB")
    except ValueError as e:
        raise ImageError(
            f"an image of PIL mode {image.mode!r} cannot be converted to RGB ({one_line(e, 60)}); "
            "save it as an RGB or greyscale image"
        ) from None


def load_image(image: Any, *, alpha_on_white: bool = True) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or a uint8 [H, W, 3] / [H, W] array
    (`read_image`, then `to_rgb`).

    Args:
      image: what to load.
      alpha_on_white: composite a transparent image over white (HF's `convert_to_rgb`); False drops
        the alpha channel as PIL's `convert("RGB")` (timm's loader) does.

    Raises:
      ImageError: a missing, unreadable or oversized file, or an array that is not a uint8 image.
    """
    return to_rgb(read_image(image), alpha_on_white=alpha_on_white)


def resize(image: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    """PIL resize to (height, width) with a PIL filter code (no reducing_gap, as the references)."""
    height, width = size
    return image.resize((width, height), resample=Image.Resampling(resample))


def shortest_edge_size(
    height: int, width: int, shortest: int, longest: int | None = None
) -> tuple[int, int]:
    """(height, width) with the shorter side `shortest`, the longer one truncated in proportion.

    torchvision's `Resize(int)` and HF's `get_resize_output_image_size` arithmetic: the long side is
    int(shortest * long / short); with `longest`, a long side beyond it is set to `longest` and the
    short side scaled down the same way.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest, int(shortest * long / short)
    if longest is not None and new_long > longest:
        new_short, new_long = int(longest * new_short / new_long), longest
    return (new_long, new_short) if width <= height else (new_short, new_long)


def bounded_aspect_size(height: int, width: int, shortest: int, longest: int) -> tuple[int, int]:
    """(height, width) for DETR's {"shortest_edge", "longest_edge"}: the short side `shortest`
    unless the long side would then exceed `longest`, in which case the long side is `longest`
    (HF's `get_size_with_aspect_ratio`, which rounds differently from `shortest_edge_size`)."""
    size, raw = shortest, None
    low, high = float(min(height, width)), float(max(height, width))
    if high / low * size > longest:
        raw = longest * low / high
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(size * height / width)), size
    return size, (int(raw * width / height) if raw is not None else int(size * width / height))


def center_crop(pixels: np.ndarray, size: tuple[int, int], rounding: str = "floor") -> np.ndarray:
    """Crops [H, W, C] to the centered (height, width) window, zero-padding a smaller image.

    Args:
      pixels: [H, W, C].
      size: (height, width) of the crop.
      rounding: where an odd margin goes. "floor": offset (H - h) // 2 and padding split with the
        extra pixel before the image (HF's `center_crop`); "round": offset round((H - h) / 2) and
        the extra padding pixel after the image (torchvision's `CenterCrop`, used by timm).
    """
    crop_h, crop_w = int(size[0]), int(size[1])
    h, w = pixels.shape[:2]
    if rounding == "round":
        if crop_h > h or crop_w > w:
            top_pad = (crop_h - h) // 2 if crop_h > h else 0
            left_pad = (crop_w - w) // 2 if crop_w > w else 0
            bottom_pad = (crop_h - h + 1) // 2 if crop_h > h else 0
            right_pad = (crop_w - w + 1) // 2 if crop_w > w else 0
            pixels = np.pad(pixels, ((top_pad, bottom_pad), (left_pad, right_pad), (0, 0)))
            h, w = pixels.shape[:2]
        # Python's round() halves to even, as torchvision's int(round(...)) does.
        top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
        return pixels[top : top + crop_h, left : left + crop_w]
    if rounding != "floor":
        raise ValueError(f"center_crop rounding={rounding!r} is not 'floor' or 'round'")
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, h), max(crop_w, w)
    top_pad, left_pad = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded = np.zeros((new_h, new_w) + pixels.shape[2:], pixels.dtype)
    padded[top_pad : top_pad + h, left_pad : left_pad + w] = pixels
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


def rescale_normalize(
    pixels: np.ndarray,
    *,
    rescale: float | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    convention: str = "hf",
) -> np.ndarray:
    """uint8 [H, W, C] -> float32: x * rescale, then (x - mean) / std, in the reference's dtypes.

    Args:
      pixels: uint8 [H, W, C].
      rescale: factor (1/255), or None to skip.
      mean: per-channel mean, or None (with std) to skip normalization.
      std: per-channel standard deviation.
      convention: "hf" rescales in float64 and rounds to float32 before normalizing in float32
        (transformers' `rescale` / `normalize`); "torchvision" divides by 255 in float32
        (`ToTensor`) before `Normalize`.
    """
    if convention == "torchvision":
        x = pixels.astype(np.float32) / np.float32(255.0)
    elif convention == "hf":
        x = pixels
        if rescale is not None:
            x = (pixels.astype(np.float64) * rescale).astype(np.float32)
    else:
        raise ValueError(
            f"rescale_normalize convention={convention!r} is not 'hf' or 'torchvision'"
        )
    x = x.astype(np.float32)
    if mean is not None and std is not None:
        channels = x.shape[-1]
        mean_a = np.broadcast_to(np.asarray(mean, np.float32), (channels,))
        std_a = np.broadcast_to(np.asarray(std, np.float32), (channels,))
        x = (x - mean_a) / std_a
    return x


# -- pipelines ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImagePreprocessor:
    """One reference preprocessing pipeline; call it on an image.

    Attributes:
      resize_mode: None (no resize), "exact" (to `size` = (height, width)), "shortest" (shorter
        side to `size[0]`, longer side truncated, capped at `longest` if given) or "bounded"
        (DETR's shortest/longest edge rule, see `bounded_aspect_size`).
      size: (height, width) for "exact"; (shortest, shortest) otherwise.
      longest: the longest-edge bound of "shortest" / "bounded".
      resample: PIL filter code.
      crop: (height, width) of the center crop, or None.
      crop_rounding: "floor" (HF) or "round" (torchvision).
      rescale: the rescale factor (HF), None to skip.
      mean: normalization mean, None to skip normalization.
      std: normalization std.
      convention: "hf" or "torchvision" dtypes, see `rescale_normalize`.
      pad_to: (height, width) to zero-pad to at the bottom/right (DETR's pad_size); None with
        `pixel_mask` pads nothing, as a batch of one needs none.
      pixel_mask: also return "pixel_mask".
      alpha_on_white: how transparency becomes RGB, see `load_image`.
      source: what the settings came from, for repr and messages.
    """

    resize_mode: str | None = "exact"
    size: tuple[int, int] = (224, 224)
    longest: int | None = None
    resample: int = int(Image.Resampling.BILINEAR)
    crop: tuple[int, int] | None = None
    crop_rounding: str = "floor"
    rescale: float | None = 1 / 255
    mean: tuple[float, ...] | None = IMAGENET_STANDARD_MEAN
    std: tuple[float, ...] | None = IMAGENET_STANDARD_STD
    convention: str = "hf"
    pad_to: tuple[int, int] | None = None
    pixel_mask: bool = False
    alpha_on_white: bool = True
    source: str = ""

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step, for an input of this size."""
        if self.resize_mode == "exact":
            return self.size
        if self.resize_mode == "shortest":
            return shortest_edge_size(height, width, self.size[0], self.longest)
        if self.resize_mode == "bounded":
            assert self.longest is not None
            return bounded_aspect_size(height, width, self.size[0], self.longest)
        return height, width

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the "image" for an input of this size, before any padding."""
        return self.crop if self.crop is not None else self.resized_size(height, width)

    def geometry(self, image: Any) -> np.ndarray:
        """The resized and cropped image, uint8 [H, W, 3], before rescaling (for display).

        Raises:
          ImageError: an unreadable image, or one so elongated that a side resizes to nothing.
        """
        pil = load_image(image, alpha_on_white=self.alpha_on_white)
        if self.resize_mode is not None:
            size = self.resized_size(pil.height, pil.width)
            if min(size) < 1:
                raise ImageError(
                    f"a {pil.width}x{pil.height} image would be resized to {size[1]}x{size[0]} "
                    "by this checkpoint's preprocessing; crop it to a less elongated shape"
                )
            pil = resize(pil, size, self.resample)
        pixels = np.asarray(pil)
        if self.crop is not None:
            pixels = center_crop(pixels, self.crop, self.crop_rounding)
        return pixels

    def __call__(self, image: Any) -> dict[str, np.ndarray]:
        """{"image": float32 [1, H, W, 3]} (and "pixel_mask" bool [1, H, W]) for one image."""
        x = rescale_normalize(
            self.geometry(image),
            rescale=self.rescale,
            mean=self.mean,
            std=self.std,
            convention=self.convention,
        )
        out: dict[str, np.ndarray] = {}
        if self.pixel_mask:
            h, w = x.shape[:2]
            ph, pw = self.pad_to or (h, w)
            if ph < h or pw < w:
                raise ImageError(
                    f"image resized to {h}x{w} exceeds the processor's pad_size {ph}x{pw}; "
                    "raise pad_size in preprocessor_config.json"
                )
            mask = np.zeros((ph, pw), bool)
            mask[:h, :w] = True
            x = np.pad(x, ((0, ph - h), (0, pw - w), (0, 0)))
            out["pixel_mask"] = mask[None]
        out["image"] = x[None]
        return out

    def batch(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
        """The inputs of several images as one batch: {"image": float32 [B, H, W, 3]} (and
        "pixel_mask" bool [B, H, W]).

        A padding processor (DETR) pads every image at the bottom and right to the largest height
        and width of the batch (or to `pad_to`), as the reference processor pads a batch; others
        must produce one size for every image.

        Raises:
          ImageError: an unreadable image, or images of different output sizes without padding.
        """
        outs = []
        for i, image in enumerate(images):
            try:
                outs.append(self(image))
            except ImageError as e:
                if len(images) == 1:
                    raise
                raise ImageError(f"image {i + 1} of {len(images)}: {e}") from None
        assert outs, "batch() needs at least one image"
        if self.pixel_mask:
            height = max(o["image"].shape[1] for o in outs)
            width = max(o["image"].shape[2] for o in outs)
            for o in outs:
                pad = ((0, 0), (0, height - o["image"].shape[1]), (0, width - o["image"].shape[2]))
                o["image"] = np.pad(o["image"], (*pad, (0, 0)))
                o["pixel_mask"] = np.pad(o["pixel_mask"], pad)
        shapes = sorted({o["image"].shape[1:3] for o in outs})
        if len(shapes) > 1:
            raise ImageError(
                f"the images preprocess to different sizes {shapes} (this checkpoint's "
                "preprocessing neither crops nor pads); predict them one at a time"
            )
        return {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}


# -- Hugging Face preprocessor_config.json --------------------------------------------------------

# Class defaults of the PIL-backend processors (what a key missing from the JSON means).
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit": dict(
        do_resize=True,
        size={"height": 224, "width": 224},
        resample=2,
        do_center_crop=False,
        crop_size=None,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_STANDARD_MEAN,
        image_std=IMAGENET_STANDARD_STD,
        do_pad=False,
        default_to_square=True,
    ),
    "clip": dict(
        do_resize=True,
        size={"shortest_edge": 224},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        do_pad=False,
        default_to_square=False,
    ),
    "detr": dict(
        do_resize=True,
        size={"shortest_edge": 800, "longest_edge": 1333},
        resample=2,
        do_center_crop=False,
        crop_size=None,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
        do_pad=True,
        default_to_square=False,
    ),
}

_HF_PROCESSOR_FAMILIES = {
    "ViTImageProcessor": "vit",
    "ViTFeatureExtractor": "vit",
    "CLIPImageProcessor": "clip",
    "CLIPFeatureExtractor": "clip",
    "DetrImageProcessor": "detr",
    "DetrFeatureExtractor": "detr",
}


def hf_processor_family(config: Mapping[str, Any], model_type: str | None = None) -> str:
    """ "vit", "clip" or "detr": the processor class a preprocessor_config.json names, else the
    model type of the checkpoint (its config.json "model_type")."""
    name = config.get("image_processor_type") or config.get("feature_extractor_type")
    if name:
        base = name.removesuffix("Fast").removesuffix("Pil")
        if base in _HF_PROCESSOR_FAMILIES:
            return _HF_PROCESSOR_FAMILIES[base]
        raise PreprocessConfigError(
            f"preprocessor_config.json names the processor {name!r}; supported: "
            f"{sorted(set(_HF_PROCESSOR_FAMILIES))}"
        )
    if model_type in _HF_DEFAULTS:
        return model_type
    raise PreprocessConfigError(
        "preprocessor_config.json names no image_processor_type and the model type "
        f'{model_type!r} is not one of {sorted(_HF_DEFAULTS)}; add "image_processor_type"'
    )


def _size_dict(value: Any, *, default_to_square: bool, max_size: int | None = None) -> dict:
    """transformers' `get_size_dict`: int / [h, w] / dict -> a dict of edge names."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    if isinstance(value, int) and default_to_square:
        return {"height": value, "width": value}
    if isinstance(value, int):
        return {"shortest_edge": value, **({"longest_edge": max_size} if max_size else {})}
    if isinstance(value, Sequence) and len(value) == 2:
        return {"height": int(value[0]), "width": int(value[1])}
    raise PreprocessConfigError(
        f"preprocessor_config.json size {value!r} is not an int, [height, width] or a dict"
    )


def from_hf_processor_config(
    config: Mapping[str, Any], model_type: str | None = None
) -> ImagePreprocessor:
    """The preprocessing of a Hugging Face `preprocessor_config.json` (ViT, CLIP or DETR).

    Keys missing from `config` take the processor class's defaults; legacy forms (an int `size`,
    DETR's `max_size`, `pad_and_return_pixel_mask`) are read as transformers reads them.

    Args:
      config: the parsed preprocessor_config.json ({} for the class defaults).
      model_type: the checkpoint's config.json "model_type", used when `config` names no class.

    Returns:
      an `ImagePreprocessor`; calling it gives {"image": float32 [1, H, W, 3]} and, for DETR,
      "pixel_mask" bool [1, H, W].

    Raises:
      PreprocessConfigError: an unknown processor class or a size form it cannot express.
    """
    family = hf_processor_family(config, model_type)
    settings = dict(_HF_DEFAULTS[family])
    config = dict(config)
    if family == "detr":
        if "pad_and_return_pixel_mask" in config and "do_pad" not in config:
            config["do_pad"] = config["pad_and_return_pixel_mask"]
        if config.get("size") is not None:
            max_size = config.get("max_size", 1333)
            config["size"] = _size_dict(config["size"], default_to_square=False, max_size=max_size)
        elif config.get("max_size") is not None:
            # Without a size the class default keeps its shortest edge, bounded by max_size.
            config["size"] = {"shortest_edge": 800, "longest_edge": config["max_size"]}
    settings.update({k: v for k, v in config.items() if k in settings and v is not None})
    square = bool(settings["default_to_square"])

    resize_mode, size, longest = None, (0, 0), None
    if settings["do_resize"]:
        size_dict = _size_dict(settings["size"], default_to_square=square)
        keys = set(size_dict)
        if keys == {"height", "width"}:
            resize_mode, size = "exact", (int(size_dict["height"]), int(size_dict["width"]))
        elif keys == {"shortest_edge", "longest_edge"}:
            resize_mode = "bounded"
            size = (int(size_dict["shortest_edge"]),) * 2
            longest = int(size_dict["longest_edge"])
        elif keys == {"shortest_edge"}:
            resize_mode, size = "shortest", (int(size_dict["shortest_edge"]),) * 2
        else:
            raise PreprocessConfigError(
                f"preprocessor_config.json size {size_dict} is not supported; use "
                "{'height', 'width'}, {'shortest_edge'} or {'shortest_edge', 'longest_edge'}"
            )
    crop = None
    if settings["do_center_crop"]:
        crop_dict = _size_dict(settings["crop_size"], default_to_square=True)
        if set(crop_dict) != {"height", "width"}:
            raise PreprocessConfigError(
                f"preprocessor_config.json crop_size {crop_dict} needs 'height' and 'width'"
            )
        crop = (int(crop_dict["height"]), int(crop_dict["width"]))
    pad_to = None
    if settings["do_pad"] and config.get("pad_size") is not None:
        pad = _size_dict(config["pad_size"], default_to_square=True)
        pad_to = (int(pad["height"]), int(pad["width"]))
    return ImagePreprocessor(
        resize_mode=resize_mode,
        size=size,
        longest=longest,
        resample=_hf_resample(settings["resample"]),
        crop=crop,
        crop_rounding="floor",
        rescale=float(settings["rescale_factor"]) if settings["do_rescale"] else None,
        mean=tuple(float(m) for m in settings["image_mean"]) if settings["do_normalize"] else None,
        std=tuple(float(s) for s in settings["image_std"]) if settings["do_normalize"] else None,
        convention="hf",
        pad_to=pad_to,
        pixel_mask=bool(settings["do_pad"]),
        alpha_on_white=True,
        source=f"{family} preprocessor_config.json",
    )


def _hf_resample(value: Any) -> int:
    if isinstance(value, int) and value in RESAMPLE_CODES:
        return value
    if isinstance(value, str) and value.lower() in RESAMPLE_NAMES:
        return int(RESAMPLE_NAMES[value.lower()])
    raise PreprocessConfigError(
        f"preprocessor_config.json resample {value!r} is not a PIL filter code 0-5"
    )


# -- timm pretrained_cfg ------------------------------------------------------------------------


def from_timm_pretrained_cfg(config: Mapping[str, Any]) -> ImagePreprocessor:
    """timm's evaluation transform for a model's `pretrained_cfg` (the "pretrained_cfg" of a timm
    hub config.json): input_size, interpolation, crop_pct (default 0.875), crop_mode, mean, std.

    Raises:
      PreprocessConfigError: a crop mode or input size timm's eval transform would treat in a way
        this module does not reproduce ("border" mode, non-square "center" inputs).
    """
    input_size = config.get("input_size", (3, 224, 224))
    if len(input_size) != 3:
        raise PreprocessConfigError(f"timm input_size {input_size} is not [channels, H, W]")
    height, width = int(input_size[1]), int(input_size[2])
    crop_pct = config.get("crop_pct") or 0.875
    crop_mode = config.get("crop_mode") or "center"
    interpolation = str(config.get("interpolation", "bilinear")).lower()
    if interpolation not in RESAMPLE_NAMES:
        raise PreprocessConfigError(
            f"timm interpolation {interpolation!r} is not one of {sorted(RESAMPLE_NAMES)}"
        )
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    common = dict(
        resample=int(RESAMPLE_NAMES[interpolation]),
        crop=(height, width),
        crop_rounding="round",
        rescale=None,
        mean=tuple(float(m) for m in config.get("mean", IMAGENET_DEFAULT_MEAN)),
        std=tuple(float(s) for s in config.get("std", IMAGENET_DEFAULT_STD)),
        convention="torchvision",
        alpha_on_white=False,
        source="timm pretrained_cfg",
    )
    if crop_mode == "squash":
        return ImagePreprocessor(resize_mode="exact", size=scale, **common)
    if crop_mode == "center" and scale[0] == scale[1]:
        return ImagePreprocessor(resize_mode="shortest", size=scale, **common)
    raise PreprocessConfigError(
        f"timm crop_mode {crop_mode!r} with input size {height}x{width} is not supported; "
        "supported: 'center' with a square input size, or 'squash'"
    )
