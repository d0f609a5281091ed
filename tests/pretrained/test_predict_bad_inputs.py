"""`launch.py predict` on every kind of bad input: each either works as the reference does or stops
with one `error: ...` line on stderr and exit code 2, no traceback.

Images: not an image, truncated JPEG and PNG, missing, a directory, beyond PIL's decompression-bomb
limit (a PNG header claiming a huge size, and a small image under a lowered limit); the PIL modes
a user meets (L, P, P with a transparent index, RGBA, LA, I;16, CMYK) and a 1x1 image, converted
as transformers' processors convert them (compared with their output). Weights: the wrong kind
for the command, a truncated or foreign safetensors file, tensors that do not match config.json
(shapes, names), no weights, a config.json that is not JSON or not an object, a CLIP checkpoint
without a tokenizer, shards. bfloat16 and float16 safetensors load, widened to float32.

The CLI runs in-process through `launch.main` (one subprocess checks a real process's stderr); the
image errors stop before any conversion, so only the weights cases convert the small ViT of
conftest.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attn_jax.pretrained import load
from attn_jax.pretrained.checkpoint_files import PretrainedError, read_state_dict
from attn_jax.pretrained.predict import predict_classify
from attn_jax.pretrained.preprocess import (
    ImageError,
    from_hf_processor_config,
    from_timm_pretrained_cfg,
    load_image,
)
from attn_jax.pretrained.vit import canonical_names

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


@pytest.fixture(scope="module")
def launch():
    spec = importlib.util.spec_from_file_location("launch_under_test", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(launch, capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = launch.main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def _assert_one_line_error(code: int, out: list[str], err: list[str], *words: str) -> None:
    assert code == 2 and out == [], (code, out, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], (word, err[0])


def _random_rgb(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_header(width: int, height: int) -> bytes:
    """A PNG with only its IHDR (8-bit RGB of the given size) and IEND: PIL reads the size from
    it without decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# -- images ----------------------------------------------------------------------------------------


