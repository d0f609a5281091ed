"""Hugging Face ViTForImageClassification -> attn_jax ViT: equal logits, named mismatch errors.

The base-size reference (ViT-B/16, 1000 classes, random weights) is built, converted and compiled
once per module (the one compilation here); the directory tests convert a two-block model and
compare variables, and test_predict_cli.py compares that model's logits through the CLI.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from attn_jax.pretrained import PretrainedError, load  # noqa: E402
from attn_jax.pretrained.checkpoint_files import read_state_dict  # noqa: E402
from attn_jax.pretrained.vit import vit_from_tensors  # noqa: E402

TOL = 1e-4


def _hf_logits(model, pixel_values_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(pixel_values_nhwc.transpose(0, 3, 1, 2)))
        return model(pixel_values=x).logits.numpy()


def _hf_pixels(image, **processor_kwargs) -> np.ndarray:
    processor = transformers.ViTImageProcessorPil(**processor_kwargs)
    return processor(image, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def vit_b16(randomize):
    """(HF ViT-B/16 with random weights, its converted Pretrained); the in-memory state dict
    carries transformers 5's own tensor names."""
    config = transformers.ViTConfig(num_labels=1000)
    # Built on the meta device: skipping torch's init saves seconds; randomize fills every tensor.
    with torch.device("meta"):
        model = transformers.ViTForImageClassification(config)
    model = randomize(model.to_empty(device="cpu"), seed=0)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    pretrained = vit_from_tensors(config.to_dict(), tensors, {"size": 224, "resample": 2})
    return model, pretrained


def test_vit_b16_logits_match_transformers(vit_b16, china_image):
    model, pretrained = vit_b16
    ours_in = pretrained.preprocess(china_image)["image"]
    reference_in = _hf_pixels(china_image)
    np.testing.assert_allclose(ours_in, reference_in, atol=1e-6, rtol=0)
    # A second, random input guards against a photograph that happens to hide a wrong weight.
    noise = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    batch = np.concatenate([ours_in, noise])
    ours = np.asarray(pretrained.extras["forward"](pretrained.variables, batch))
    reference = _hf_logits(model, np.concatenate([reference_in, noise]))
    assert ours.shape == (2, 1000)
    assert reference.std() > 0.05  # the comparison is not between near-constant vectors
    np.testing.assert_allclose(ours, reference, atol=TOL, rtol=0)


def test_vit_b16_config_is_the_transformers_port(vit_b16):
    _, pretrained = vit_b16
    vit = pretrained.model
    assert (vit.hidden_size, vit.depth, vit.num_heads, vit.mlp_dim) == (768, 12, 12, 3072)
    assert vit.layernorm_epsilon == 1e-12 and vit.gelu_approximate is False
    assert vit.pool == "token" and vit.representation_size is None
    leaves = [np.size(x) for x in jax.tree.leaves(pretrained.variables)]
    assert sum(leaves) == 86_567_656  # the published ViT-B/16 count (FAITHFULNESS.md sec. 9)
    assert pretrained.labels[:2] == ["LABEL_0", "LABEL_1"] and len(pretrained.labels) == 1000


def _assert_same_variables(a: dict, b: dict) -> None:
    flat_a = dict(jax.tree_util.tree_leaves_with_path(a))
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_b.items():
        np.testing.assert_array_equal(flat_a[key], value, err_msg=jax.tree_util.keystr(key))


def test_small_vit_directory_and_pytorch_bin(small_vit, china_image, tmp_path):
    """The directory (hub names, safetensors or a torch pickle) converts what the in-memory
    state dict (transformers 5 names) converts; the CLI test compares its logits with HF's."""
    model, directory = small_vit
    names = set(read_state_dict(directory))
    assert "vit.encoder.layer.0.attention.attention.query.weight" in names  # hub naming
    pretrained = load(directory)
    assert pretrained.kind == "classify" and pretrained.labels == ["cat", "dog", "ship", "tree"]
    np.testing.assert_allclose(
        pretrained.preprocess(china_image)["image"],
        _hf_pixels(china_image, size={"height": 32, "width": 32}),
        atol=1e-6,
        rtol=0,
    )
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    assert "vit.layers.0.attention.q_proj.weight" in tensors  # transformers 5 in-memory naming
    in_memory = vit_from_tensors(model.config.to_dict(), tensors)
    _assert_same_variables(pretrained.variables, in_memory.variables)

    # The same weights as a torch pickle (pytorch_model.bin), read with weights_only=True.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((directory / "config.json").read_text())
    state = {k: torch.from_numpy(v) for k, v in read_state_dict(directory).items()}
    torch.save(state, bin_dir / "pytorch_model.bin")
    _assert_same_variables(load(bin_dir).variables, pretrained.variables)


def _rewrite(directory, tmp_path, edit):
    from safetensors.numpy import save_file

    tensors = read_state_dict(directory)
    edit(tensors)
    out = tmp_path / "edited"
    out.mkdir()
    (out / "config.json").write_text((directory / "config.json").read_text())
    save_file(tensors, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.pop("vit.encoder.layer.1.attention.attention.key.weight"),
            r"missing 1: vit\.encoder\.layer\.1\.attention\.attention\.key\.weight",
        ),
        (
            lambda t: t.update(classifier__weight=t.pop("classifier.weight")[:3]),
            r"missing 1: classifier\.weight.*unused 1: classifier__weight",
        ),
        (
            lambda t: t.update({"vit.layernorm.weight": np.ones(47, np.float32)}),
            r"wrong shape 1: vit\.layernorm\.weight \(47,\) != expected \(48,\)",
        ),
    ],
    ids=["missing", "renamed", "misshaped"],
)
def test_mismatches_are_named(small_vit, tmp_path, edit, message):
    _, directory = small_vit
    with pytest.raises(PretrainedError, match=message) as info:
        load(_rewrite(directory, tmp_path, edit))
    assert "\n" not in str(info.value)


def test_config_errors_are_one_line(small_vit, tmp_path):
    _, directory = small_vit
    config = json.loads((directory / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").symlink_to(directory / "model.safetensors")
    (bad / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(PretrainedError, match="hidden_act 'relu'"):
        load(bad)
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(PretrainedError, match="model_type 'bert' has no converter"):
        load(bad)
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "preprocessor_config.json").write_text(json.dumps({"size": 64}))
    with pytest.raises(PretrainedError, match="position embeddings are for image_size"):
        load(bad)
