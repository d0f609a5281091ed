"""`launch.py predict` on several images at once: one batch, one result per image, a figure.

Batched results are each image's own: classify equals one-at-a-time runs (within 1e-5) and the
reference model; rank-captions gives the same rows for the batch reversed; detect, whose batch is
padded to its largest image, equals the reference DetrForObjectDetection on the reference
processor's padded batch (test_detr_convert.py compares single runs). The results come in --image
order, and the figures are written.

Small random checkpoints (ViT of conftest.py, DETR with a ResNet-18, CLIP with a letters-only
tokenizer) are built and converted once per module, and the CLI tests reuse those conversions, so
that each shape compiles once (test_predict_cli.py runs the CLI's own loading).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attn_jax.pretrained import load
from attn_jax.pretrained.predict import predict_classify, predict_classify_batch

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


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory, sample_image_paths) -> list[Path]:
    """Three images of different sizes and modes: china.jpg (427 x 640 RGB), a greyscale crop of
    flower.jpg (90 x 150, L) and a single red pixel (1 x 1, RGB)."""
    directory = tmp_path_factory.mktemp("batch_images")
    grey = directory / "flower_grey.png"
    with Image.open(sample_image_paths["flower"]) as flower:
        flower.convert("L").crop((100, 50, 250, 140)).save(grey)
    pixel = directory / "pixel.png"
    Image.new("RGB", (1, 1), (220, 30, 40)).save(pixel)
    return [sample_image_paths["china"], grey, pixel]


@pytest.fixture
def converted_once(monkeypatch):
    """Makes the CLI reuse a module's conversion (and so its compiled functions) of a directory:
    `converted_once(directory, pretrained)`."""
    import attn_jax.pretrained as pretrained_package

    real_load = pretrained_package.load
    cache = {}

    def load_cached(path):
        return cache[str(path)] if str(path) in cache else real_load(path)

    monkeypatch.setattr(pretrained_package, "load", load_cached)
    return lambda directory, pretrained: cache.__setitem__(str(directory), pretrained)


def _figure_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as figure:
        return np.asarray(figure.convert("RGB"))


# -- classify --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit(small_vit):
    """(reference HF model, directory, our conversion)."""
    model, directory = small_vit
    return model, directory, load(directory)


def test_classify_batch_equals_one_at_a_time_and_the_reference(vit, image_paths):
    model, _, pretrained = vit
    batch = predict_classify_batch(pretrained, image_paths, top_k=2)
    assert len(batch) == 3
    processor = transformers.ViTImageProcessorPil(
        size={"height": 32, "width": 32}, do_convert_rgb=True
    )
    for path, result in zip(image_paths, batch, strict=True):
        alone = predict_classify(pretrained, path, top_k=2)
        np.testing.assert_allclose(result["logits"], alone["logits"], atol=TOL, rtol=0)
        assert [p["label"] for p in result["predictions"]] == [
            p["label"] for p in alone["predictions"]
        ]
        with Image.open(path) as image:
            assert result["image_size"] == [image.height, image.width]
            pixels = processor(image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            reference = model(pixel_values=pixels).logits.numpy()[0]
        np.testing.assert_allclose(result["logits"], reference, atol=1e-4, rtol=0)
    # Different images, different outputs: the rows were not mixed up or broadcast.
    logits = np.asarray([r["logits"] for r in batch])
    assert np.abs(logits[0] - logits[1]).max() > 1e-3 and np.abs(logits[1] - logits[2]).max() > 1e-3


def test_cli_classify_three_images_json_and_figure(
    vit, image_paths, launch, capsys, tmp_path, converted_once
):
    _, directory, pretrained = vit
    converted_once(directory, pretrained)
    figure = tmp_path / "figures" / "grid.png"
    args = ["classify", "--weights", str(directory), "--top-k", "2", "--json"]
    for path in image_paths:
        args += ["--image", str(path)]
    code, out, err = _main(launch, capsys, *args, "--out", str(figure))
    assert code == 0, err
    result = json.loads(out[-1])
    assert result["images"] == [str(p) for p in image_paths]
    assert [r["image"] for r in result["results"]] == result["images"]
    expected = predict_classify_batch(pretrained, image_paths, top_k=2)
    for ours, reference in zip(result["results"], expected, strict=True):
        np.testing.assert_allclose(ours["logits"], reference["logits"], atol=TOL, rtol=0)
        assert ours["predictions"] == reference["predictions"]
    assert "predictions" not in result  # the single-image keys belong to one image only
    # Readable lines: each image's name, then its classes indented.
    assert out[0] == image_paths[0].name and out[3] == image_paths[1].name
    assert out[1].startswith("  ") and out[1].split()[-1] == expected[0]["predictions"][0]["label"]
    assert f"wrote {figure}" in out and result["figure"] == str(figure)
    pixels = _figure_pixels(figure)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # three panels side by side
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # photographs, not a blank page


def test_cli_single_image_keeps_its_top_level_keys(
    vit, image_paths, launch, capsys, converted_once
):
    _, directory, pretrained = vit
    converted_once(directory, pretrained)
    code, out, _ = _main(
        launch, capsys, "classify", "--weights", str(directory), "--image", str(image_paths[1])
    )
    assert code == 0 and len(out) == 4 and not out[0].startswith(" ")  # no name header
    code, out, _ = _main(
        launch,
        capsys,
        "classify",
        "--weights",
        str(directory),
        "--image",
        str(image_paths[1]),
        "--json",
    )
    result = json.loads(out[-1])
    assert result["image"] == str(image_paths[1]) and result["image_size"] == [90, 150]
    assert result["results"][0]["predictions"] == result["predictions"]


def test_explain_with_several_images_is_one_line(vit, image_paths, launch, capsys):
    _, directory, _ = vit
    code, out, err = _main(
        launch,
        capsys,
        "classify",
        "--weights",
        str(directory),
        "--image",
        str(image_paths[0]),
        "--image",
        str(image_paths[1]),
        "--explain",
    )
    assert code == 2 and out == [] and len(err) == 1
    assert "--explain explains one image but 2 were given" in err[0]


def test_out_that_is_not_a_figure_is_one_line(vit, image_paths, launch, capsys, tmp_path):
    _, directory, _ = vit
    code, out, err = _main(
        launch,
        capsys,
        "classify",
        "--weights",
        str(directory),
        "--image",
        str(image_paths[0]),
        "--out",
        str(tmp_path / "grid"),
    )
    assert code == 2 and out == [] and len(err) == 1 and "is not a figure file" in err[0]


# -- detect ----------------------------------------------------------------------------------------


DETR_LABELS = {0: "N/A", 1: "red", 2: "grey"}


@pytest.fixture(scope="module")
def detr(tmp_path_factory, image_paths):
    """(reference HF model, reference processor, directory, our conversion) of a tiny random
    DETR (timm ResNet-18, d 16, 1 + 1 layers, 4 queries) at shortest edge 48, its weights drawn as
    test_detr_convert.py draws them (frozen norms calibrated on these images), without which a
    random ResNet gives every image the same outputs."""
    pytest.importorskip("timm")
    from test_detr_convert import _randomise  # tests/pretrained is on sys.path (rootdir conftest)

    config = transformers.DetrConfig(
        use_timm_backbone=True,
        use_pretrained_backbone=False,
        backbone="resnet18",
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=4,
        id2label=DETR_LABELS,
    )
    processor = transformers.DetrImageProcessorPil(
        size={"shortest_edge": 48, "longest_edge": 80}, do_convert_rgb=True
    )
    torch.manual_seed(0)
    inputs = processor(_open_all(image_paths), return_tensors="pt")
    model = _randomise(transformers.DetrForObjectDetection(config), 3, inputs)
    directory = tmp_path_factory.mktemp("detr_tiny")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor, directory, load(directory)


def _open_all(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.copy())
    return images


def test_detect_batch_equals_the_reference_on_its_padded_batch(detr, image_paths):
    from attn_jax.pretrained.detr import predict_detect_batch

    model, processor, _, pretrained = detr
    batch = predict_detect_batch(pretrained, image_paths, threshold=0.0)
    inputs = processor(_open_all(image_paths), return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs)
    for i, result in enumerate(batch):
        np.testing.assert_allclose(result["logits"], reference.logits[i].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(
            result["boxes"], reference.pred_boxes[i].numpy(), atol=1e-4, rtol=0
        )
        assert len(result["detections"]) == 4  # threshold 0 keeps every query
    # Images and queries differ (the comparisons above could not pass by repeating one row).
    logits = np.asarray([r["logits"] for r in batch])
    assert np.abs(logits[0] - logits[1]).max() > 0.01 and np.abs(logits[2] - logits[1]).max() > 0.01
    assert np.abs(logits[:, 0] - logits[:, 1]).max() > 0.01
    # Resized to 48 x 71, 48 x 80 and 48 x 48, then padded to 48 x 80: the reference's rule.
    mask = inputs["pixel_mask"].numpy()
    assert mask[1].all() and not mask[0].all() and not mask[2].all()


def test_cli_detect_three_images_grid(detr, image_paths, launch, capsys, tmp_path, converted_once):
    _, _, directory, pretrained = detr
    converted_once(directory, pretrained)
    figure = tmp_path / "boxes.png"
    args = ["detect", "--weights", str(directory), "--threshold", "0", "--json"]
    for path in image_paths:
        args += ["--image", str(path)]
    code, out, err = _main(launch, capsys, *args, "--out", str(figure))
    assert code == 0, err
    result = json.loads(out[-1])
    assert [r["image"] for r in result["results"]] == [str(p) for p in image_paths]
    assert [len(r["detections"]) for r in result["results"]] == [4, 4, 4]
    assert [r["image_size"] for r in result["results"]] == [[427, 640], [90, 150], [1, 1]]
    assert result["figure"] == str(figure) and "out_png" not in result
    assert _figure_pixels(figure).shape[1] > 2 * _figure_pixels(figure).shape[0]


# -- rank-captions ---------------------------------------------------------------------------------


CAPTIONS = ["a red dot", "a grey flower", "a temple"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, randomize):
    """(directory, our conversion) of a tiny random CLIP whose tokenizer knows the lower-case
    letters (vocab.json + merges.txt, CLIP's "</w>" word ends)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [*letters, *(c + "</w>" for c in letters), "<|startoftext|>", "<|endoftext|>"]
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=len(vocab) - 2,
            eos_token_id=len(vocab) - 1,
            pad_token_id=len(vocab) - 1,
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
    directory = tmp_path_factory.mktemp("clip_tiny")
    randomize(transformers.CLIPModel(config), seed=4).save_pretrained(directory)
    transformers.CLIPImageProcessorPil(size=16, crop_size=16).save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory, load(directory)


def test_rank_captions_batch_rows_are_the_images(clip, image_paths):
    """Each row is its image's alone: the batch reversed gives the rows reversed (one compiled
    shape; the classify test compares against single runs), and the rows differ."""
    from attn_jax.pretrained.clip import predict_rank_captions_batch

    _, pretrained = clip
    batch = predict_rank_captions_batch(pretrained, image_paths, CAPTIONS)
    reverse = predict_rank_captions_batch(pretrained, image_paths[::-1], CAPTIONS)
    assert len(batch) == 3
    for result, twin in zip(batch, reverse[::-1], strict=True):
        assert result["captions"] == CAPTIONS
        for key in ("logits_per_image", "image_embeds", "probabilities", "image_size"):
            np.testing.assert_allclose(result[key], twin[key], atol=TOL, rtol=0, err_msg=key)
        assert abs(sum(result["probabilities"]) - 1) < 1e-6
    probabilities = np.asarray([r["probabilities"] for r in batch])
    assert np.abs(probabilities[0] - probabilities[2]).max() > 1e-4


def test_cli_rank_captions_matrix_figure(
    clip, image_paths, launch, capsys, tmp_path, converted_once
):
    directory, pretrained = clip
    converted_once(directory, pretrained)
    figure = tmp_path / "captions.png"
    args = ["rank-captions", "--weights", str(directory), "--json", "--out", str(figure)]
    for path in image_paths:
        args += ["--image", str(path)]
    for caption in CAPTIONS:
        args += ["--caption", caption]
    code, out, err = _main(launch, capsys, *args)
    assert code == 0, err
    result = json.loads(out[-1])
    from attn_jax.pretrained.clip import predict_rank_captions_batch

    expected = predict_rank_captions_batch(pretrained, image_paths, CAPTIONS)
    matrix = [r["probabilities"] for r in result["results"]]
    np.testing.assert_allclose(matrix, [r["probabilities"] for r in expected], atol=TOL)
    # Per image: its name, then one line per caption.
    assert out[0] == image_paths[0].name and out[1].endswith(CAPTIONS[0]) and len(out) == 14
    assert result["figure"] == str(figure) and _figure_pixels(figure).shape[0] > 200
