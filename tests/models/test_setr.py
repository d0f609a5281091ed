"""SETR (Zheng et al. 2021): output at the input resolution for every decoder, PUP's total
upsampling = patch size, the layers MLA reads, the Swin backbone on sizes that are not window
multiples, hand-computed parameter counts, and one-line errors.

Shapes come from `jax.eval_shape` (tracing only, no compilation) to keep the file fast."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import MODELS, build_model, count_params
from attn_jax.models.setr import SETR, SETR_VARIANTS, SegmentationShapeError, setr_kwargs

K = 5
D, WIDTH, MLA_WIDTH, MLP = 16, 8, 4, 32
IMAGES = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.float32)  # 2x3 tokens at p = 16


ENCODER = dict(patch_size=16, hidden_size=D, depth=4, num_heads=2, mlp_dim=MLP)


def tiny(encoder=None, **overrides) -> SETR:
    """A small SETR; `encoder` updates the ViT encoder's fields (or, with a Swin backbone, is
    the Swin's fields)."""
    if overrides.get("backbone") == "swin":
        fields = dict(encoder or {})
    else:
        fields = dict(ENCODER, **(encoder or {}))
    kwargs = dict(
        num_classes=K, encoder=fields, decoder_width=WIDTH, mla_width=MLA_WIDTH, norm_groups=4
    )
    return SETR(**{**kwargs, **overrides})


def abstract(model: SETR, images=IMAGES):
    """(param shapes, (logits, aux) shapes) without compiling anything."""
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    out = jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params, images)
    return params, out


