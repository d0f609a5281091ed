"""DETR (Carion et al. 2020): the paper's parameter counts, a small count by formula, output
shapes, positions on queries and keys only, the shared decoder norm, parallel (permutation-
equivariant) decoding of the object queries, and padding that changes nothing."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import build_model, count_params
from attn_jax.models.detr import (
    DETR,
    PUBLISHED_PARAMS,
    DetrTransformer,
    resize_mask_nearest,
)
from attn_jax.train.optim import trainable_param_count

# Two basic stages on a stride-1 stem: a 16x16 image gives an 8x8 map of 64 cells.
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
)
B, H, W = 2, 16, 16


def _random_params(module: nn.Module, *args) -> dict:
    """Parameters of `module` drawn on the host: norm scales 1, other leaves random (biases too,
    so that no test passes because a bias happens to be zero). Compiling `init` would take
    longer than every test below together."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)["params"]
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if path[-1].key == "scale":
            return jnp.ones(leaf.shape)
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 10
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny():
    """(model, params, images, pixel_mask, jitted apply) shared by the tests below."""
    model = DETR(**TINY)
    images = jax.random.normal(jax.random.key(0), (B, H, W, 3))
    # Image 0 is real on its top-left 11 x 13 pixels, image 1 everywhere.
    mask = np.ones((B, H, W), bool)
    mask[0, 11:] = False
    mask[0, :, 13:] = False
    params = _random_params(model, images, jnp.asarray(mask))
    apply = jax.jit(lambda p, x, m: model.apply({"params": p}, x, m))
    return model, params, images, jnp.asarray(mask), apply


@pytest.fixture(scope="module")
def transformer():
    """(module, params, src, pos, valid, queries): the encoder-decoder alone, 12 memory cells."""
    module = DetrTransformer(num_heads=2, d_ff=24, num_encoder_layers=2, num_decoder_layers=2)
    ks = jax.random.split(jax.random.key(0), 4)
    src = jax.random.normal(ks[0], (2, 12, 16))
    pos = jax.random.normal(ks[1], (2, 12, 16))
    queries = jax.random.normal(ks[2], (3, 16))
    valid = jnp.arange(12)[None, :] < jnp.array([[7], [12]])  # image 0: 5 padded cells
    params = _random_params(module, src, pos, valid, queries)
    return module, params, src, pos, valid, queries


def test_r50_has_the_papers_parameter_counts():
    model = build_model(dict(name="detr", variant="R50", num_classes=91))
    variables = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.ones((1, 64, 64), bool)
    )
    params = variables["params"]
    assert count_params(params) == PUBLISHED_PARAMS["R50"]["params"] == 41_524_768
    # Frozen batch norm: 4 constants per normalised channel of ResNet-50, none of them params.
    assert count_params(variables["batch_stats"]) == 4 * 26_560
    parts = {k: count_params(v) for k, v in params.items()}
    assert parts["transformer"] == 17_363_456
    assert parts["backbone"] == 23_454_912
    freeze = {"backbone": 0.1, "backbone/stem": 0.0, "backbone/stage1": 0.0}
    trainable = trainable_param_count({"lr_multipliers": freeze}, params)
    assert trainable == PUBLISHED_PARAMS["R50"]["trainable"] == 41_302_368


def test_a_small_config_has_the_count_of_the_formula():
    fields = dict(TINY, backbone_norm="frozen_batch", num_encoder_layers=2, num_decoder_layers=3)
    model = DETR(**fields)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, H, W, 3)))["params"]
    d, f, k, q, w = 16, 24, 3, 5, 8
    # Stem 3x3x3xw; stage 1: two 3x3 w->w; stage 2: 3x3 w->2w, 3x3 2w->2w, 1x1 w->2w shortcut.
    backbone = 27 * w + 18 * w * w + 18 * w * w + 36 * w * w + 2 * w * w
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    encoder = 2 * (attention + ffn + 2 * 2 * d)
    decoder = 3 * (2 * attention + ffn + 3 * 2 * d) + 2 * d  # + the shared final norm
    heads = (d * (k + 1) + k + 1) + 2 * (d * d + d) + (d * 4 + 4) + q * d
    input_proj = 2 * w * d + d
    assert count_params(params) == backbone + input_proj + encoder + decoder + heads == 19_176


