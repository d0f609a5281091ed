"""Position grids resized between resolutions (attn_jax/pretrained/resample.py) equal PyTorch's
bicubic `interpolate` (align_corners=False, no antialiasing), the function timm and the Swin
repository fine-tune with; `init_from` applies it to a Swin's relative-position tables."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from attn_jax.pretrained.resample import (
    grid_resampler,
    resample_position_embedding,
    resample_relative_table,
    resize_bicubic,
)
from attn_jax.train.checkpoint import init_variables_from

torch = pytest.importorskip("torch")


def _torch_bicubic(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return torch.nn.functional.interpolate(
        torch.from_numpy(grid), size=size, mode="bicubic", align_corners=False, antialias=False
    ).numpy()


@pytest.mark.parametrize(
    "before, after",
    [((14, 14), (24, 24)), ((24, 24), (14, 14)), ((7, 5), (3, 11)), ((13, 13), (23, 23))],
)
def test_resize_equals_torch_bicubic(before, after):
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(2, 3, *before))
    # float64 on both sides: the same arithmetic, so the same numbers to rounding.
    np.testing.assert_allclose(resize_bicubic(grid, after), _torch_bicubic(grid, after), atol=1e-12)
    single = grid.astype(np.float32)
    got = resize_bicubic(single, after)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _torch_bicubic(single, after), atol=1e-5)


def test_same_size_is_the_identity():
    grid = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    assert resize_bicubic(grid, (5, 6)) is grid
    table = np.random.default_rng(2).normal(size=(49, 3))
    np.testing.assert_array_equal(resample_relative_table(table, 49), table)
    embedding = np.random.default_rng(3).normal(size=(1, 17, 8))
    np.testing.assert_array_equal(resample_position_embedding(embedding, 17), embedding)


def test_position_embedding_keeps_the_class_token():
    """timm's resample_abs_pos_embed: the prefix token as it is, the [C, h, w] grid resized."""
    embedding = np.random.default_rng(4).normal(size=(1, 1 + 14 * 14, 6)).astype(np.float32)
    got = resample_position_embedding(embedding, 1 + 24 * 24)
    np.testing.assert_array_equal(got[:, :1], embedding[:, :1])
    grid = embedding[:, 1:].reshape(1, 14, 14, 6).transpose(0, 3, 1, 2)
    want = _torch_bicubic(grid, (24, 24)).transpose(0, 2, 3, 1).reshape(1, 576, 6)
    np.testing.assert_allclose(got[:, 1:], want, atol=1e-5)
    # Without a class token (pool="gap") the whole length is the grid.
    no_prefix = embedding[:, 1:]
    np.testing.assert_allclose(resample_position_embedding(no_prefix, 576), want, atol=1e-5)


def test_only_position_grids_are_resampled():
    assert grid_resampler("Transformer/posembed_input/pos_embedding", (1, 197, 8), (1, 577, 8))
    assert grid_resampler("stage1_block0/attn/relative_position_bias_table", (169, 3), (529, 3))
    # A width change, a text context, another head count or another leaf stay mismatches.
    assert (
        grid_resampler("Transformer/posembed_input/pos_embedding", (1, 197, 8), (1, 577, 16))
        is None
    )
    assert grid_resampler("text/positional_embedding", (50, 8), (65, 8)) is None
    assert grid_resampler("visual/positional_embedding", (50, 8), (65, 8))
    assert grid_resampler("b/attn/relative_position_bias_table", (169, 3), (529, 4)) is None
    assert grid_resampler("head/kernel", (196, 8), (576, 8)) is None


SWIN = dict(
    patch_size=4, window_size=4, embed_dim=8, depths=(2, 2), num_heads=(1, 2), num_classes=3
)


def test_swin_window_4_to_6_through_init_from(tmp_path, randomize):
    """A timm Swin at window 4 (32 px: 8x8 and 4x4 maps) into our Swin at window 6 (48 px: 12x12
    and 6x6 maps): every 7x7 table becomes the 11x11 the Swin repository's fine-tuning computes
    (F.interpolate of each head's grid), everything else loads unchanged."""
    pytest.importorskip("timm")
    from safetensors.torch import save_file
    from timm.models.swin_transformer import SwinTransformer

    from attn_jax import pretrained

    reference = randomize(SwinTransformer(img_size=32, **SWIN), seed=3)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = tmp_path / "swin_w4.safetensors"
    save_file(state, str(path))
    source = pretrained.load(path)
    assert source.model.window == 4
    model = source.model.clone(window=6)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 48, 48, 3)))
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
    params, _, report = init_variables_from(str(path), fresh, {})

    tables = 0
    for key, value in jax.tree_util.tree_leaves_with_path(params):
        name = "/".join(str(k.key) for k in key)
        if name.endswith("relative_position_bias_table"):
            stage, block = map(int, re.match(r"stage(\d+)_block(\d+)/", name).groups())
            stage -= 1
            theirs = state[f"layers.{stage}.blocks.{block}.attn.relative_position_bias_table"]
            heads = theirs.shape[1]
            want = torch.nn.functional.interpolate(
                theirs.permute(1, 0).view(1, heads, 7, 7), size=(11, 11), mode="bicubic"
            )
            want = want.view(heads, 121).permute(1, 0).numpy()
            assert value.shape == (121, heads)
            np.testing.assert_allclose(np.asarray(value), want, atol=1e-5)
            tables += 1
    assert tables == 4 and len(report.resampled) == 4
    assert "resampled 4 position grid(s) bicubically" in report.summary()
    assert "7x7->11x11" in report.summary()
    converted = dict(jax.tree_util.tree_leaves_with_path(source.variables["params"]))
    for key, value in jax.tree_util.tree_leaves_with_path(params):
        if not jax.tree_util.keystr(key).endswith("['relative_position_bias_table']"):
            np.testing.assert_array_equal(np.asarray(value), converted[key])


def test_workdir_position_embedding_into_a_sharded_model(tmp_path):
    """Another run's best checkpoint (8x8 images, 4x4 patches) into the same ViT at 12x12 (6x6
    patches) placed over four devices as training places it: the grid resized, the class token
    kept, every leaf on the target's sharding."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from attn_jax.models import build_model
    from attn_jax.train.checkpoint import Checkpointer

    vit = {"name": "vit", "patch_size": 2, "hidden_size": 8, "depth": 1, "num_heads": 2}
    model = build_model({**vit, "mlp_dim": 16, "num_classes": 3})
    rng = np.random.default_rng(5)

    def init(side: int) -> dict:
        shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, side, side, 1)))
        return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)

    saved = init(8)["params"]
    ckpt = Checkpointer(tmp_path, keep=1)
    ckpt.save_best(1, saved, {"test/accuracy": 0.5})
    ckpt.wait()
    ckpt.close()
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    target = jax.device_put(init(12)["params"], NamedSharding(mesh, PartitionSpec()))
    params, _, report = init_variables_from(str(tmp_path), target, {})

    before = saved["Transformer"]["posembed_input"]["pos_embedding"]  # [1, 17, 8]
    grid = torch.from_numpy(before[:, 1:].reshape(1, 4, 4, 8)).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    got = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])
    np.testing.assert_array_equal(got[:, 0], before[:, 0])
    np.testing.assert_allclose(got[:, 1:], grid.permute(0, 2, 3, 1).reshape(1, 36, 8), atol=1e-5)
    assert report.resampled == ("Transformer/posembed_input/pos_embedding 4x4->6x6",)
    for leaf, like in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True):
        assert leaf.sharding == like.sharding and leaf.dtype == like.dtype
