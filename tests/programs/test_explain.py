"""ViT explanations end to end on a tiny random ViT: the sown weights are stacked in block order
(both encoder layouts), the relevance map has the patch grid's shape, the PNGs are written, a
model with uniform attention gives a flat relevance map and TransFG's first-index parts, and bad
input is a one-line error."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from attn_jax.attention.rollout import attention_rollout, class_token_relevance
from attn_jax.models.vit import ViT
from attn_jax.programs.explain import (
    ExplainError,
    explain_arrays,
    explain_classification,
    explain_vit,
    stack_attention,
)

PNG = b"\x89PNG\r\n\x1a\n"


def random_like(abstract, seed: int = 0):
    """Random values of an abstract tree (`jax.eval_shape` of an init): compiling the ViT's own
    initializers costs seconds, numpy draws cost nothing, and any weights do for explanations."""
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if np.issubdtype(leaf.dtype, np.floating):
            return (0.3 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map(draw, abstract)


TINY = dict(num_classes=3, patch_size=4, hidden_size=16, depth=2, num_heads=2, mlp_dim=32)


@pytest.fixture(scope="module")
def tiny():
    """(model, params, images [2, 12, 16, 3]): a 3x4 patch grid plus the class token."""
    model = ViT(**TINY)
    images = np.random.default_rng(0).uniform(size=(2, 12, 16, 3)).astype(np.float32)
    params = random_like(jax.eval_shape(model.init, jax.random.key(0), images[:1])["params"])
    return model, params, images


def test_explanation_arrays_have_the_grid_shapes_and_match_the_rollout(tiny):
    model, params, images = tiny
    ex = explain_arrays(model, params, images, top_k_parts=3)
    assert ex.attention.shape == (2, 2, 2, 13, 13)  # [L, B, H, T, T]
    np.testing.assert_allclose(ex.attention.sum(-1), 1.0, atol=1e-5)
    assert ex.relevance.shape == (2, 3, 4) and ex.grid_hw == (3, 4)
    np.testing.assert_allclose(ex.relevance.max(axis=(1, 2)), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        ex.relevance, class_token_relevance(attention_rollout(ex.attention), (3, 4)), atol=1e-6
    )
    assert ex.head_maps.shape == (2, 2, 3, 4)
    np.testing.assert_allclose(ex.head_maps, ex.attention[-1, :, :, 0, 1:].reshape(2, 2, 3, 4))
    assert ex.parts.shape == (2, 2) and np.all((ex.parts >= 1) & (ex.parts <= 12))
    assert ex.top_parts.shape == (2, 3)
    flat = ex.relevance.reshape(2, 12)
    np.testing.assert_array_equal(flat[np.arange(2), ex.top_parts[:, 0] - 1], flat.max(-1))
    logits, _ = jax.jit(model.apply)({"params": params}, images)
    np.testing.assert_allclose(ex.logits, logits, atol=1e-5)


def test_explain_vit_writes_the_three_pngs(tiny, tmp_path):
    model, params, images = tiny
    paths = explain_vit(model, params, images, tmp_path / "out", labels=["a", "b", "c"])
    assert [p.name for p in paths] == ["rollout.png", "heads.png", "parts.png"]
    for path in paths:
        assert path.parent == tmp_path / "out" and path.read_bytes()[:8] == PNG


def test_explain_classification_runs_a_pretrained_style_bundle(tiny, tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    model, params, images = tiny
    photo = Image.fromarray((images[0] * 255).astype(np.uint8))
    photo.save(tmp_path / "photo.png")
    pretrained = SimpleNamespace(
        model=model,
        variables={"params": params},
        preprocess=lambda image: {"image": np.asarray(image, np.float32)[None] / 127.5 - 1.0},
        labels=["a", "b", "c"],
    )
    paths = explain_classification(
        pretrained, tmp_path / "photo.png", tmp_path / "x", top_k_parts=2
    )
    assert sorted(p.name for p in paths) == ["heads.png", "parts.png", "rollout.png"]
    with pytest.raises(ExplainError, match="cannot read image"):
        explain_classification(pretrained, tmp_path / "missing.png", tmp_path / "x")


def test_uniform_attention_gives_a_flat_map_and_first_index_parts(tiny):
    model, params, images = tiny
    # Zero queries make every attention logit equal: uniform attention in every layer and head.
    flat = jax.tree_util.tree_map(np.asarray, params)
    for i in range(model.depth):
        query = flat["Transformer"][f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"]["query"]
        query["kernel"] = np.zeros_like(query["kernel"])
        query["bias"] = np.zeros_like(query["bias"])
    ex = explain_arrays(model, flat, images)
    np.testing.assert_allclose(ex.attention, 1.0 / 13, atol=1e-6)
    np.testing.assert_allclose(ex.relevance, 1.0, atol=1e-5)
    np.testing.assert_array_equal(ex.parts, 1)


def test_stack_attention_orders_blocks_by_number_in_both_layouts():
    per_block = {
        f"encoderblock_{i}": {"MultiHeadDotProductAttention_1": {"attention": (np.full(2, i),)}}
        for i in range(12)
    }
    stacked = stack_attention({"Transformer": per_block}, depth=12)
    np.testing.assert_array_equal(stacked[:, 0], np.arange(12))  # not 0, 1, 10, 11, 2, ...
    scanned = {"encoderblock": {"MultiHeadDotProductAttention_1": {"attention": (stacked,)}}}
    np.testing.assert_array_equal(stack_attention({"Transformer": scanned}, depth=12), stacked)


def test_models_without_a_class_token_and_bad_input(tiny, tmp_path):
    _, _, images = tiny
    gap = ViT(**TINY, pool="gap")
    params = random_like(jax.eval_shape(gap.init, jax.random.key(0), images[:1])["params"])
    ex = explain_arrays(gap, params, images, top_k_parts=2)
    assert ex.attention.shape[-1] == 12 and ex.relevance.shape == (2, 3, 4)
    assert ex.parts is None and ex.top_parts.shape == (2, 2)
    with pytest.raises(ExplainError, match=r"batch \[B, H, W, C\].*images\[None\]"):
        explain_arrays(gap, params, images[0])
    with pytest.raises(ExplainError, match=r"top_k_parts=13 must lie in \[1, 12\]"):
        explain_arrays(gap, params, images, top_k_parts=13)
    with pytest.raises(ExplainError, match="1 channels but the model's patch embedding takes 3"):
        explain_arrays(gap, params, images[..., :1])
    with pytest.raises(ExplainError, match="make a 2x4 patch grid.*has 12 patches"):
        explain_arrays(gap, params, images[:, :8])
    with pytest.raises(ExplainError, match="need an attn_jax ViT"):
        explain_arrays(object(), params, images)


def test_explain_workdir_restores_a_training_checkpoint(tmp_path):
    from pathlib import Path

    from attn_jax import config as config_lib
    from attn_jax.programs.explain import explain_workdir, restore_workdir
    from attn_jax.train import loop
    from attn_jax.train.checkpoint import Checkpointer
    from attn_jax.train.optim import make_optimizer

    root = Path(__file__).resolve().parents[2]
    config = config_lib.import_config(root / "experiments" / "vit_digits.py")
    config_lib.apply_overrides(
        config,
        [
            "--config.model.hidden_size=16",
            "--config.model.mlp_dim=32",
            "--config.model.depth=2",
            "--config.model.num_heads=2",
            f"--config.data.data_dir={tmp_path / 'tfds'}",
        ],
    )
    # A checkpoint as `launch.py train` writes it, without the training.
    exp = loop.build_experiment(config)
    tx, _ = make_optimizer(config.optim, exp.total_steps)
    state = random_like(
        jax.eval_shape(loop.make_init_fn(exp.model, tx, exp.init_inputs()), jax.random.key(3))
    )
    workdir = tmp_path / "run"
    ckpt = Checkpointer(workdir)
    ckpt.save(7, state, {}, force=True)
    ckpt.wait()
    ckpt.close()
    config_lib.save(config, workdir / "config.json")

    model, params, _ = restore_workdir(workdir)
    assert model == exp.model
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, state.params)
    paths = explain_workdir(workdir, num_images=2, top_k_parts=2)
    assert [p.name for p in paths] == ["rollout.png", "heads.png", "parts.png"]
    assert all(p.parent == workdir / "plots" / "explain" for p in paths)
    with pytest.raises(ExplainError, match="has no config.json"):
        explain_workdir(tmp_path / "nowhere")
