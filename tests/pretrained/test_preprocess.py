"""Our preprocessing equals the reference processors' output (within 1e-6) for the same image and
settings: transformers' PIL-backend ViT, CLIP and DETR processors and timm's eval transform."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attn_jax.pretrained import preprocess

TOL = 1e-6


@pytest.fixture(scope="module")
def images(china_image, sample_image_paths):
    """Landscape, portrait (odd sides), small, grey and transparent test images."""
    with Image.open(sample_image_paths["flower"]) as flower:
        flower = flower.convert("RGB")
    portrait = china_image.transpose(Image.Transpose.ROTATE_90).crop((0, 0, 427, 601))
    rgba = flower.resize((151, 97)).convert("RGBA")
    alpha = np.linspace(0, 255, 151 * 97).astype(np.uint8).reshape(97, 151)
    rgba.putalpha(Image.fromarray(alpha))
    return {
        "china": china_image,
        "portrait": portrait,
        "small": flower.resize((97, 61)),
        "grey": china_image.convert("L"),
        "rgba": rgba,
    }


def _hf(name: str):
    transformers = pytest.importorskip("transformers")
    return getattr(transformers, name)


def _hf_reference(cls_name: str, config: dict, image) -> dict[str, np.ndarray]:
    processor = _hf(cls_name).from_dict(dict(config))
    out = processor(image, return_tensors="np")
    result = {"image": np.transpose(out["pixel_values"], (0, 2, 3, 1))}
    if "pixel_mask" in out:
        result["pixel_mask"] = out["pixel_mask"].astype(bool)
    return result


def _assert_same(ours: dict, reference: dict) -> None:
    assert set(ours) == set(reference)
    assert ours["image"].dtype == np.float32
    assert ours["image"].shape == reference["image"].shape
    np.testing.assert_allclose(ours["image"], reference["image"], atol=TOL, rtol=0)
    if "pixel_mask" in reference:
        np.testing.assert_array_equal(ours["pixel_mask"], reference["pixel_mask"])


HF_CASES = {
    # The hub's google/vit-base-patch16-224 file (legacy int size).
    "vit_hub": (
        "ViTImageProcessorPil",
        {
            "do_normalize": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "resample": 2,
            "size": 224,
            "feature_extractor_type": "ViTFeatureExtractor",
        },
    ),
    "vit_custom": (
        "ViTImageProcessorPil",
        {
            "image_processor_type": "ViTImageProcessor",
            "size": {"height": 160, "width": 200},
            "resample": 3,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        },
    ),
    # The hub's openai/clip-vit-base-patch32 file (legacy int size and crop_size).
    "clip_hub": (
        "CLIPImageProcessorPil",
        {
            "crop_size": 224,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": 224,
        },
    ),
    # A crop larger than the resized image: HF pads with the odd pixel before the image.
    "clip_pad": (
        "CLIPImageProcessorPil",
        {
            "image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": 60},
            "crop_size": {"height": 75, "width": 99},
        },
    ),
    "detr_default": ("DetrImageProcessorPil", {"image_processor_type": "DetrImageProcessor"}),
    # The legacy facebook/detr-resnet-50 form: int size plus max_size; the bound binds here.
    "detr_legacy_bounded": (
        "DetrImageProcessorPil",
        {
            "feature_extractor_type": "DetrFeatureExtractor",
            "size": 200,
            "max_size": 250,
            "format": "coco_detection",
        },
    ),
    "detr_pad_size": (
        "DetrImageProcessorPil",
        {
            "image_processor_type": "DetrImageProcessor",
            "size": {"shortest_edge": 120, "longest_edge": 180},
            "pad_size": {"height": 190, "width": 190},
        },
    ),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
@pytest.mark.parametrize("image_name", ["china", "portrait", "small"])
def test_hf_processors(case, image_name, images):
    cls_name, config = HF_CASES[case]
    image = images[image_name]
    ours = preprocess.from_hf_processor_config(config)(image)
    _assert_same(ours, _hf_reference(cls_name, config, image))


@pytest.mark.parametrize("image_name", ["grey", "rgba"])
def test_hf_processor_color_conversion(image_name, images):
    cls_name, config = HF_CASES["clip_hub"]
    ours = preprocess.from_hf_processor_config(config)(images[image_name])
    _assert_same(ours, _hf_reference(cls_name, config, images[image_name]))


def test_inputs_as_path_array_and_pil_agree(china_path, china_image):
    pre = preprocess.from_hf_processor_config({}, model_type="vit")
    by_pil = pre(china_image)["image"]
    np.testing.assert_array_equal(pre(china_path)["image"], by_pil)
    np.testing.assert_array_equal(pre(np.asarray(china_image))["image"], by_pil)
    assert pre.geometry(china_image).shape == (224, 224, 3)


@pytest.fixture(scope="module")
def timm_transforms():
    pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    def make(pretrained_cfg: dict):
        return create_transform(**resolve_data_config(pretrained_cfg=pretrained_cfg))

    return make


TIMM_CASES = {
    # swin_tiny_patch4_window7_224.ms_in1k
    "swin_t": dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        crop_pct=0.9,
        crop_mode="center",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    ),
    # Odd crop margins (torchvision rounds them half to even) and a bilinear filter.
    "odd_margins": dict(
        input_size=(3, 192, 192),
        interpolation="bilinear",
        crop_pct=0.98,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
    "squash": dict(
        input_size=(3, 128, 160),
        interpolation="bicubic",
        crop_pct=1.0,
        crop_mode="squash",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    ),
}


@pytest.mark.parametrize("case", sorted(TIMM_CASES))
@pytest.mark.parametrize("image_name", ["china", "portrait", "small"])
def test_timm_eval_transform(case, image_name, images, timm_transforms):
    cfg = TIMM_CASES[case]
    image = images[image_name]
    reference = timm_transforms(cfg)(image).numpy().transpose(1, 2, 0)[None]
    ours = preprocess.from_timm_pretrained_cfg(cfg)(image)
    _assert_same(ours, {"image": reference})


def test_center_crop_conventions_differ_on_odd_margins():
    pixels = np.arange(5 * 5, dtype=np.uint8).reshape(5, 5, 1)
    # (5 - 2) / 2 = 1.5: HF floors to 1, torchvision rounds half to even (2).
    assert preprocess.center_crop(pixels, (2, 2), "floor")[0, 0, 0] == 6
    assert preprocess.center_crop(pixels, (2, 2), "round")[0, 0, 0] == 12
    # Padding a 1-pixel image to 4: HF puts 2 zeros before it, torchvision 1.
    one = np.full((1, 1, 1), 9, np.uint8)
    assert preprocess.center_crop(one, (4, 4), "floor")[:, :, 0].nonzero() == ([2], [2])
    assert preprocess.center_crop(one, (4, 4), "round")[:, :, 0].nonzero() == ([1], [1])


def test_errors_are_one_line(tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a photograph")
    with pytest.raises(preprocess.ImageError, match="not an image"):
        preprocess.load_image(not_image)
    with pytest.raises(preprocess.ImageError, match="does not exist"):
        preprocess.load_image(tmp_path / "missing.png")
    with pytest.raises(preprocess.ImageError, match="uint8"):
        preprocess.load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(preprocess.PreprocessConfigError, match="SamImageProcessor"):
        preprocess.from_hf_processor_config({"image_processor_type": "SamImageProcessor"})
    with pytest.raises(preprocess.PreprocessConfigError, match="crop_mode"):
        preprocess.from_timm_pretrained_cfg({"input_size": (3, 224, 224), "crop_mode": "border"})
