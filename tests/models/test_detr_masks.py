"""DETR's mask head (Carion et al. 2020, sec. 4.4) and its Swin backbone (Liu et al. 2021):
parameter counts by formula, mask shapes at the first stage's stride, attention maps that are one
softmax per query and ignore padding, the per-image share of the first conv equal to the conv of
the per-query concatenation, and presets without masks unchanged."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import build_model, count_params
from attn_jax.models.detr import DETR, MaskAttentionMaps, QueryMapConv
from attn_jax.models.swin import PUBLISHED_PARAMS as SWIN_PARAMS

# Two basic stages on a stride-1 stem: a 16x16 image gives a 16x16 stage-1 and an 8x8 stage-2 map.
TINY = dict(
    num_classes=3,
    num_queries=5,
    d_model=16,
    num_heads=2,
    d_ff=24,
    num_encoder_layers=1,
    num_decoder_layers=2,
    backbone="resnet18",
    backbone_stage_sizes=(1, 1),
    backbone_width=8,
    backbone_stem="small",
    backbone_norm="group",
    backbone_norm_groups=4,
    mask_head=True,
)
# The same transformer on a two-stage Swin of 2x2 patches (8x8 then 4x4 maps on 16x16 images).
TINY_SWIN = dict(
    {k: v for k, v in TINY.items() if not k.startswith("backbone")},
    backbone="swin",
    backbone_swin=dict(
        patch_size=2, window=4, embed_dim=8, depths=(1, 1), num_heads=(2, 2), drop_path_rate=0.0
    ),
)
B, H, W = 2, 16, 16


def _params(model, *args):
    return jax.eval_shape(model.init, jax.random.key(0), *args)["params"]


def _random_params(model, *args) -> dict:
    """Parameters drawn on the host (norm scales 1, the rest scaled normals): compiling `init`
    would take longer than the tests that use them."""
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if path[-1].key == "scale":
            return jnp.ones(leaf.shape)
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 10
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, _params(model, *args))


def mask_head_params(d: int, heads: int, fpn_channels: list[int]) -> int:
    """The mask head's parameters from its layer shapes (module docstring of models/detr.py):
    query and key maps d -> d; with D = d + M, lay1 3x3 D -> D and lay2 3x3 D -> d/2, each with a
    GroupNorm (2 per channel); per earlier map (deepest first) with C_i channels and width
    w_i = d / 2^i an adapter 1x1 C_i -> w_i and a 3x3 w_i -> w_i / 2 with its GroupNorm; and
    the output 3x3 to one channel."""
    big = d + heads
    total = 2 * (d * d + d)
    total += 9 * big * big + big + 2 * big
    total += 9 * big * (d // 2) + d // 2 + 2 * (d // 2)
    width = d // 2
    for channels in fpn_channels:
        total += channels * width + width
        total += 9 * width * (width // 2) + width // 2 + 2 * (width // 2)
        width //= 2
    return total + 9 * width + 1


def test_the_mask_head_adds_the_count_of_its_formula():
    images = jnp.zeros((1, 64, 64, 1))
    plain = _params(build_model(dict(name="detr", variant="digits", num_classes=10)), images)
    masks = _params(
        build_model(dict(name="detr", variant="digits", num_classes=10, mask_head=True)), images
    )
    # "digits": d = 64, 4 heads, one earlier ResNet stage of 32 channels.
    added = mask_head_params(64, 4, [32])
    assert added == 75_677
    assert count_params(masks) - count_params(plain) == added
    assert count_params(plain) == 325_615  # the preset without masks is unchanged
    # DETR-R50's head: d = 256, 8 heads, stages 3, 2, 1 of 1024, 512, 256 channels.
    r50 = build_model(dict(name="detr", variant="R50", num_classes=91, mask_head=True))
    params = _params(r50, jnp.zeros((1, 64, 64, 3)), jnp.ones((1, 64, 64), bool))
    head = count_params(params["bbox_attention"]) + count_params(params["mask_head"])
    assert head == mask_head_params(256, 8, [1024, 512, 256]) == 1_333_657


def test_detr_swin_t_has_the_count_of_its_parts():
    model = build_model(dict(name="detr", variant="swin_T", num_classes=80))
    # 224 x 224: every stage map is at least one 7x7 window, so the bias tables have full size.
    params = _params(model, jnp.zeros((1, 224, 224, 3)), jnp.ones((1, 224, 224), bool))
    d, k, q = 256, 80, 100
    swin_t = SWIN_PARAMS["T"] - (768 * 1000 + 1000)  # Swin-T without its ImageNet head
    heads = (d * (k + 1) + k + 1) + 2 * (d * d + d) + (d * 4 + 4) + q * d
    input_proj = 768 * d + d
    stage_norm = 2 * 768
    transformer = 17_363_456  # as DETR-R50's (tests/models/test_detr.py)
    assert count_params(params["backbone"]) == swin_t
    assert count_params(params) == swin_t + stage_norm + input_proj + transformer + heads
    assert count_params(params) == 45_260_239


@pytest.fixture(scope="module", params=["resnet", "swin"])
def tiny(request):
    """(model, params, images, pixel_mask, outputs, aux) of a tiny DETR with masks."""
    model = DETR(**(TINY if request.param == "resnet" else TINY_SWIN))
    images = jax.random.normal(jax.random.key(0), (B, H, W, 3))
    mask = np.ones((B, H, W), bool)
    mask[0, 12:] = False  # image 0: its bottom 4 rows are padding
    params = _random_params(model, images, jnp.asarray(mask))
    outputs, aux = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))(
        params, images, jnp.asarray(mask)
    )
    return request.param, model, params, images, mask, outputs, aux


def test_masks_come_at_the_first_stage_stride_with_attention_over_real_cells(tiny):
    kind, model, _, _, mask, outputs, aux = tiny
    # ResNet: stride-1 stem, stage 1 at 16x16 and stage 2 (the transformer's) at 8x8; Swin with
    # 2x2 patches: 8x8 and 4x4.
    side = 16 if kind == "resnet" else 8
    assert outputs["masks"].shape == (B, 5, side, side)
    assert outputs["masks"].dtype == jnp.float32 and np.isfinite(outputs["masks"]).all()
    assert outputs["logits"].shape == (B, 5, 4) and outputs["boxes"].shape == (B, 5, 4)
    attention = np.asarray(aux["mask_attention"])  # [B, Q, M, h, w]
    h = side // 2
    assert attention.shape == (B, 5, 2, h, h)
    # One softmax over heads and cells together, per query; padding rows of image 0 get none.
    np.testing.assert_allclose(attention.sum((2, 3, 4)), 1.0, rtol=1e-5)
    padded_rows = aux["feature_mask"][0].any(-1) == 0
    assert padded_rows.any() and (attention[0][:, :, np.asarray(padded_rows)] == 0).all()


def test_masks_change_nothing_else(tiny):
    kind, model, params, images, mask, outputs, _ = tiny
    fields = {f: getattr(model, f) for f in ("num_classes", "num_queries", "d_model")}
    plain = model.clone(mask_head=False)
    assert fields["num_queries"] == 5
    kept = {k: v for k, v in params.items() if k not in ("bbox_attention", "mask_head")}
    if kind == "swin":  # without masks only the last stage's norm exists
        kept.pop("stage_norm1")
    out, _ = jax.jit(lambda p, x, m: plain.apply({"params": p}, x, m))(
        kept, images, jnp.asarray(mask)
    )
    np.testing.assert_allclose(out["logits"], outputs["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["boxes"], outputs["boxes"], rtol=1e-5, atol=1e-6)


def test_first_conv_split_equals_the_conv_of_the_concatenation():
    features = jax.random.normal(jax.random.key(0), (2, 5, 6, 8))
    maps = jax.random.normal(jax.random.key(1), (2, 3, 5, 6, 4))
    conv = QueryMapConv(12)
    params = {"params": _random_params(conv, features, maps)}  # a non-zero bias too
    split = conv.apply(params, features, maps)
    stacked = jnp.concatenate([jnp.broadcast_to(features[:, None], (2, 3, 5, 6, 8)), maps], -1)
    full = nn.Conv(12, (3, 3), padding=1).apply(params, stacked.reshape(6, 5, 6, 12))
    np.testing.assert_allclose(split, full.reshape(split.shape), rtol=1e-4, atol=1e-4)


def test_attention_maps_scale_by_the_head_width():
    # One head, identity projections: the logit of a cell is q . k / sqrt(d).
    module = MaskAttentionMaps(1)
    q = jnp.array([[[1.0, 0.0]]])  # [B=1, Q=1, d=2]
    memory = jnp.array([[[[2.0, 0.0], [0.0, 0.0]]]])  # [1, h=1, w=2, 2]
    params = {
        "params": {
            "query": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)},
            "key": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)},
        }
    }
    weights = module.apply(params, q, memory, jnp.ones((1, 1, 2), bool))
    logit = 2.0 / np.sqrt(2.0)
    expected = np.exp([logit, 0.0]) / np.exp([logit, 0.0]).sum()
    np.testing.assert_allclose(np.asarray(weights).reshape(-1), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(backbone_swin={"depths": (2,)}), "set backbone='swin'"),
        (dict(backbone="swin", backbone_swin={"depth": 2}), "unknown field"),
        (dict(backbone="swin_Q"), "not a ResNet variant or 'swin'"),
    ],
)
def test_bad_backbone_configs_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as info:
        DETR(**dict({k: v for k, v in TINY.items() if k != "backbone"}, **fields))
    assert "\n" not in str(info.value)
