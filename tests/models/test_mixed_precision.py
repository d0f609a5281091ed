"""Mixed precision for every model family: `model.dtype=bfloat16` computes in bfloat16 while the
parameters (and so the optimizer state) stay float32 and the outputs come back in float32, close
to the float32 model's on the same parameters.

The models are tiny: two forward passes compiled per family.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.models import build_model

IMAGES = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32)
TOKENS = np.array([[1, 5, 7, 3, 2, 0], [1, 4, 2, 0, 0, 0]], np.int32)

FAMILIES = {
    "vit": (
        dict(name="vit", num_classes=5, patch_size=4, hidden_size=16, depth=2, num_heads=2,
             mlp_dim=32),
        (IMAGES,),
    ),
    "swin": (
        dict(name="swin", num_classes=5, patch_size=2, embed_dim=8, depths=(2,), num_heads=(2,),
             window=4),
        (IMAGES,),
    ),
    "detr": (
        dict(name="detr", num_classes=3, num_queries=4, d_model=16, num_heads=2, d_ff=24,
             num_encoder_layers=1, num_decoder_layers=1, backbone="resnet18",
             backbone_stage_sizes=(1, 1), backbone_width=8, backbone_stem="small",
             backbone_norm="group", backbone_norm_groups=4, dropout_rate=0.0),
        (IMAGES,),
    ),
    "setr": (
        dict(name="setr", num_classes=3, decoder="naive", decoder_width=8, norm_groups=4,
             encoder=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2, mlp_dim=32)),
        (IMAGES,),
    ),
    "clip": (
        dict(name="clip", embed_dim=8, patch_size=4, vision_width=16, vision_layers=1,
             vision_heads=2, vocab_size=8, context_length=6, text_width=16, text_layers=1,
             text_heads=2),
        (IMAGES, TOKENS),
    ),
    "mae": (
        dict(name="mae", encoder=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2,
             mlp_dim=32), decoder_hidden_size=16, decoder_depth=1, decoder_num_heads=2,
             decoder_mlp_dim=32),
        (IMAGES,),
    ),
    "simmim": (
        dict(name="simmim", encoder=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2,
             mlp_dim=32), mask_patch_size=8),
        (IMAGES,),
    ),
    "transformer": (
        dict(name="transformer", vocab_size=8, num_layers=1, d_model=16, d_ff=32, num_heads=2,
             max_len=8, dropout_rate=0.0),
        (TOKENS, TOKENS),
    ),
    "resnet": (
        dict(name="resnet", num_classes=5, stage_sizes=(1, 1), block="basic", width=8,
             stem="small", norm="group", norm_groups=4),
        (IMAGES,),
    ),
}  # fmt: skip


def _outputs(out) -> list[jax.Array]:
    # (logits, aux) with logits an array or DETR's dict of arrays.
    first = out[0]
    return list(first.values()) if isinstance(first, dict) else [first]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bfloat16_computes_in_bfloat16_with_float32_parameters_and_outputs(family):
    fields, inputs = FAMILIES[family]
    full = build_model(dict(fields, dtype="float32"))
    half = build_model(dict(fields, dtype="bfloat16"))
    rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}
    shapes = jax.eval_shape(lambda: half.init(rngs, *inputs))["params"]
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype("float32")}
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, shapes)
    floats = [
        x for x in jax.tree_util.tree_leaves(opt_state) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)  # Adam's moments

    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shapes
    )

    def forward(model):
        apply = jax.jit(lambda p, *xs: model.apply({"params": p}, *xs, rngs={"mask": rngs["mask"]}))
        return _outputs(apply(params, *inputs))

    reference, mixed = forward(full), forward(half)
    for want, got in zip(reference, mixed, strict=True):
        assert got.dtype == jnp.float32 and want.dtype == jnp.float32
        scale = float(np.abs(want).max()) + 1e-3
        np.testing.assert_allclose(got, want, atol=0.05 * scale, rtol=0.05)
        assert not np.array_equal(got, want)  # the computation did run in bfloat16