def test_outputs_shapes_ranges_and_layer_outputs(tiny):
    model, params, images, mask, apply = tiny
    out, aux = apply(params, images, mask)
    assert out["logits"].shape == (B, 5, 4) and out["boxes"].shape == (B, 5, 4)
    assert aux["layer_logits"].shape == (2, B, 5, 4) and aux["layer_boxes"].shape == (2, B, 5, 4)
    np.testing.assert_array_equal(aux["layer_logits"][-1], out["logits"])
    np.testing.assert_array_equal(aux["layer_boxes"][-1], out["boxes"])
    boxes = np.asarray(aux["layer_boxes"])
    assert ((boxes > 0) & (boxes < 1)).all()
    assert aux["features"].shape == (B, 8, 8, 16)
    # The 11 x 13 real pixels of image 0 cover rows 0..5 and columns 0..6 of the 8x8 map.
    expected = np.zeros((8, 8), bool)
    expected[:6, :7] = True
    np.testing.assert_array_equal(aux["feature_mask"][0], expected)
    assert aux["feature_mask"][1].all()


def test_padded_pixels_do_not_change_any_output(tiny):
    _, params, images, mask, apply = tiny
    noise = 100.0 * jax.random.normal(jax.random.key(5), images.shape)
    changed = jnp.where(mask[..., None], images, noise)
    out, aux = apply(params, images, mask)
    out2, aux2 = apply(params, changed, mask)
    for key in ("layer_logits", "layer_boxes"):
        np.testing.assert_array_equal(aux[key], aux2[key])
    # Without the mask the same change does reach the outputs.
    unmasked, _ = apply(params, changed, jnp.ones_like(mask))
    assert not np.allclose(unmasked["logits"][0], out["logits"][0], atol=1e-3)


def test_padded_memory_cells_are_masked_as_keys(transformer):
    module, params, src, pos, valid, queries = transformer
    run = jax.jit(lambda s, v: module.apply({"params": params}, s, pos, v, queries)[0])
    noise = 50.0 * jax.random.normal(jax.random.key(3), src.shape)
    garbage = jnp.where(valid[..., None], src, noise)
    np.testing.assert_allclose(run(src, valid), run(garbage, valid), atol=1e-6)
    assert not np.allclose(run(src, jnp.ones_like(valid)), run(src, valid), atol=1e-3)


def test_object_queries_are_decoded_in_parallel(tiny):
    # Permuting the learned query embeddings permutes the predictions and changes nothing else:
    # no query position, order or causal mask is involved in decoding.
    _, params, images, mask, apply = tiny
    perm = np.array([3, 0, 4, 1, 2])
    permuted = dict(params, query_embed=params["query_embed"][perm])
    out, _ = apply(params, images, mask)
    out2, _ = apply(permuted, images, mask)
    np.testing.assert_allclose(out2["logits"], out["logits"][:, perm], atol=2e-5)
    np.testing.assert_allclose(out2["boxes"], out["boxes"][:, perm], atol=2e-5)