def _not_an_image(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "notes.jpg"
    path.write_text("no photograph here")
    return path


def _empty(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _truncated_jpeg(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "cut.jpg"
    _random_rgb(64, 80).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _truncated_png(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "cut.png"
    _random_rgb(64, 80).save(path, "PNG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _missing(tmp_path: Path, monkeypatch) -> Path:
    return tmp_path / "none.jpg"


def _directory(tmp_path: Path, monkeypatch) -> Path:
    return tmp_path


def _huge_header(tmp_path: Path, monkeypatch) -> Path:
    # 10^10 pixels: beyond twice the limit, where PIL raises rather than warns.
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(100_000, 100_000))
    return path


def _over_lowered_limit(tmp_path: Path, monkeypatch) -> Path:
    # Between the limit and twice it, where PIL only warns.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "small.png"
    _random_rgb(30, 40).save(path)
    return path


IMAGE_CASES = {
    "not_an_image": (_not_an_image, ["notes.jpg", "not an image file"]),
    "empty_file": (_empty, ["empty.png", "not an image file"]),
    "truncated_jpeg": (_truncated_jpeg, ["cut.jpg", "truncated or corrupt", "JPEG"]),
    "truncated_png": (_truncated_png, ["cut.png", "truncated or corrupt", "PNG"]),
    "missing": (_missing, ["none.jpg", "does not exist"]),
    "directory": (_directory, ["is a directory"]),
    "huge_header": (
        _huge_header,
        ["10,000,000,000 pixels", "decompression-bomb limit of", "MAX_IMAGE_PIXELS"],
    ),
    "over_lowered_limit": (
        _over_lowered_limit,
        ["40x30 = 1,200 pixels", "limit of 1,000 pixels", "downscale"],
    ),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image_is_one_line(case, launch, capsys, small_vit, tmp_path, monkeypatch):
    make, words = IMAGE_CASES[case]
    image = make(tmp_path, monkeypatch)
    _, weights = small_vit
    with warnings.catch_warnings():
        # PIL's own decompression-bomb warning must not reach the user either.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        code, out, err = _main(
            launch, capsys, "classify", "--weights", str(weights), "--image", str(image)
        )
    _assert_one_line_error(code, out, err, *words)


def test_real_process_prints_only_the_error_line(small_vit, tmp_path):
    """In a fresh process nothing else reaches stderr: no traceback, no PIL warning. The image
    (10^8 pixels) is in the band where PIL warns instead of raising."""
    _, weights = small_vit
    image = tmp_path / "large.png"
    image.write_bytes(_png_header(10_000, 10_000))
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 <= 2 * Image.MAX_IMAGE_PIXELS
    command = [sys.executable, str(ROOT / "launch.py"), "predict", "classify"]
    command += ["--weights", str(weights), "--image", str(image)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"error: {image} is 10000x10000 = 100,000,000 pixels, beyond PIL's decompression-bomb "
        f"limit of {Image.MAX_IMAGE_PIXELS:,} pixels (PIL.Image.MAX_IMAGE_PIXELS); downscale it "
        "first, or raise that limit in your own script if you trust the file"
    ]


def _mode_image(mode: str) -> tuple[Image.Image, str]:
    """(an image of the PIL mode a file of that kind decodes to, the format to save it in)."""
    rgb = _random_rgb(23, 31, seed=3)
    alpha = Image.fromarray(np.linspace(0, 255, 23 * 31).astype(np.uint8).reshape(23, 31))
    if mode == "L":
        return rgb.convert("L"), "PNG"
    if mode in ("P", "P_transparent"):
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        if mode == "P_transparent":
            image.info["transparency"] = 3
        return image, "PNG"
    if mode in ("RGBA", "LA"):
        image = rgb if mode == "RGBA" else rgb.convert("L")
        image = image.copy()
        image.putalpha(alpha)
        return image, "PNG"
    if mode == "I;16":
        # Levels beyond 255 too: PIL's convert (and so the references) clips them.
        rng = np.random.default_rng(4)
        return Image.fromarray(rng.integers(0, 700, (23, 31)).astype(np.uint16)), "PNG"
    if mode == "CMYK":
        return rgb.convert("CMYK"), "JPEG"
    assert mode == "1x1", mode
    return _random_rgb(1, 1, seed=5), "PNG"


# The processors with small sizes; ViT and DETR convert to RGB only with do_convert_rgb=True
# (without it they reject any non-RGB image), CLIP does by default.
HF_PROCESSORS = {
    "vit": ("ViTImageProcessorPil", {"size": {"height": 20, "width": 24}, "do_convert_rgb": True}),
    "clip": ("CLIPImageProcessorPil", {"size": 18, "crop_size": 16}),
    "detr": (
        "DetrImageProcessorPil",
        {"size": {"shortest_edge": 16, "longest_edge": 40}, "do_convert_rgb": True},
    ),
}
TIMM_CFG = dict(input_size=(3, 16, 16), interpolation="bicubic", crop_pct=0.9)


@pytest.mark.parametrize("mode", ["L", "P", "P_transparent", "RGBA", "LA", "I;16", "CMYK", "1x1"])
def test_image_modes_convert_as_the_references_do(mode, tmp_path):
    image, file_format = _mode_image(mode)
    path = tmp_path / f"image.{file_format.lower()}"
    image.save(path, file_format)
    with Image.open(path) as decoded:
        decoded.load()
        reference_input = decoded.copy()
    assert reference_input.mode == (mode.split("_")[0] if mode != "1x1" else "RGB")
    for family, (cls_name, config) in HF_PROCESSORS.items():
        processor = getattr(transformers, cls_name)(**config)
        expected = processor(reference_input, return_tensors="np")["pixel_values"]
        ours = from_hf_processor_config(config, model_type=family)(path)["image"]
        np.testing.assert_allclose(
            ours, expected.transpose(0, 2, 3, 1), atol=1e-6, rtol=0, err_msg=family
        )
    # timm's loader: PIL's convert("RGB"), transparency dropped rather than put on white.
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config(pretrained_cfg=TIMM_CFG))
    expected = transform(reference_input.convert("RGB")).numpy().transpose(1, 2, 0)[None]
    ours = from_timm_pretrained_cfg(TIMM_CFG)(path)["image"]
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


def test_transparency_differs_between_the_conventions(tmp_path):
    """The case above cannot pass by ignoring alpha: over white and dropped differ."""
    image, _ = _mode_image("RGBA")
    on_white = np.asarray(load_image(image, alpha_on_white=True), np.int16)
    dropped = np.asarray(load_image(image, alpha_on_white=False), np.int16)
    assert np.abs(on_white - dropped).max() > 100


def test_elongated_image_that_resizes_to_nothing_is_one_line(tmp_path):
    # DETR's rule bounds the long side: 1 x 5000 becomes 0 x 40.
    pre = from_hf_processor_config({"size": {"shortest_edge": 16, "longest_edge": 40}}, "detr")
    with pytest.raises(ImageError, match="less elongated") as info:
        pre(np.zeros((1, 5000, 3), np.uint8))
    assert "\n" not in str(info.value)


# -- weights ---------------------------------------------------------------------------------------


def _copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        shutil.copy(source / name, target / name)
    return target


def _save_tensors(directory: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(directory / "model.safetensors"))


def _wrong_kind(vit: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "detr"
    transformers.DetrConfig(use_timm_backbone=True, use_pretrained_backbone=False).save_pretrained(
        directory
    )
    return directory


def _truncated_safetensors(vit: Path, tmp_path: Path) -> Path:
    directory = _copy_checkpoint(vit, tmp_path / "cut")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return directory


def _html_as_safetensors(vit: Path, tmp_path: Path) -> Path:
    directory = _copy_checkpoint(vit, tmp_path / "html")
    (directory / "model.safetensors").write_text("<!DOCTYPE html><html>Not found</html>")
    return directory


def _wider_config(vit: Path, tmp_path: Path) -> Path:
    # Every matrix then has the wrong shape, the query/key/value ones included, which the
    # converter reshapes per head: named, not a numpy reshape error.
    directory = _copy_checkpoint(vit, tmp_path / "wider")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    return directory


def _renamed_tensor(vit: Path, tmp_path: Path) -> Path:
    directory = _copy_checkpoint(vit, tmp_path / "renamed")
    tensors = read_state_dict(directory)
    tensors["head.weight"] = tensors.pop("classifier.weight")
    _save_tensors(directory, tensors)
    return directory


def _no_weights(vit: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "config_only"
    directory.mkdir()
    shutil.copy(vit / "config.json", directory / "config.json")
    return directory


def _config_not_json(vit: Path, tmp_path: Path) -> Path:
    directory = _copy_checkpoint(vit, tmp_path / "bad_json")
    (directory / "config.json").write_text('{"model_type": "vit",')
    return directory


def _config_not_object(vit: Path, tmp_path: Path) -> Path:
    directory = _copy_checkpoint(vit, tmp_path / "list_json")
    (directory / "config.json").write_text("[1, 2]")
    return directory


def _missing_directory(vit: Path, tmp_path: Path) -> Path:
    return tmp_path / "never_downloaded"


def _missing_shard(vit: Path, tmp_path: Path) -> Path:
    directory = _no_weights(vit, tmp_path)
    index = {"weight_map": {"classifier.weight": "model-00002-of-00002.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


WEIGHTS_CASES = {
    "wrong_kind": (_wrong_kind, ["holds a detect model", "use `predict detect`"]),
    "truncated_safetensors": (_truncated_safetensors, ["model.safetensors is truncated"]),
    "html_as_safetensors": (_html_as_safetensors, ["not a complete safetensors file"]),
    "tensor_shapes": (
        _wider_config,
        ["does not match the model its config.json describes", "wrong shape"],
    ),
    "tensor_names": (
        _renamed_tensor,
        ["missing 1: classifier.weight", "unused 1: head.weight"],
    ),
    "no_weights": (_no_weights, ["no weights in", "model.safetensors"]),
    "config_not_json": (_config_not_json, ["config.json is not valid JSON"]),
    "config_not_object": (_config_not_object, ["config.json holds a JSON list"]),
    "missing_directory": (_missing_directory, ["never_downloaded", "does not exist"]),
    "missing_shard": (_missing_shard, ["1 are not in", "model-00002-of-00002.safetensors"]),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS_CASES))
def test_bad_weights_are_one_line(case, launch, capsys, small_vit, china_path, tmp_path):
    make, words = WEIGHTS_CASES[case]
    _, vit = small_vit
    weights = make(vit, tmp_path)
    code, out, err = _main(
        launch, capsys, "classify", "--weights", str(weights), "--image", str(china_path)
    )
    _assert_one_line_error(code, out, err, *words)


@pytest.fixture(scope="module")
def clip_without_tokenizer(tmp_path_factory, randomize):
    """A tiny random CLIPModel directory with its processor but no tokenizer files."""
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=40,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        projection_dim=8,
    )
    directory = tmp_path_factory.mktemp("clip_no_tokenizer")
    randomize(transformers.CLIPModel(config), seed=2).save_pretrained(directory)
    transformers.CLIPImageProcessorPil(size=16, crop_size=16).save_pretrained(directory)
    return directory


def test_clip_without_tokenizer_is_one_line(launch, capsys, clip_without_tokenizer, china_path):
    code, out, err = _main(
        launch,
        capsys,
        "rank-captions",
        "--weights",
        str(clip_without_tokenizer),
        "--image",
        str(china_path),
        "--caption",
        "a temple",
    )
    _assert_one_line_error(code, out, err, "no tokenizer in", "tokenizer.json", "download it")


# -- half-precision and sharded weights ------------------------------------------------------------


def _safetensors_dtypes(path: Path) -> set[str]:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("dtype, name", [("bfloat16", "BF16"), ("float16", "F16")])
def test_half_precision_safetensors_match_the_reference(
    dtype, name, small_vit, china_image, tmp_path
):
    """Saved in half precision, converted to float32: the logits are the float32 reference's on
    the same rounded weights, to float32 accuracy (the rounding itself moves them more)."""
    model, vit = small_vit
    low = copy.deepcopy(model).to(getattr(torch, dtype))
    low.save_pretrained(tmp_path)
    shutil.copy(vit / "preprocessor_config.json", tmp_path / "preprocessor_config.json")
    assert _safetensors_dtypes(tmp_path / "model.safetensors") == {name}

    tensors = read_state_dict(tmp_path)
    rounded = canonical_names({k: v.float().numpy() for k, v in low.state_dict().items()})
    assert all(tensors[k].dtype == np.float32 for k in tensors)
    for key, value in tensors.items():
        np.testing.assert_array_equal(value, rounded[key], err_msg=key)

    processor = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})
    pixels = processor(china_image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = low.float()(pixel_values=pixels).logits.numpy()[0]
        full = model(pixel_values=pixels).logits.numpy()[0]
    logits = np.asarray(predict_classify(load(tmp_path), china_image)["logits"])
    np.testing.assert_allclose(logits, reference, atol=TOL, rtol=0)
    # The tolerance is tight enough to see the rounding (~1e-4 in float16, ~1e-3 in bfloat16).
    assert np.abs(full - reference).max() > 5 * TOL


def test_sharded_safetensors_load_as_one_file(small_vit, tmp_path):
    _, vit = small_vit
    tensors = read_state_dict(vit)
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    from safetensors.numpy import save_file

    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({k: tensors[k] for k in shard_names}, str(tmp_path / shard))
        weight_map.update(dict.fromkeys(shard_names, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(vit / "config.json", tmp_path / "config.json")
    sharded = read_state_dict(tmp_path)
    assert sharded.keys() == tensors.keys()
    for key, value in tensors.items():
        np.testing.assert_array_equal(sharded[key], value)
    with pytest.raises(PretrainedError, match="shard 'https://host/x.safetensors'"):
        (tmp_path / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"a": "https://host/x.safetensors"}})
        )
        read_state_dict(tmp_path)
