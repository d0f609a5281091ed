"""`config.init_from` with a Hugging Face directory (attn_jax/train/checkpoint.py reaches the
converters of attn_jax/pretrained/): a small random ViT fills a fresh model of its architecture
exactly as `pretrained.load` converts it."""

from __future__ import annotations

import jax
import numpy as np

from attn_jax import pretrained
from attn_jax.train.checkpoint import init_variables_from, is_reference_checkpoint


def test_vit_directory_fills_the_whole_model(small_vit):
    _, directory = small_vit
    assert is_reference_checkpoint(directory)
    converted = pretrained.load(directory)
    shapes = jax.eval_shape(converted.model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)))
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
    params, _, report = init_variables_from(str(directory), fresh, {})
    got, want = jax.tree.leaves(params), jax.tree.leaves(converted.variables["params"])
    assert jax.tree.structure(params) == jax.tree.structure(converted.variables["params"])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert report.fresh_arrays == 0 and report.ignored_arrays == 0
    assert report.summary().startswith(f"init_from {directory}: loaded ")


def test_vit_directory_at_another_resolution(small_vit, capsys):
    """The 32 px directory (4x4 patches and a class token) into the same ViT at 48 px (6x6), as
    the trainer calls it: the class token kept, the grid resized as timm's
    resample_abs_pos_embed (torch's bicubic), every other leaf loaded unchanged."""
    import ml_collections
    import torch

    from attn_jax.train.loop import _variables_from

    model, directory = small_vit
    converted = pretrained.load(directory)
    shapes = jax.eval_shape(converted.model.init, jax.random.key(0), np.zeros((1, 48, 48, 3)))
    fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
    config = ml_collections.ConfigDict(
        {"init_from": str(directory), "init_into": "", "init_from_fresh": ()}
    )
    params, _ = _variables_from(config, fresh, {})
    log = capsys.readouterr().err.strip()

    theirs = model.vit.embeddings.position_embeddings.detach()  # [1, 1 + 16, 48]
    grid = theirs[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(
        grid, size=(6, 6), mode="bicubic", align_corners=False, antialias=False
    )
    want = torch.cat([theirs[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 36, 48)], dim=1)
    got = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])
    assert got.shape == (1, 37, 48)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    np.testing.assert_array_equal(got[:, 0], theirs[:, 0].numpy())

    flat = jax.tree_util.tree_leaves_with_path(params)
    same = dict(jax.tree_util.tree_leaves_with_path(converted.variables["params"]))
    for key, value in flat:
        if "pos_embedding" not in jax.tree_util.keystr(key):
            np.testing.assert_array_equal(np.asarray(value), np.asarray(same[key]))
    assert log.startswith(f"init_from {directory}: loaded ") and log.endswith(
        "resampled 1 position grid(s) bicubically "
        "(Transformer/posembed_input/pos_embedding 4x4->6x6)"
    )
