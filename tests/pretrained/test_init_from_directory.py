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