def test_positions_reach_queries_and_keys_never_values_and_the_decoder_norm_is_shared(
    transformer,
):
    module, params, src, pos, valid, queries = transformer
    assert [k for k in params if "norm" in k] == ["decoder_norm"]  # one final norm, shared
    # A non-trivial shared norm: every layer's output must come out with mean 1 and std 2.
    params = dict(params, decoder_norm={"scale": jnp.full((16,), 2.0), "bias": jnp.ones((16,))})
    watched = ("query", "key", "value", "encoder_layer1", "decoder_layer1")

    def traced(params):
        seen = {}

        def record(next_fun, args, kwargs, context):
            path = "/".join(context.module.scope.path)
            if context.method_name == "__call__" and path.split("/")[-1] in watched:
                seen[path] = args[0]  # the module's input
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            hs, memory = module.apply({"params": params}, src, pos, valid, queries)
        return hs, memory, seen

    hs, memory, seen = jax.jit(traced)(params)
    # Encoder layer 1: q and k see x + pos, v sees x.
    x = seen["encoder_layer1"]
    attn = "encoder_layer1/self_attention"
    np.testing.assert_allclose(seen[f"{attn}/value"], x, atol=1e-6)
    np.testing.assert_allclose(seen[f"{attn}/key"], x + pos, atol=1e-6)
    np.testing.assert_allclose(seen[f"{attn}/query"], x + pos, atol=1e-6)
    # Decoder cross-attention: keys are memory + pos, values the memory itself.
    cross = "decoder_layer1/cross_attention"
    np.testing.assert_allclose(seen[f"{cross}/value"], memory, atol=1e-6)
    np.testing.assert_allclose(seen[f"{cross}/key"], memory + pos, atol=1e-6)
    # Decoder self-attention of layer 0: tgt starts at zeros, so q = k = query_pos and v = 0.
    self0 = "decoder_layer0/self_attention"
    np.testing.assert_array_equal(seen[f"{self0}/value"], 0.0)
    np.testing.assert_allclose(seen[f"{self0}/key"][1], queries, atol=1e-6)
    # The shared norm is applied to every layer's output...
    np.testing.assert_allclose(np.asarray(hs).mean(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(hs).std(-1), 2.0, atol=1e-2)
    # ...to the very tensor that the next layer reads un-normalised: hs[0] = norm(tgt_1).
    tgt1 = np.asarray(seen["decoder_layer1"])
    mean, var = tgt1.mean(-1, keepdims=True), tgt1.var(-1, keepdims=True)
    np.testing.assert_allclose(hs[0], 2.0 * (tgt1 - mean) / np.sqrt(var + 1e-5) + 1.0, atol=1e-4)
    assert not np.allclose(hs[0], tgt1, atol=0.1)


def test_digits_preset_reads_a_stride_8_map():
    model = build_model(dict(name="detr", variant="digits", num_classes=10))
    (out, aux), _ = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x), jnp.zeros((2, 64, 64, 1))
    )
    assert aux["features"].shape == (2, 8, 8, 64)
    assert out["logits"].shape == (2, 10, 11) and out["boxes"].shape == (2, 10, 4)


def test_backbone_stage_builds_only_the_stages_it_reads():
    model = DETR(**dict(TINY, backbone_stage_sizes=(1, 1, 1), backbone_stage=2))
    variables, aux = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[::-1], jnp.zeros((1, H, W, 3))
    )
    assert aux[1]["features"].shape == (1, 8, 8, 16)
    assert not [k for k in variables["params"]["backbone"] if k.startswith("stage3")]


def test_mask_resize_is_torch_nearest():
    mask = np.zeros((1, 10, 5), bool)
    mask[0, :6, :4] = True
    # Output row i reads input row floor(i * 10 / 3) = 0, 3, 6; column j reads floor(j * 5 / 2).
    out = np.asarray(resize_mask_nearest(jnp.asarray(mask), (3, 2)))
    np.testing.assert_array_equal(out[0], [[True, True], [True, True], [False, False]])


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(num_classes=None), "num_classes"),
        (dict(d_model=18), "d_model=18"),
        (dict(backbone_stage=3), "backbone_stage=3"),
        (dict(backbone="resnet51"), "backbone='resnet51'"),
        (dict(backbone_norm="layer"), "backbone_norm='layer'"),
        (dict(variant="R99"), "unknown DETR variant"),
    ],
)
def test_bad_configs_are_one_line_errors(fields, message):
    cfg = dict(name="detr", **TINY)
    cfg.update(fields)
    with pytest.raises(ValueError, match=message) as err:
        build_model(cfg)
    assert "\n" not in str(err.value)


def test_a_pixel_mask_of_another_shape_is_reported():
    model = DETR(**TINY)
    with pytest.raises(ValueError, match="pixel_mask must be"):
        jax.eval_shape(
            model.init, jax.random.key(0), jnp.zeros((1, H, W, 3)), jnp.ones((1, H, W + 1), bool)
        )
