"""SimMIM and MAE (models/mim.py) and the ViT options they use (mask token, kept patches, fixed
sin-cos position embedding, no head): masking counts, inverse permutations, PixelShuffle's channel
order and invariances to the pixels a model must not see (MAE-B's parameter counts are in
test_param_counts.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.positional import sincos_2d_posemb
from attn_jax.models import MODELS, build_model
from attn_jax.models.mim import (
    MAE,
    SimMIM,
    depth_to_space,
    patchify,
    random_masking,
    simmim_mask,
    unpatchify,
    unshuffle,
)
from attn_jax.models.vit import ViT

ENCODER = dict(patch_size=2, hidden_size=16, depth=1, num_heads=2, mlp_dim=32)
VIT = dict(ENCODER, num_classes=0)
IMAGES = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 1), np.float32))
KEY = jax.random.key(3)


def random_params(model, *args, **kwargs):
    """Parameters of the right shapes without compiling `init`: every property tested here holds
    for any parameter values, and tiny models run faster op by op than they compile."""
    abstract = jax.eval_shape(lambda k: model.init(k, *args, **kwargs), KEY)["params"]
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), abstract
    )


# -- pure functions -------------------------------------------------------------------------------
def test_random_masking_keeps_exactly_the_fraction_per_sample_and_differs_between_samples():
    keep, mask, ids_restore = random_masking(KEY, 8, 196, 0.75)
    assert keep.shape == (8, 49) and keep.dtype == jnp.int32  # MAE's 224/16: 49 of 196 kept
    mask, keep = np.asarray(mask), np.asarray(keep)
    np.testing.assert_array_equal(mask.sum(1), 147)
    for b in range(8):  # the kept patches are exactly the unmasked ones
        np.testing.assert_array_equal(np.sort(keep[b]), np.flatnonzero(mask[b] == 0))
    assert len({tuple(np.sort(k)) for k in keep}) == 8
    assert np.sort(np.asarray(ids_restore), 1).tolist() == [list(range(196))] * 8
    assert random_masking(KEY, 1, 16, 0.6)[0].shape == (1, 6)  # int(16 * 0.4)


def test_unshuffle_restores_the_patch_order():
    x = jnp.arange(2 * 10 * 3, dtype=jnp.float32).reshape(2, 10, 3)
    keep, mask, ids_restore = random_masking(KEY, 2, 10, 0.7)
    ids_shuffle = jnp.argsort(ids_restore, axis=1)
    np.testing.assert_array_equal(
        unshuffle(jnp.take_along_axis(x, ids_shuffle[..., None], 1), ids_restore), x
    )
    # MAE's decoder input: kept tokens first, fillers after; unshuffled, each kept token is back
    # at its patch and the fillers sit exactly on the masked patches.
    kept = jnp.take_along_axis(x, keep[..., None], 1)
    full = unshuffle(jnp.concatenate([kept, jnp.full((2, 7, 3), -1.0)], 1), ids_restore)
    np.testing.assert_array_equal(full, jnp.where(mask[..., None] > 0, -1.0, x))


@pytest.mark.parametrize(
    "image, patch, unit, units, masked", [(224, 16, 32, 49, 30), (192, 4, 32, 36, 22)]
)
def test_simmim_mask_counts_units_and_upsamples_to_the_patch_grid(
    image, patch, unit, units, masked
):
    # FAITHFULNESS 13: 224 px ViT 49 units / 30 masked; 192 px Swin 36 units / 22 masked.
    mask = np.asarray(simmim_mask(KEY, 3, (image, image), patch, unit, 0.6))
    g, s = image // patch, unit // patch
    assert mask.shape == (3, g * g) and mask.dtype == bool
    coarse = mask.reshape(3, g // s, s, g // s, s)
    assert np.all(coarse == coarse[:, :, :1, :, :1])  # constant over each mask unit
    assert coarse[:, :, 0, :, 0].reshape(3, -1).shape[1] == units
    np.testing.assert_array_equal(coarse[:, :, 0, :, 0].sum((1, 2)), masked)
    assert len({m.tobytes() for m in mask}) == 3


@pytest.mark.parametrize(
    "patch, unit, message", [(2, 3, "not a multiple of patch_size"), (2, 6, "does not divide")]
)
def test_simmim_mask_bad_sizes_are_one_line_errors(patch, unit, message):
    with pytest.raises(ValueError, match=message) as err:
        simmim_mask(KEY, 1, (8, 8), patch, unit, 0.6)
    assert "\n" not in str(err.value)


def test_depth_to_space_is_pixel_shuffle_channel_order():
    r, c = 3, 2
    x = np.random.default_rng(1).standard_normal((2, 4, 5, c * r * r)).astype(np.float32)
    expected = np.zeros((2, 4 * r, 5 * r, c), np.float32)
    for h in range(4):
        for w in range(5):
            for ch in range(c):
                for i in range(r):
                    for j in range(r):
                        expected[:, h * r + i, w * r + j, ch] = x[:, h, w, ch * r * r + i * r + j]
    np.testing.assert_array_equal(depth_to_space(jnp.asarray(x), r), expected)


def test_unpatchify_inverts_patchify_in_row_column_channel_order():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 6, 10, 3), np.float32))
    patches = patchify(x, 2)  # [2, 15, 12]
    np.testing.assert_array_equal(patches[:, 1, :3], x[:, 0, 2])  # (p, q, c): channels fastest
    np.testing.assert_array_equal(patches[:, 1, 3:6], x[:, 0, 3])
    np.testing.assert_array_equal(unpatchify(patches, 2, (3, 5)), x)
    square = x[:, :6, :6]
    np.testing.assert_array_equal(unpatchify(patchify(square, 2), 2), square)


# -- the ViT options ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_params():
    return random_params(ViT(**VIT, posemb="sincos2d"), IMAGES, mask=jnp.zeros((2, 16), bool))


def test_sincos_posemb_is_the_learned_one_frozen_to_the_table(vit_params):
    assert "posembed_input" not in vit_params["Transformer"]
    learned = dict(vit_params, Transformer=dict(vit_params["Transformer"]))
    table = jnp.asarray(sincos_2d_posemb(4, 4, 16, class_token=True))
    learned["Transformer"]["posembed_input"] = {"pos_embedding": table}
    fixed, _ = ViT(**VIT, posemb="sincos2d").apply({"params": vit_params}, IMAGES)
    same, _ = ViT(**VIT).apply({"params": learned}, IMAGES)
    np.testing.assert_allclose(fixed, same, atol=1e-6)


def test_no_head_returns_the_features(vit_params):
    assert "head" not in vit_params
    features, aux = ViT(**VIT, posemb="sincos2d").apply({"params": vit_params}, IMAGES)
    assert features.shape == (2, 16)
    np.testing.assert_array_equal(features, aux["pre_logits"])
    np.testing.assert_array_equal(features, aux["tokens"][:, 0])


def test_mask_token_replaces_masked_patches_only(vit_params):
    model = ViT(**VIT, posemb="sincos2d")

    def apply(x, m):
        return model.apply({"params": vit_params}, x, mask=m)[1]["tokens"]

    none = jnp.zeros((2, 16), bool)
    np.testing.assert_allclose(
        apply(IMAGES, none), model.apply({"params": vit_params}, IMAGES)[1]["tokens"], atol=1e-6
    )
    # All patches masked: the encoder sees mask tokens + positions only, whatever the pixels.
    everything = jnp.ones((2, 16), bool)
    np.testing.assert_allclose(apply(IMAGES, everything), apply(-3 * IMAGES, everything), atol=1e-6)
    # Pixels of masked patches do not matter; pixels of visible ones do.
    first = none.at[:, 0].set(True)  # patch 0 = pixels [0:2, 0:2]
    changed = IMAGES.at[:, 0, 0].add(5.0)
    np.testing.assert_allclose(apply(changed, first), apply(IMAGES, first), atol=1e-6)
    assert not np.allclose(apply(changed, none), apply(IMAGES, none), atol=1e-3)


def test_keep_encodes_the_kept_patches_with_their_own_positions(vit_params):
    model = ViT(**VIT, posemb="sincos2d")

    def apply(x, k):
        return model.apply({"params": vit_params}, x, keep=k)[1]["tokens"]

    everything = jnp.tile(jnp.arange(16)[None], (2, 1))
    full = model.apply({"params": vit_params}, IMAGES)[1]["tokens"]
    np.testing.assert_allclose(apply(IMAGES, everything), full, atol=1e-6)
    keep = jnp.asarray([[5, 1, 9, 12], [0, 15, 7, 2]])  # K = 4, as MAE_TINY keeps
    tokens = apply(IMAGES, keep)
    assert tokens.shape == (2, 5, 16)
    changed = IMAGES.at[:, 0, 6].add(5.0)  # patch 3, kept by neither example
    np.testing.assert_allclose(apply(changed, keep), tokens, atol=1e-6)
    changed = IMAGES.at[:, 2, 2].add(5.0)  # patch 5: kept by example 0 only
    moved = np.abs(np.asarray(apply(changed, keep) - tokens)).max(axis=(1, 2))
    assert moved[0] > 1e-3 and moved[1] < 1e-6


def test_vit_rejects_bad_masks_and_sizes_in_one_line(vit_params):
    model = ViT(**VIT, posemb="sincos2d")
    for kwargs, message in (
        (dict(mask=jnp.zeros((2, 15), bool)), "mask has shape"),
        (dict(keep=jnp.zeros((3, 4), jnp.int32)), "keep has shape"),
    ):
        with pytest.raises(ValueError, match=message) as err:
            model.apply({"params": vit_params}, IMAGES, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="divisible by 4"):
        ViT(**dict(VIT, hidden_size=18, num_heads=2), posemb="sincos2d")
    with pytest.raises(ValueError, match="negative"):
        ViT(**dict(VIT, num_classes=-1))


# -- SimMIM ---------------------------------------------------------------------------------------
SIMMIM = SimMIM(encoder=ENCODER, mask_patch_size=4, mask_ratio=0.6)


@pytest.fixture(scope="module")
def simmim_params():
    return random_params(SIMMIM, IMAGES)


def test_simmim_parameter_paths(simmim_params):
    p = simmim_params
    assert set(p) == {"encoder", "decoder"}
    assert set(p["encoder"]) == {"embedding", "cls", "Transformer", "mask_token"}
    assert "posembed_input" in p["encoder"]["Transformer"]  # the model's default: learned
    assert p["decoder"]["kernel"].shape == (1, 1, 16, 4)  # 1x1 conv to P * P * C


def test_simmim_decoder_is_linear_per_token_then_pixel_shuffle(simmim_params):
    rec, aux = SIMMIM.apply({"params": simmim_params}, IMAGES, rngs={"mask": KEY})
    assert rec.shape == IMAGES.shape
    mask = np.asarray(aux["mask"])
    assert mask.shape == (2, 16) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), 12)  # ceil(4 units * 0.6) = 3 units of 4 patches
    np.testing.assert_array_equal(
        aux["pixel_mask"][..., 0], np.kron(mask.reshape(2, 4, 4), np.ones((2, 2)))
    )
    kernel, bias = simmim_params["decoder"]["kernel"][0, 0], simmim_params["decoder"]["bias"]
    tokens = aux["tokens"].reshape(2, 4, 4, 16)  # class token dropped
    np.testing.assert_allclose(rec, depth_to_space(tokens @ kernel + bias, 2), atol=1e-5)


def test_simmim_masks_come_from_the_mask_stream(simmim_params):
    def mask(key):
        return SIMMIM.apply({"params": simmim_params}, IMAGES, rngs={"mask": key})[1]["mask"]

    np.testing.assert_array_equal(mask(KEY), mask(KEY))
    assert not all(np.array_equal(mask(KEY), mask(jax.random.key(s))) for s in range(3))


def test_simmim_bad_fields_are_one_line_errors():
    with pytest.raises(ValueError, match="not a multiple of patch_size") as err:
        SimMIM(encoder=ENCODER, mask_patch_size=3)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown field 'mask_patch'"):
        build_model({"name": "simmim", "encoder": ENCODER, "mask_patch": 4})


# -- MAE ------------------------------------------------------------------------------------------
MAE_TINY = MAE(
    encoder=ENCODER,
    mask_ratio=0.75,
    decoder_hidden_size=16,  # the encoder's widths: op by op, their compiled kernels are reused
    decoder_depth=1,
    decoder_num_heads=2,
    decoder_mlp_dim=32,
)


@pytest.fixture(scope="module")
def mae_apply():
    def apply(p, x, k):
        return MAE_TINY.apply({"params": p}, x, rngs={"mask": k})

    return random_params(MAE_TINY, IMAGES), apply


def test_mae_shapes_and_names(mae_apply):
    params, apply = mae_apply
    pred, aux = apply(params, IMAGES, KEY)
    assert pred.shape == (2, 16, 4)  # N patches x P*P*C
    assert aux["tokens"].shape == (2, 5, 16)  # class token + int(16 * 0.25) kept patches
    np.testing.assert_array_equal(np.asarray(aux["mask"]).sum(1), 12)
    assert "posembed_input" not in params["encoder"]["Transformer"]  # fixed sin-cos
    assert {"decoder_embed", "decoder_mask_token", "decoder_norm", "decoder_pred"} <= set(params)
    assert "mask_token" not in params["encoder"]


def test_mae_prediction_ignores_the_pixels_of_removed_patches(mae_apply):
    params, apply = mae_apply
    pred, aux = apply(params, IMAGES, KEY)
    removed = np.asarray(aux["mask"]) > 0
    pixel_removed = np.kron(removed.reshape(2, 4, 4), np.ones((2, 2)))[..., None] > 0
    noise = jnp.asarray(np.random.default_rng(5).standard_normal(IMAGES.shape), jnp.float32)
    np.testing.assert_allclose(
        apply(params, jnp.where(pixel_removed, noise, IMAGES), KEY)[0], pred, atol=1e-5
    )
    assert not np.allclose(
        apply(params, jnp.where(pixel_removed, IMAGES, noise), KEY)[0], pred, atol=1e-3
    )


def test_registry_and_variant_errors():
    assert MODELS["mae"].module is MAE and MODELS["simmim"].module is SimMIM
    model = build_model({"name": "simmim", "variant": "B/16", "mask_ratio": 0.5})
    assert model.mask_patch_size == 32 and model.mask_ratio == 0.5
    assert model.encoder_fields()["hidden_size"] == 768 and model.patch_size == 16
    # A nested override merges into the variant's encoder instead of replacing it.
    small = build_model({"name": "mae", "variant": "B/16", "encoder": {"depth": 2}})
    assert small.encoder_fields()["depth"] == 2 and small.encoder_fields()["hidden_size"] == 768
    with pytest.raises(ValueError, match="unknown MAE variant 'B/15'") as err:
        build_model({"name": "mae", "variant": "B/15"})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="mask_ratio"):
        MAE(encoder=ENCODER, mask_ratio=1.0)
    with pytest.raises(ValueError, match="encoder misses 'mlp_dim'"):
        MAE(encoder=dict(ENCODER, mlp_dim=None))
    assert math.isclose(build_model({"name": "mae", "variant": "L/16"}).mask_ratio, 0.75)