def random_params(shapes, seed: int = 0):
    """Concrete parameters with the shapes of `shapes`: norms at identity, other weights random."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = path[-1].key
        if name == "scale":
            return jnp.ones(s.shape, s.dtype)
        if name == "bias":
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def encoder_params(d: int, depth: int, mlp: int, patch: int, tokens: int, channels: int = 3):
    """Embedding conv + position embedding + per-layer (LN, attention, LN, MLP) + final LN."""
    block = 2 * d + (4 * d * d + 4 * d) + 2 * d + (d * mlp + mlp + mlp * d + d)
    return (patch * patch * channels * d + d) + tokens * d + depth * block + 2 * d


def test_registered_and_built_by_name():
    assert MODELS["setr"].module is SETR
    model = build_model({"name": "setr", "variant": "digits", "num_classes": 11})
    assert model.patch_size == 4 and model.num_classes == 11


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
def test_logits_have_the_input_resolution_for_every_decoder(decoder):
    _, (logits, aux) = abstract(tiny(decoder=decoder))
    assert logits.shape == (2, 32, 48, K) and logits.dtype == jnp.float32
    assert aux["tokens"].shape == (2, 6, D)
    assert all(f.shape == (2, 2, 3, D) for f in aux["features"])
    assert len(aux["features"]) == (4 if decoder == "mla" else 1)


@pytest.mark.parametrize("patch", [16, 4])
def test_pup_upsamples_by_the_patch_size_in_log2_p_doublings(patch):
    images = jax.ShapeDtypeStruct((1, 2 * patch, 3 * patch, 3), jnp.float32)
    _, (logits, aux) = abstract(tiny(decoder="pup", encoder={"patch_size": patch}), images)
    maps = aux["decoder_maps"]
    assert len(maps) == int(math.log2(patch))
    assert [m.shape[1:3] for m in maps] == [(2 * 2**i, 3 * 2**i) for i in range(len(maps))]
    # The last stage's x2 (after the classifier) lands exactly on the input size: no resize.
    assert logits.shape[1:3] == (2 * maps[-1].shape[1], 2 * maps[-1].shape[2])
    assert logits.shape[1:3] == images.shape[1:3]


def test_mla_reads_the_four_evenly_spaced_layers():
    model = tiny(decoder="mla", encoder={"depth": 8})
    assert model.mla_layer_indices == (2, 4, 6, 8)
    assert SETR(num_classes=2, decoder="mla").mla_layer_indices == (6, 12, 18, 24)  # SETR-L
    shapes, _ = abstract(model)
    params = random_params(shapes)
    images = jnp.asarray(np.random.default_rng(1).normal(size=IMAGES.shape), jnp.float32)
    features = jax.jit(lambda p: model.apply({"params": p}, images)[1]["features"])
    base = features(params)

    def changed_streams(block: int) -> list[bool]:
        perturbed = jax.tree_util.tree_map(lambda x: x, params)
        mlp = perturbed["encoder"]["Transformer"][f"encoderblock_{block}"]["MlpBlock_3"]["Dense_1"]
        # A random change: a constant one would shift every channel alike, which the next
        # LayerNorm removes.
        noise = np.random.default_rng(block).normal(0.0, 0.5, mlp["kernel"].shape)
        mlp["kernel"] = mlp["kernel"] + jnp.asarray(noise, jnp.float32)
        return [not np.allclose(a, b) for a, b in zip(base, features(perturbed), strict=True)]

    # Block index 4 is layer 5: the streams of layers 2 and 4 cannot see it, 6 and 8 do.
    assert changed_streams(4) == [False, False, True, True]
    assert changed_streams(0) == [True, True, True, True]
    assert changed_streams(7) == [False, False, False, True]


def test_swin_backbone_on_a_size_that_is_no_multiple_of_the_window():
    model = tiny(
        backbone="swin",
        decoder="mla",
        encoder=dict(
            patch_size=4, embed_dim=8, depths=(2, 1, 1, 1), num_heads=(1, 1, 2, 2), window=3
        ),
    )
    images = jax.ShapeDtypeStruct((2, 40, 36, 3), jnp.float32)  # 10x9 tokens; window 3... 7
    params, (logits, aux) = abstract(model, images)
    assert logits.shape == (2, 40, 36, K)
    assert [f.shape for f in aux["features"]] == [
        (2, 10, 9, 8),
        (2, 5, 5, 16),
        (2, 3, 3, 32),
        (2, 2, 2, 64),
    ]
    assert "encoder" in params and "head" not in params["encoder"]


def test_naive_decoder_parameters_counted_by_hand():
    params, _ = abstract(tiny(decoder="naive"))
    encoder = encoder_params(D, 4, MLP, 16, tokens=6)
    # 1x1 conv D -> C with bias, GroupNorm scale + bias, 1x1 classifier C -> K with bias.
    decoder = (D * WIDTH + WIDTH) + 2 * WIDTH + (WIDTH * K + K)
    assert count_params(params["decoder"]) == decoder
    assert count_params(params) == encoder + decoder


def test_pup_and_mla_decoder_parameters_counted_by_hand():
    pup, _ = abstract(tiny(decoder="pup"))
    convs = (9 * D * WIDTH + WIDTH + 2 * WIDTH) + 3 * (9 * WIDTH * WIDTH + WIDTH + 2 * WIDTH)
    assert count_params(pup["decoder"]) == convs + WIDTH * K + K

    mla, _ = abstract(tiny(decoder="mla"))
    per_stream = (
        (D * WIDTH + 2 * WIDTH)  # 1x1 reduce (no bias) + GroupNorm
        + (9 * WIDTH * WIDTH + 2 * WIDTH)  # 3x3 after the top-down sum
        + (9 * WIDTH * MLA_WIDTH + 2 * MLA_WIDTH)
        + (9 * MLA_WIDTH * MLA_WIDTH + 2 * MLA_WIDTH)
    )
    assert count_params(mla["decoder"]) == 4 * per_stream + 9 * 4 * MLA_WIDTH * K + K
    # Layers 1-3 get their own LayerNorm; layer 4 is normed by the encoder's final one.
    assert sorted(k for k in mla if k.startswith("mla_norm")) == [
        f"mla_norm_{i}" for i in (0, 1, 2)
    ]
    assert (
        count_params(mla)
        == encoder_params(D, 4, MLP, 16, 6) + count_params(mla["decoder"]) + 3 * 2 * D
    )


def test_auxiliary_heads_give_full_resolution_logits():
    params, (_, aux) = abstract(tiny(decoder="pup", aux_layers=(2, 4)))
    assert [a.shape for a in aux["aux_logits"]] == [(2, 32, 48, K)] * 2
    head = 2 * D + (D * WIDTH + WIDTH) + 2 * WIDTH + (WIDTH * K + K)  # LayerNorm + naive head
    assert count_params(params["aux_head_0"]) + count_params(params["aux_norm_0"]) == head


def test_l16_encoder_has_vit_l16_parameters_without_class_token_and_head():
    assert setr_kwargs("L/16") == dict(backbone="vit", encoder=dict(variant="L/16"))
    model = build_model({"name": "setr", "variant": "L/16", "decoder": "naive", "num_classes": 19})
    fields = model.encoder_fields()
    assert (fields["hidden_size"], fields["depth"], fields["num_heads"]) == (1024, 24, 16)
    assert (fields["mlp_dim"], model.patch_size, fields["pool"]) == (4096, 16, "gap")
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
    encoder = count_params(params["encoder"])
    # ViT-L/16 at 224 px, 1000 classes: 304,326,632 (official models_test.py), minus the class
    # token, its position embedding and the 1024 x 1000 head.
    assert encoder == 304_326_632 - 1024 - 1024 - (1024 * 1000 + 1000)


def test_every_variant_builds():
    for name in SETR_VARIANTS:
        model = build_model({"name": "setr", "variant": name, "num_classes": 11})
        assert model.decoder in ("naive", "pup", "mla")


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(decoder="upernet"), "decoder='upernet'"),
        (dict(backbone="resnet"), "backbone='resnet'"),
        (dict(decoder="pup", encoder={"patch_size": 12}), "power of two"),
        (dict(encoder={"window": 7}), "unknown field(s) ['window'] in SETR's model.encoder"),
        (dict(backbone="swin", decoder="pup"), "decoder='mla'"),
        (dict(decoder="mla", mla_layers=(1, 2, 3, 9)), "1..4"),
        (dict(aux_layers=(0,)), "aux_layers"),
    ],
)
def test_bad_configs_fail_in_one_line(overrides, words):
    with pytest.raises(ValueError, match="SETR") as info:
        tiny(**overrides)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_image_not_divisible_by_the_patch_names_shapes_and_fix():
    images = jax.ShapeDtypeStruct((1, 40, 48, 3), jnp.float32)
    with pytest.raises(SegmentationShapeError) as info:
        jax.eval_shape(tiny().init, jax.random.key(0), images)
    message = str(info.value)
    assert "(1, 40, 48, 3)" in message and "48x48" in message and "\n" not in message
