"""CLIP (Radford et al. 2021) and the masked-LM text encoder (published parameter counts in
test_param_counts.py): normalized embeddings, the clipped logit scale, EOT pooling, causality,
padding, and the initialization of the released code."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import MODELS, build_model, count_params
from attn_jax.models.blocks import quick_gelu
from attn_jax.models.clip import (
    CLIP,
    LOGIT_SCALE_INIT,
    TextEncoder,
    eot_positions,
    rank_captions,
)

V, T, EOT = 64, 8, 63
W = 64  # wide enough for the initialization statistics (4096 samples per kernel)
TINY = dict(
    embed_dim=16,
    patch_size=4,
    vision_width=W,
    vision_layers=1,
    vision_heads=2,
    vocab_size=V,
    context_length=T,
    text_width=W,
    text_layers=1,
    text_heads=2,
)
SCALES = (4.0, math.log(100.0), 9.0)


def _tokens(rows: list[list[int]]) -> np.ndarray:
    """SOT(1) + words + EOT, padded with 0 to T (numpy: no eager device op to compile)."""
    out = np.zeros((len(rows), T), np.int32)
    for r, words in zip(out, rows, strict=True):
        ids = [1, *words, EOT]
        r[: len(ids)] = ids
    return out


def _key() -> jax.Array:
    # XLA compiles the RBG generator about twice as fast as threefry: init dominates these tests.
    return jax.random.key(0, impl="unsafe_rbg")


@pytest.fixture(scope="module")
def tiny():
    """Everything the tests read from the tiny model, computed by ONE compiled function."""
    model = CLIP(**TINY)
    images = np.random.default_rng(1).normal(size=(3, 16, 16, 1)).astype(np.float32)
    tokens = _tokens([[5, 6], [7], [8, 9, 10]])
    after = tokens.copy()
    after[0, 5], after[1, 4] = 7, 12  # changes after EOT only
    before = tokens.copy()
    before[0, 1] = 11  # changes a word before EOT

    @jax.jit
    def run(key):
        # Init and every forward pass in one compilation: compiling dominates these tests.
        params = model.init(key, images, tokens)["params"]
        logits, aux = model.apply({"params": params}, images, tokens)

        def text(m, t):
            return m.apply({"params": params}, t, method="encode_text")

        # One text pass for the variants: rows 0-2 `after`, 3-5 `before`, 6 the second caption
        # alone; batch composition must not matter.
        variants = text(model, jnp.concatenate([after, before, tokens[1:2]]))
        return params, dict(
            logits=logits,
            aux=aux,
            scales=[
                model.apply({"params": dict(params, logit_scale=jnp.float32(t))}, method="scale")
                for t in SCALES
            ],
            text_after=variants[0:3],
            text_before=variants[3:6],
            text_one=variants[6:7],
            text_by_id=text(CLIP(**dict(TINY, eot_id=EOT)), tokens),
            probs_reversed=rank_captions(model, params, images[::-1], tokens),
        )

    params, out = run(_key())
    return model, params, images, tokens, out


def test_variants_decode_through_the_registry():
    model = build_model({"name": "clip", "variant": "L/14"})
    assert (model.vision_width, model.vision_layers, model.patch_size) == (1024, 24, 14)
    assert (model.text_width, model.embed_dim, model.vocab_size) == (768, 768, 49408)
    assert model.context_length == 77 and model.image_size == 224
    assert MODELS["text_mlm"].module is TextEncoder
    with pytest.raises(ValueError, match="unknown CLIP variant 'B/8'"):
        build_model({"name": "clip", "variant": "B/8"})


def test_outputs_are_scaled_cosines_of_unit_embeddings(tiny):
    _, _, _, _, out = tiny
    logits, aux = out["logits"], out["aux"]
    assert logits.shape == (3, 3) and logits.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(aux["image_embeds"], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(aux["text_embeds"], axis=-1), 1.0, atol=1e-5)
    # Fig. 3: logits = exp(t) * I_e T_e^T, exp(log(1/0.07)) = 14.2857 at init.
    assert float(aux["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-6)
    expected = aux["logit_scale"] * aux["image_embeds"] @ aux["text_embeds"].T
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(aux["logits_per_text"], logits.T)
    # The unnormalized embeddings are the normalized ones times their norm.
    pre = np.asarray(aux["image_pre_norm"])
    np.testing.assert_allclose(
        pre / np.linalg.norm(pre, axis=-1, keepdims=True), aux["image_embeds"], atol=1e-5
    )


def test_logit_scale_init_and_clipping_at_100(tiny):
    _, params, _, _, out = tiny
    assert float(params["logit_scale"]) == pytest.approx(2.659260, abs=1e-6)
    assert LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07))
    # Sec. 2.5: the multiplier is clipped at 100, whatever the parameter grows to.
    for got, want in zip(out["scales"], (math.exp(4.0), 100.0, 100.0), strict=True):
        assert float(got) == pytest.approx(want, rel=1e-5)


def test_eot_pooling_rules(tiny):
    tokens = jnp.array([[1, 5, 63, 0], [1, 63, 0, 0]])
    # OpenAI: argmax of the ids (EOT is the largest id); explicit id: its first occurrence.
    np.testing.assert_array_equal(eot_positions(tokens), [2, 1])
    np.testing.assert_array_equal(eot_positions(jnp.array([[1, 7, 7, 0]]), eot_id=7), [1])
    out = tiny[-1]
    np.testing.assert_allclose(out["text_by_id"], out["aux"]["text_embeds"], atol=1e-6)


def test_text_tower_is_causal(tiny):
    # Tokens after EOT (padding content) cannot reach the EOT features; tokens before it can.
    out = tiny[-1]
    base = out["aux"]["text_embeds"]
    np.testing.assert_allclose(out["text_after"], base, atol=1e-6)
    assert not np.allclose(out["text_before"][0], base[0], atol=1e-3)
    np.testing.assert_allclose(out["text_before"][1:], base[1:], atol=1e-6)


def test_rank_captions_is_a_softmax_over_captions(tiny):
    out = tiny[-1]
    probs = out["probs_reversed"]  # the images in reverse order
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    # Each image's row does not depend on the other images, nor a caption on the other captions.
    np.testing.assert_allclose(probs, jax.nn.softmax(out["logits"][::-1], -1), atol=1e-5)
    np.testing.assert_allclose(out["text_one"], out["aux"]["text_embeds"][1:2], atol=1e-5)


def test_initialization_follows_the_released_code(tiny):
    # Text tower: in_proj N(0, w^-1/2), out_proj and c_proj N(0, w^-1/2 (2L)^-1/2), c_fc
    # N(0, (2w)^-1/2), token embedding N(0, .02), position N(0, .01); image tower: class and
    # position embeddings N(0, w^-1/2), no conv or projection bias (FAITHFULNESS sec. 14).
    params = tiny[1]
    layers = TINY["text_layers"]
    block = params["text"]["transformer"]["resblocks_0"]
    attn_std, proj_std = W**-0.5, W**-0.5 * (2 * layers) ** -0.5
    for got, want, tolerance in (
        (block["attn"]["query"]["kernel"], attn_std, 0.05),
        (block["attn"]["out"]["kernel"], proj_std, 0.05),
        (block["mlp"]["c_fc"]["kernel"], (2 * W) ** -0.5, 0.05),
        (block["mlp"]["c_proj"]["kernel"], proj_std, 0.05),
        (params["text"]["token_embedding"]["embedding"], 0.02, 0.05),
        (params["text_projection"]["kernel"], attn_std, 0.1),
        (params["text"]["positional_embedding"], 0.01, 0.15),  # 512 samples
        (params["visual"]["positional_embedding"], attn_std, 0.1),
    ):
        assert float(np.std(got)) == pytest.approx(want, rel=tolerance)
    assert set(params["visual"]["conv1"]) == {"kernel"}
    assert set(params["visual"]["proj"]) == {"kernel"}
    assert set(params["text_projection"]) == {"kernel"}


def test_quick_gelu():
    x = jnp.array([-2.0, 0.0, 1.0])
    np.testing.assert_allclose(quick_gelu(x), x / (1 + np.exp(-1.702 * np.asarray(x))), rtol=1e-6)


def test_bad_inputs_raise_one_line_errors(tiny):
    model, params, images, tokens, _ = tiny
    sized = CLIP(**dict(TINY, image_size=32))
    with pytest.raises(ValueError, match="built for 32x32 images, got 16x16"):
        sized.init(jax.random.key(0), images, tokens)
    long = jnp.ones((1, T + 1), jnp.int32)
    with pytest.raises(ValueError, match="longer than context_length=8"):
        model.apply({"params": params}, long, method="encode_text")
    with pytest.raises(ValueError, match="activation='relu'"):
        CLIP(**dict(TINY, activation="relu"))
    with pytest.raises(ValueError, match="vision_width=64 is not divisible by vision_heads=3"):
        CLIP(**dict(TINY, vision_heads=3))


# -- the masked-LM text encoder ---------------------------------------------------------------
@pytest.fixture(scope="module")
def mlm():
    """The encoder's outputs for the tests below, from one compiled function."""
    model = TextEncoder(
        vocab_size=V,
        context_length=T + 4,  # room for the extra padding below
        width=32,
        layers=1,
        num_heads=2,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    tokens = _tokens([[5, 6, 7], [8]])

    @jax.jit
    def run(key):
        params = model.init(key, tokens)["params"]

        def logits(t):
            return model.apply({"params": params}, t)[0]

        changed = jnp.asarray(tokens).at[0, 3].set(9)
        both = logits(jnp.concatenate([tokens, changed]))
        return params, dict(
            base=both[:2],
            changed=both[2:],
            padded=logits(jnp.pad(tokens, ((0, 0), (0, 4)))),
        )

    return run(_key())


def test_mlm_logits_and_tied_head(mlm):
    params, out = mlm
    assert out["base"].shape == (2, T, V)
    # Tied: no output kernel of its own, only a per-token bias (BERT's cls/predictions).
    assert set(params) == {"text", "mlm_transform", "mlm_norm", "mlm_bias"}
    assert params["mlm_bias"].shape == (V,)
    width = 32
    head = width * width + width + 2 * width + V  # transform, its LayerNorm, the bias
    assert count_params(params) == count_params(params["text"]) + head


def test_mlm_encoder_is_bidirectional_and_ignores_padding(mlm):
    _, out = mlm
    base = out["base"]
    # A later word changes the earlier positions' predictions: no causal mask.
    assert not np.allclose(out["changed"][0, 1], base[0, 1], atol=1e-4)
    np.testing.assert_allclose(out["changed"][1], base[1], atol=1e-6)
    # More padding leaves the real positions unchanged: PAD keys are masked.
    np.testing.assert_allclose(out["padded"][0, :5], base[0, :5], atol=1e-5)
    np.testing.assert_allclose(out["padded"][1, :3], base[1, :3], atol=1e-5)
