"""Swin Transformer (Liu et al. 2021): patch merging, odd input sizes, stage outputs for dense
heads (the published parameter counts are in test_param_counts.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import build_model
from attn_jax.models.swin import PatchMerging, Swin


def test_patch_merging_halves_the_resolution_doubles_the_channels_in_the_official_order():
    x = jax.random.normal(jax.random.key(0), (2, 6, 10, 4))
    merge = PatchMerging()
    params = merge.init(jax.random.key(1), x)["params"]
    y = merge.apply({"params": params}, x)
    assert y.shape == (2, 3, 5, 8)
    # For a 2x2 block [[a, b], [c, d]] the concatenation is a, c, b, d (official weights load):
    # with a, c, b, d = 1, 2, 3, 4 the LayerNorm (scale 1, bias 0 at init) sees an increasing row.
    probe = jnp.array([[1.0, 3.0], [2.0, 4.0]]).reshape(1, 2, 2, 1)
    _, state = merge.apply(
        {"params": merge.init(jax.random.key(0), probe)["params"]},
        probe,
        capture_intermediates=lambda m, _: m.name == "norm",
        mutable=["intermediates"],
    )
    normed = np.asarray(state["intermediates"]["norm"]["__call__"][0])[0, 0, 0]
    assert (np.diff(normed) > 0).all(), normed


def test_input_not_a_multiple_of_the_window_runs_and_stages_are_returned():
    model = Swin(num_classes=5, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window=3)
    x = jnp.ones((2, 36, 28, 3))  # 9x7 tokens: neither side a multiple of the window 3... or 7
    # Jitted: op-by-op dispatch of a Swin compiles every small op on its own (50 s on 2 cores).
    variables = jax.jit(model.init)(jax.random.key(0), x)
    logits, aux = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 5) and np.isfinite(np.asarray(logits)).all()
    assert aux["stage1"].shape == (2, 9, 7, 16) and aux["stage2"].shape == (2, 5, 4, 32)
    headless = Swin(num_classes=0, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window=3)
    features, _ = jax.jit(headless.apply)(
        {"params": {k: v for k, v in variables["params"].items() if k != "head"}}, x
    )
    assert features.shape == (2, 32)


def test_stochastic_depth_only_in_training():
    model = Swin(
        num_classes=3, embed_dim=8, depths=(2,), num_heads=(2,), window=2, drop_path_rate=0.5
    )
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    variables = jax.jit(model.init)(jax.random.key(1), x)
    apply = jax.jit(model.apply, static_argnames="train")
    eval_a, _ = apply(variables, x)
    eval_b, _ = apply(variables, x)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, eval_a)


def test_unknown_variant_is_one_line():
    with pytest.raises(ValueError, match="unknown swin variant 'XL'; valid variants"):
        build_model({"name": "swin", "variant": "XL"})
