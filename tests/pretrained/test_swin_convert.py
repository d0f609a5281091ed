"""timm Swin -> attn_jax Swin: equal logits at Swin-T, both tensor namings, named mismatch errors.

Swin-T (swin_tiny_patch4_window7_224, random weights) is built, converted and compiled once per
module, the one forward pass compiled here; the directory and naming tests convert a small Swin
and compare the variables with the in-memory conversion's.
"""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from attn_jax.pretrained import PretrainedError, load  # noqa: E402
from attn_jax.pretrained.swin import swin_from_tensors  # noqa: E402

TOL = 1e-4


def _timm_pixels(model, image) -> np.ndarray:
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config(model=model))
    return transform(image).numpy().transpose(1, 2, 0)[None]


def _timm_logits(model, pixels_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(pixels_nhwc.transpose(0, 3, 1, 2))))


@pytest.fixture(scope="module")
def swin_t(randomize):
    model = randomize(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False), seed=0)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, swin_from_tensors(tensors, {"pretrained_cfg": dict(model.pretrained_cfg)})


def test_swin_t_logits_match_timm(swin_t, china_image):
    model, pretrained = swin_t
    ours_in = pretrained.preprocess(china_image)["image"]
    reference_in = _timm_pixels(model, china_image)
    np.testing.assert_allclose(ours_in, reference_in, atol=1e-6, rtol=0)
    ours = np.asarray(pretrained.extras["forward"](pretrained.variables, ours_in))
    reference = _timm_logits(model, reference_in).numpy()
    assert ours.shape == (1, 1000)
    assert reference.std() > 0.05
    np.testing.assert_allclose(ours, reference, atol=TOL, rtol=0)


def test_swin_t_architecture_read_from_tensors(swin_t):
    _, pretrained = swin_t
    swin = pretrained.model
    assert (swin.embed_dim, tuple(swin.depths), tuple(swin.num_heads)) == (
        96,
        (2, 2, 6, 2),
        (3, 6, 12, 24),
    )
    assert (swin.window, swin.patch_size, swin.mlp_ratio, swin.num_classes) == (7, 4, 4.0, 1000)
    assert sum(np.size(x) for x in jax.tree.leaves(pretrained.variables)) == 28_288_354


SMALL = dict(
    img_size=128,
    patch_size=4,
    window_size=4,
    embed_dim=16,
    depths=(2, 2, 2, 2),
    num_heads=(1, 2, 2, 4),
    num_classes=5,
)


@pytest.fixture(scope="module")
def small_swin(tmp_path_factory, randomize):
    """A small random timm Swin saved as a timm hub directory with label names."""
    from timm.models._hub import save_for_hf
    from timm.models.swin_transformer import SwinTransformer

    model = randomize(SwinTransformer(**SMALL), seed=1)
    model.pretrained_cfg = dict(
        input_size=(3, 128, 128),
        interpolation="bicubic",
        crop_pct=0.9,
        crop_mode="center",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        num_classes=5,
        architecture="swin_small_test",
    )
    directory = tmp_path_factory.mktemp("swin_hub")
    names = ["apple", "bee", "car", "dune", "eel"]
    save_for_hf(model, directory, model_config={"label_names": names}, safe_serialization=True)
    return model, directory


def _assert_same_variables(a: dict, b: dict) -> None:
    flat_a = dict(jax.tree_util.tree_leaves_with_path(a))
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_b.items():
        np.testing.assert_array_equal(flat_a[key], value, err_msg=jax.tree_util.keystr(key))


def test_small_swin_hub_directory(small_swin, china_image):
    """The directory path converts what the in-memory path converts (whose numbers the Swin-T
    test checks), and adds labels and the checkpoint's preprocessing."""
    model, directory = small_swin
    pretrained = load(directory)
    assert pretrained.labels == ["apple", "bee", "car", "dune", "eel"]
    assert (pretrained.model.window, tuple(pretrained.model.num_heads)) == (4, (1, 2, 2, 4))
    assert pretrained.preprocess(china_image)["image"].shape == (1, 128, 128, 3)
    in_memory = swin_from_tensors({k: v.numpy() for k, v in model.state_dict().items()})
    _assert_same_variables(pretrained.variables, in_memory.variables)


def _official_names(state: dict) -> dict:
    """timm 1.x names -> the official repository's: merging at the end of the previous stage,
    `head` for `head.fc`, plus the index and mask buffers the official checkpoints carry."""
    out = {}
    for name, value in state.items():
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", name)
        if match:
            name = f"layers.{int(match[1]) - 1}.downsample.{match[2]}"
        out[name.replace("head.fc.", "head.")] = value
        if name.endswith("attn.relative_position_bias_table"):
            stem = name.removesuffix("relative_position_bias_table")
            out[stem + "relative_position_index"] = torch.zeros(16, 16, dtype=torch.int64)
            out[stem.removesuffix("attn.") + "attn_mask"] = torch.zeros(16, 16, 16)
    return out


def test_official_naming_state_dict_file(small_swin, tmp_path):
    model, directory = small_swin
    path = tmp_path / "swin_official.pth"
    torch.save({"model": _official_names(model.state_dict())}, path)
    official = load(path)  # a bare file: Swin preprocessing defaults, no labels
    timm_named = load(directory)
    assert official.labels is None
    _assert_same_variables(official.variables, timm_named.variables)


def test_mismatches_are_named(small_swin, tmp_path):
    model, _ = small_swin
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    del state["layers.2.downsample.reduction.weight"]
    with pytest.raises(PretrainedError, match=r"missing 1: layers\.2\.downsample\.reduction"):
        swin_from_tensors(state)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["layers.1.blocks.1.mlp.fc2.bias"] = np.zeros(7, np.float32)
    with pytest.raises(PretrainedError, match=r"wrong shape 1: layers\.1\.blocks\.1\.mlp\.fc2"):
        swin_from_tensors(state)
    with pytest.raises(PretrainedError, match="not a timm Swin"):
        swin_from_tensors({"conv1.weight": np.zeros((8, 3, 7, 7), np.float32)})
