"""Hugging Face CLIPModel -> attn_jax CLIP: equal embeddings and logits, the tokenizer's ids equal
to transformers' CLIPTokenizer, `predict rank-captions` end to end, named mismatch errors.

No vocabulary can be downloaded: a synthetic one (CLIP's 256 byte symbols, their "</w>" forms, a
few merges, [SOT] and [EOT]) is written as vocab.json + merges.txt, and transformers'
CLIPTokenizer built from it writes the tokenizer.json a checkpoint directory holds. The base-size
model (ViT-B/32, text 512 x 12) is built, converted and compiled once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from attn_jax.pretrained import PretrainedError, load  # noqa: E402
from attn_jax.pretrained.checkpoint_files import read_state_dict  # noqa: E402
from attn_jax.pretrained.clip import (  # noqa: E402
    clip_forward,
    clip_from_tensors,
    clip_kwargs_from_config,
    eot_id_from_config,
    load_clip_tokenizer,
    predict_rank_captions,
)

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-4
CONTEXT = 12  # the small model's context length (max_position_embeddings)
MERGES = [
    ("t", "h"),
    ("th", "e</w>"),
    ("p", "h"),
    ("ph", "o"),
    ("pho", "t"),
    ("phot", "o</w>"),
    ("o", "f</w>"),
    ("d", "o"),
    ("do", "g</w>"),
    ("t", "e"),
    ("te", "m"),
    ("tem", "p"),
    ("temp", "l"),
    ("templ", "e</w>"),
    ("'", "s</w>"),
]
CAPTIONS = [
    "a photo of a temple",
    "A  Photo\tof the DOG!!",
    "the temple of the dog, the photo of the temple, the dog of the photo",  # truncated
    "it's café 42 <|endoftext|> dog",  # contraction, accent, digits, a special token in the text
    "",
]


def _byte_symbols() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 byte values, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    shifted = iter(range(256, 512))
    return [chr(b) for b in printable] + [
        chr(next(shifted)) for b in range(256) if b not in printable
    ]


def _write_vocabulary(directory: Path) -> int:
    """vocab.json and merges.txt of the synthetic vocabulary; returns its size."""
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in MERGES)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    lines = ["#version: 0.2", *(" ".join(m) for m in MERGES)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n")
    return len(vocab)


def _hf_tokenizer(vocab_dir: Path, **kwargs):
    return transformers.CLIPTokenizer(
        vocab=str(vocab_dir / "vocab.json"),
        merges=str(vocab_dir / "merges.txt"),
        model_max_length=CONTEXT,
        **kwargs,
    )


def _hf_ids(tokenizer, captions) -> np.ndarray:
    return np.asarray(tokenizer(captions, padding="max_length", truncation=True)["input_ids"])


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
    """(directory with vocab.json + merges.txt only, vocabulary size)."""
    directory = tmp_path_factory.mktemp("clip_vocab")
    return directory, _write_vocabulary(directory)


# -- tokenizer -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_token", ["<|endoftext|>", "!"])
def test_tokenizer_ids_equal_clip_tokenizer(vocabulary, tmp_path, pad_token):
    vocab_dir, vocab_size = vocabulary
    reference = _hf_tokenizer(vocab_dir, pad_token=pad_token)
    expected = _hf_ids(reference, CAPTIONS)
    assert expected.shape == (len(CAPTIONS), CONTEXT)
    the = reference.convert_tokens_to_ids("the</w>")
    assert (expected[2, -2], expected[2, -1]) == (the, vocab_size - 1)  # truncated, EOT kept last
    assert expected[0, -1] == reference.pad_token_id == (0 if pad_token == "!" else vocab_size - 1)

    saved = tmp_path / "saved"
    reference.save_pretrained(saved)  # tokenizer.json + tokenizer_config.json
    assert (saved / "tokenizer.json").is_file() and not (saved / "vocab.json").exists()
    from_json = load_clip_tokenizer(saved, CONTEXT)
    np.testing.assert_array_equal(from_json(CAPTIONS), expected)
    assert from_json.pad_id == reference.pad_token_id
    assert (from_json.bos_id, from_json.eos_id) == (vocab_size - 2, vocab_size - 1)

    # vocab.json + merges.txt without tokenizer.json: the pipeline CLIPTokenizer assembles.
    files = tmp_path / "files"
    files.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (files / name).symlink_to(vocab_dir / name)
    if pad_token != "<|endoftext|>":
        (files / "tokenizer_config.json").write_text(json.dumps({"pad_token": pad_token}))
    from_vocab = load_clip_tokenizer(files, CONTEXT)
    np.testing.assert_array_equal(from_vocab(CAPTIONS), expected)


def test_tokenizer_errors_are_one_line(vocabulary, tmp_path):
    vocab_dir, _ = vocabulary
    with pytest.raises(PretrainedError, match=r"no tokenizer in .*need tokenizer\.json"):
        load_clip_tokenizer(tmp_path, CONTEXT)
    tokenizer = load_clip_tokenizer(vocab_dir, CONTEXT)
    with pytest.raises(ValueError, match="at least one caption"):
        tokenizer([])
    with pytest.raises(ValueError, match="must be a string, got int"):
        tokenizer(["a photo", 3])


# -- base size -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(randomize, china_image):
    """(HF CLIPModel at CLIPConfig() defaults with random weights, our Pretrained, outputs of both
    on china.jpg and two captions of 7 and 77 tokens)."""
    config = transformers.CLIPConfig()
    # Built on the meta device: skipping torch's init saves seconds; randomize fills every tensor.
    with torch.device("meta"):
        model = transformers.CLIPModel(config)
    model = randomize(model.to_empty(device="cpu"), seed=0)
    with torch.no_grad():
        for module in model.modules():  # buffers, which to_empty leaves uninitialized
            if hasattr(module, "position_ids"):
                module.position_ids.copy_(torch.arange(module.position_ids.shape[-1])[None])
        model.logit_scale.fill_(4.0)  # multiplier 54.6: logits well spread, below the clip at 100
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    pretrained = clip_from_tensors(config.to_dict(), tensors, {})  # CLIPImageProcessor defaults

    pixels = transformers.CLIPImageProcessorPil()(china_image, return_tensors="np")["pixel_values"]
    rng = np.random.default_rng(0)
    tokens = np.full((2, 77), 49407, np.int64)  # [EOT] pads, as OpenAI's tokenizer config says
    for row, words in zip(tokens, (5, 75), strict=True):
        row[0], row[1 : 1 + words], row[1 + words] = 49406, rng.integers(0, 49406, words), 49407
    with torch.no_grad():
        reference = model(input_ids=torch.from_numpy(tokens), pixel_values=torch.from_numpy(pixels))
    ours_in = pretrained.preprocess(china_image)["image"]
    ours = clip_forward(pretrained.model)(pretrained.variables, ours_in, tokens.astype(np.int32))
    return {
        "pretrained": pretrained,
        "reference_in": pixels.transpose(0, 2, 3, 1),
        "ours_in": ours_in,
        "reference": {k: getattr(reference, k).numpy() for k in ours},
        "ours": {k: np.asarray(v) for k, v in ours.items()},
    }


def test_base_embeddings_and_logits_match_transformers(base):
    np.testing.assert_allclose(base["ours_in"], base["reference_in"], atol=1e-6, rtol=0)
    for key, shape in (
        ("image_embeds", (1, 512)),
        ("text_embeds", (2, 512)),
        ("logits_per_image", (1, 2)),
    ):
        assert base["ours"][key].shape == shape
        np.testing.assert_allclose(base["ours"][key], base["reference"][key], atol=TOL, rtol=0)
    assert np.ptp(base["reference"]["logits_per_image"]) > 0.5  # distinct captions, not a tie


def test_base_config_and_parameter_count(base):
    pretrained = base["pretrained"]
    model = pretrained.model
    assert (model.vision_width, model.vision_layers, model.vision_heads) == (768, 12, 12)
    assert (model.text_width, model.text_layers, model.text_heads) == (512, 12, 8)
    assert (model.patch_size, model.image_size, model.context_length) == (32, 224, 77)
    assert model.activation == "quick_gelu" and model.eot_id == 49407
    leaves = jax.tree.leaves(pretrained.variables["params"])
    assert sum(np.size(x) for x in leaves) == 151_277_313  # FAITHFULNESS.md sec. 14


# -- a small checkpoint directory ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory, vocabulary, randomize):
    """(HF CLIPModel, HF tokenizer, HF processor, directory): a two-block random CLIP at 32 px
    saved with save_pretrained beside its processor and the synthetic tokenizer. Its config has
    the legacy eos_token_id 2 (argmax pooling, as openai/clip-vit-base-patch32's) and a logit
    scale above ln 100, which transformers does not clip."""
    vocab_dir, vocab_size = vocabulary
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=CONTEXT,
            bos_token_id=vocab_size - 2,
            eos_token_id=2,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = randomize(transformers.CLIPModel(config), seed=1)
    with torch.no_grad():
        model.logit_scale.fill_(5.0)
    directory = tmp_path_factory.mktemp("clip_small")
    model.save_pretrained(directory)
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor.save_pretrained(directory)
    tokenizer = _hf_tokenizer(vocab_dir)
    tokenizer.save_pretrained(directory)
    return model, tokenizer, processor, directory


def _hf_rank(small, image, captions) -> dict[str, np.ndarray]:
    model, tokenizer, processor, _ = small
    inputs = dict(
        input_ids=torch.from_numpy(_hf_ids(tokenizer, captions)),
        pixel_values=processor(image, return_tensors="pt")["pixel_values"],
    )
    with torch.no_grad():
        out = model(**inputs)
    return {k: getattr(out, k).numpy() for k in ("logits_per_image", "image_embeds", "text_embeds")}


def test_small_directory_predict_rank_captions_matches_transformers(small, china_image):
    _, _, _, directory = small
    pretrained = load(directory)
    assert pretrained.kind == "contrastive" and pretrained.model.eot_id is None  # legacy eos 2
    captions = CAPTIONS[:4]
    result = predict_rank_captions(pretrained, china_image, captions)
    reference = _hf_rank(small, china_image, captions)
    for key in reference:
        np.testing.assert_allclose(result[key], reference[key], atol=TOL, rtol=0)
    logits = reference["logits_per_image"][0]
    assert np.ptp(logits) > 1.0
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(result["probabilities"], softmax, atol=TOL)
    ours = np.asarray(result["logits_per_image"][0])
    np.testing.assert_allclose(
        result["probabilities"], np.exp(ours - ours.max()) / np.exp(ours - ours.max()).sum()
    )
    assert result["captions"] == captions and result["image_size"] == [427, 640]
    json.dumps(result)  # JSON-serialisable as it stands


def test_cli_rank_captions_json_matches_transformers(small, china_path, china_image):
    _, _, _, directory = small
    captions = ["a photo of a temple", "a photo of a dog"]
    command = [sys.executable, str(ROOT / "launch.py"), "predict", "rank-captions"]
    command += ["--weights", str(directory), "--image", str(china_path), "--json"]
    for caption in captions:
        command += ["--caption", caption]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    reference = _hf_rank(small, china_image, captions)
    np.testing.assert_allclose(
        result["logits_per_image"], reference["logits_per_image"], atol=TOL, rtol=0
    )
    assert np.asarray(result["text_embeds"]).shape == (2, 16)
    # The readable lines: "probability  caption", one per caption, in the given order.
    assert [line.split("  ", 1)[1] for line in lines[:-1]] == captions
    np.testing.assert_allclose(
        [float(line.split()[0]) for line in lines[:-1]], result["probabilities"], atol=1e-4
    )


def test_directory_without_tokenizer_loads_but_cannot_rank(small, tmp_path, china_image):
    _, _, _, directory = small
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (tmp_path / name).symlink_to(directory / name)
    pretrained = load(tmp_path)
    assert pretrained.extras["tokenizer"] is None
    with pytest.raises(PretrainedError, match=r"no tokenizer in .*tokenizer\.json") as info:
        predict_rank_captions(pretrained, china_image, ["a photo"])
    assert "\n" not in str(info.value)


# -- mismatches and unsupported configs ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_files(small):
    _, _, _, directory = small
    return json.loads((directory / "config.json").read_text()), read_state_dict(directory)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.pop("text_model.encoder.layers.1.self_attn.k_proj.weight"),
            r"missing 1: text_model\.encoder\.layers\.1\.self_attn\.k_proj\.weight",
        ),
        (
            lambda t: t.update(visual_proj=t.pop("visual_projection.weight")),
            r"missing 1: visual_projection\.weight.*unused 1: visual_proj",
        ),
        (
            lambda t: t.update({"vision_model.pre_layrnorm.weight": np.ones(47, np.float32)}),
            r"wrong shape 1: vision_model\.pre_layrnorm\.weight \(47,\) != expected \(48,\)",
        ),
    ],
    ids=["missing", "renamed", "misshaped"],
)
def test_mismatches_are_named(small_files, edit, message):
    config, tensors = small_files
    tensors = dict(tensors)
    edit(tensors)
    with pytest.raises(PretrainedError, match=message) as info:
        clip_from_tensors(config, tensors)
    assert "\n" not in str(info.value)


def test_legacy_position_ids_buffers_are_ignored(small_files):
    config, tensors = small_files
    legacy = dict(tensors)
    legacy["text_model.embeddings.position_ids"] = np.arange(CONTEXT)[None]
    legacy["vision_model.embeddings.position_ids"] = np.arange(17)[None]
    converted = clip_from_tensors(config, legacy)
    assert converted.model.context_length == CONTEXT


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model_type": "clip_vision_model"}, "is not 'clip'"),
        ({"text_config": {"hidden_act": "relu"}}, "hidden_act 'relu' is not supported"),
        ({"vision_config": {"hidden_act": "gelu"}}, "different activations"),
        ({"vision_config": {"layer_norm_eps": 1e-6}}, "different layer_norm_eps"),
        ({"vision_config": {"intermediate_size": 100}}, "intermediate_size / hidden_size differs"),
        ({"vision_config": {"image_size": [32, 48]}}, "not square"),
        ({"text_config": {"eos_token_id": [2, 3]}}, "eos_token_id [2, 3] is not one integer"),
    ],
)
def test_unsupported_configs_fail_in_one_line(small_files, change, words):
    config, _ = small_files
    edited = dict(config)
    for key, value in change.items():
        edited[key] = {**config[key], **value} if isinstance(value, dict) else value
    with pytest.raises(PretrainedError) as info:
        clip_kwargs_from_config(edited)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_eot_rule_and_config_defaults():
    assert eot_id_from_config({"eos_token_id": 2}) is None  # transformers pools at argmax(ids)
    assert eot_id_from_config({"eos_token_id": 49407}) == 49407  # ... at the first EOT
    assert eot_id_from_config({}) == 49407  # CLIPTextConfig's default
    kwargs = clip_kwargs_from_config(
        {
            "model_type": "clip",
            "text_config": {"hidden_size": 64},
            # The legacy dict wins over text_config, as transformers' CLIPConfig resolves them.
            "text_config_dict": {"num_hidden_layers": 3},
        }
    )
    assert (kwargs["text_width"], kwargs["text_layers"]) == (512, 3)
    assert (kwargs["vision_width"], kwargs["embed_dim"], kwargs["mlp_ratio"]) == (768, 512, 4.0)


def test_preprocessor_of_another_size_is_refused(small_files):
    config, tensors = small_files
    with pytest.raises(PretrainedError, match="position embeddings are for image_size 32"):
        clip_from_tensors(config, tensors, {"crop_size": {"height": 64, "width": 64}})
