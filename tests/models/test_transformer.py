"""Transformer (Vaswani et al. 2017): parameter counts, cache = teacher forcing, causality,
padding invariance, post-/pre-LN structure, embedding scale, and learning to reverse sequences."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.attention import MultiHeadAttention
from attn_jax.attention.positional import sinusoidal_position_encoding
from attn_jax.models import count_params
from attn_jax.models.blocks import Mlp, TransformerBlock
from attn_jax.models.transformer import (
    BOS,
    ENCODER_BLOCK_NAMES,
    EOS,
    PAD,
    PUBLISHED_PARAMS_M,
    TRANSFORMER_VARIANTS,
    Transformer,
    transformer_kwargs,
    transformer_param_count,
)

V, L = 13, 16
SMALL = dict(vocab_size=V, num_layers=2, d_model=32, d_ff=64, num_heads=4, max_len=L)


def _shift_right(targets):
    return jnp.concatenate([jnp.full_like(targets[:, :1], BOS), targets[:, :-1]], axis=1)


@pytest.fixture(scope="module")
def small():
    model = Transformer(**SMALL)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.integers(4, V, (3, 7)), jnp.int32)
    inputs = inputs.at[1, 5:].set(PAD).at[2, 3:].set(PAD)
    targets = jnp.asarray(rng.integers(4, V, (3, 6)), jnp.int32)
    targets = targets.at[:, -1].set(EOS)
    params = jax.jit(model.init)(jax.random.key(0), inputs, _shift_right(targets))["params"]
    apply = jax.jit(
        lambda p, x, y, attention=False: model.apply(
            {"params": p}, x, y, return_attention=attention
        ),
        static_argnames="attention",
    )
    return model, params, apply, inputs, _shift_right(targets)


def test_ffn_and_mha_param_counts_d512():
    ffn = jax.eval_shape(Mlp(2048, "relu").init, jax.random.key(0), jnp.zeros((1, 512)))
    assert count_params(ffn["params"]) == 2_099_712
    mha = jax.eval_shape(MultiHeadAttention(8).init, jax.random.key(0), jnp.zeros((1, 3, 512)))
    assert count_params(mha["params"]) == 1_050_624


@pytest.mark.parametrize("variant,expected", [("base", 63_082_496), ("big", 214_245_376)])
def test_preset_param_count_equals_the_analytic_count(variant, expected):
    kwargs = transformer_kwargs(variant, vocab_size=37_000)
    model = Transformer(**kwargs)
    x = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, x)["params"]
    config = {k: kwargs[k] for k in ("d_model", "d_ff", "num_layers", "num_heads")}
    analytic = transformer_param_count(37_000, share_embeddings=True, **config)
    assert count_params(shapes) == analytic == expected
    non_embedding = {"base": 44_138_496, "big": 176_357_376}[variant]
    assert analytic - 37_000 * kwargs["d_model"] == non_embedding
    # Table 3 (65M, 213M) within the unstated vocabulary accounting.
    assert abs(expected / 1e6 / PUBLISHED_PARAMS_M[variant] - 1) < 0.04


@pytest.mark.parametrize("pre_ln,share", [(True, True), (False, False), (True, False)])
def test_param_count_of_options(pre_ln, share):
    model = Transformer(**SMALL, pre_ln=pre_ln, share_embeddings=share)
    x = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, x)["params"]
    expected = transformer_param_count(V, 32, 64, 2, 4, share, pre_ln=pre_ln)
    assert count_params(shapes) == expected
    assert ("final_norm" in shapes["encoder"]) == ("final_norm" in shapes["decoder"]) == pre_ln
    assert ("embed" in shapes) == share


def test_variants_and_overrides():
    assert transformer_kwargs("base", dropout_rate=None, vocab_size=100) == {
        **TRANSFORMER_VARIANTS["base"],
        "vocab_size": 100,
    }
    assert transformer_kwargs("big")["dropout_rate"] == 0.3
    assert transformer_kwargs("tiny", d_model=64)["d_model"] == 64
    with pytest.raises(ValueError, match="valid variants: \\['base', 'big', 'tiny'\\]"):
        transformer_kwargs("huge")


def test_embeddings_scaled_by_sqrt_d_model_plus_pe(small):
    model, params, _, inputs, _ = small
    x = model.apply({"params": params}, inputs, method="embed_tokens")
    table = params["embed"]["embedding"]
    expected = table[inputs] * math.sqrt(32) + sinusoidal_position_encoding(inputs.shape[1], 32)
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_cached_step_by_step_logits_equal_teacher_forcing(small):
    model, params, apply, inputs, decoder_inputs = small
    full, _ = apply(params, inputs, decoder_inputs)
    encoded = model.apply({"params": params}, inputs, method="encode")
    t = decoder_inputs.shape[1]

    def run(tokens, cache, position):
        variables = {"params": params, **({} if cache is None else {"cache": cache})}
        (logits, _), state = model.apply(
            variables,
            tokens,
            encoded,
            inputs,
            decode=True,
            position=position,
            method="decode",
            mutable=["cache"],
        )
        return logits, state["cache"]

    _, cache = jax.jit(run)(jnp.zeros((3, t), jnp.int32), None, 0)
    step = jax.jit(run)
    steps = []
    for i in range(t):
        logits, cache = step(decoder_inputs[:, i : i + 1], cache, i)
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_future_target_tokens_do_not_change_earlier_outputs(small):
    _, params, apply, inputs, decoder_inputs = small
    base, _ = apply(params, inputs, decoder_inputs)
    changed, _ = apply(params, inputs, decoder_inputs.at[:, 3].set(11))
    np.testing.assert_allclose(changed[:, :3], base[:, :3], atol=1e-6)
    assert not np.allclose(changed[:, 3:], base[:, 3:], atol=1e-3)


@pytest.mark.parametrize("attention", [False, True])
def test_masked_source_padding_changes_nothing(small, attention):
    _, params, apply, inputs, decoder_inputs = small
    base, aux = apply(params, inputs, decoder_inputs, attention=attention)
    padded = jnp.concatenate([inputs, jnp.zeros((3, 4), jnp.int32)], axis=1)
    out, aux_padded = apply(params, padded, decoder_inputs, attention=attention)
    np.testing.assert_allclose(out, base, atol=1e-5)
    # A padded source row and its real prefix differ: the mask is what makes them equal.
    unmasked, _ = apply(params, inputs.at[2, 3:].set(5), decoder_inputs, attention=attention)
    assert not np.allclose(unmasked[2], base[2], atol=1e-3)
    if attention:
        weights = aux_padded["attention"]
        assert weights.shape == (3, 4, decoder_inputs.shape[1], padded.shape[1])
        assert len(aux_padded["cross_attention"]) == 2
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        assert bool(jnp.all(weights[2, :, :, 3:] == 0.0))
        np.testing.assert_allclose(weights[..., : inputs.shape[1]], aux["attention"], atol=1e-5)
    else:
        assert "attention" not in aux


def test_attention_path_gives_the_fast_path_logits(small):
    _, params, apply, inputs, decoder_inputs = small
    fast, _ = apply(params, inputs, decoder_inputs)
    explicit, _ = apply(params, inputs, decoder_inputs, attention=True)
    np.testing.assert_allclose(explicit, fast, atol=1e-5)


def test_post_ln_normalizes_after_the_residual_pre_ln_before_the_sublayer():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16)) * 3.0 + 1.0
    for pre_ln in (False, True):
        layer = TransformerBlock(
            num_heads=2, mlp_dim=32, names=ENCODER_BLOCK_NAMES, pre_norm=pre_ln, activation="relu"
        )
        params = layer.init(jax.random.key(1), x)["params"]
        # With the sub-layers' output projections zeroed, each sub-layer adds nothing.
        zeroed = jax.tree_util.tree_map_with_path(
            lambda path, p: (
                jnp.zeros_like(p)
                if any(getattr(k, "key", None) in ("out", "wo") for k in path)
                else p
            ),
            params,
        )
        y, _ = layer.apply({"params": zeroed}, x)
        if pre_ln:
            np.testing.assert_allclose(y, x, atol=1e-6)  # x + 0: the residual stream is untouched
        else:
            ln = nn.LayerNorm(epsilon=1e-6)
            np.testing.assert_allclose(y, ln.apply({"params": params["norm_1"]}, x), atol=1e-5)
        # Trained-looking sub-layers: post-LN output is normalized per position, pre-LN's is not.
        y, _ = layer.apply({"params": params}, x)
        normalized = np.allclose(y.mean(-1), 0.0, atol=1e-4) and np.allclose(
            y.std(-1), 1, atol=1e-3
        )
        assert normalized != pre_ln


def test_dropout_only_in_train(small):
    model, params, apply, inputs, decoder_inputs = small
    eval_out, _ = apply(params, inputs, decoder_inputs)

    @jax.jit
    def train_out(key):
        return model.apply(
            {"params": params}, inputs, decoder_inputs, train=True, rngs={"dropout": key}
        )[0]

    a, b = train_out(jax.random.key(1)), train_out(jax.random.key(2))
    assert not np.allclose(a, b) and not np.allclose(a, eval_out)


def _reversal_batch(key, batch, length):
    k1, k2 = jax.random.split(key)
    n = jax.random.randint(k1, (batch, 1), 2, length)  # 2 .. length-1 symbols, then EOS
    pos = jnp.arange(length)[None, :]
    symbols = jax.random.randint(k2, (batch, length), 4, V)
    inputs = jnp.where(pos < n, symbols, PAD)
    reversed_ = jnp.take_along_axis(symbols, jnp.clip(n - 1 - pos, 0, length - 1), axis=1)
    targets = jnp.where(pos < n, reversed_, jnp.where(pos == n, EOS, PAD))
    return inputs, targets


@pytest.fixture(scope="module")
def trained():
    model = Transformer(**{**SMALL, "d_model": 64, "d_ff": 128}, dropout_rate=0.0)
    length = 7
    x, y = _reversal_batch(jax.random.key(0), 2, length)
    params = model.init(jax.random.key(1), x, _shift_right(y))["params"]
    tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 30, 400), b2=0.98)

    def loss_fn(params, x, y):
        logits, _ = model.apply({"params": params}, x, _shift_right(y))
        weights = (y != PAD).astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(losses * weights) / jnp.sum(weights)

    @jax.jit
    def train_chunk(params, opt_state, key):
        def step(carry, key):
            params, opt_state = carry
            x, y = _reversal_batch(key, 64, length)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), jax.random.split(key, 75)
        )
        return params, opt_state, losses

    opt_state = tx.init(params)
    losses = []
    for chunk in range(4):
        params, opt_state, chunk_losses = train_chunk(params, opt_state, jax.random.key(10 + chunk))
        losses.extend(np.asarray(chunk_losses).tolist())
    return model, params, np.array(losses), length


@pytest.fixture(scope="module")
def generated(trained):
    model, params, _, length = trained
    inputs, targets = _reversal_batch(jax.random.key(123), 32, length)
    tokens, aux = jax.jit(
        lambda p, x: model.apply(
            {"params": p}, x, max_length=length + 1, method="generate", return_attention=True
        )
    )(params, inputs)
    return inputs, targets, tokens, aux


def test_learns_to_reverse_sequences(trained, generated):
    _, _, losses, length = trained
    assert losses[:5].mean() > 2.0
    assert losses[-20:].mean() < 0.1 * losses[:5].mean(), (losses[:5], losses[-20:])
    _, targets, tokens, _ = generated
    assert bool(jnp.all(tokens[:, length] == PAD))  # every reversal ended with EOS in time
    exact = np.mean(np.all(np.asarray(tokens[:, :length]) == np.asarray(targets), axis=1))
    assert exact > 0.8, exact


def test_greedy_generate_is_argmax_of_teacher_forcing_and_pads_after_eos(trained, generated):
    model, params, _, length = trained
    inputs, _, tokens, aux = generated
    assert tokens.shape == (32, length + 1) and tokens.dtype == jnp.int32
    assert aux["attention"].shape == (32, 4, length + 1, length)
    logits, tf_aux = jax.jit(
        lambda p, x, y: model.apply({"params": p}, x, y, return_attention=True)
    )(params, inputs, _shift_right(tokens))
    logits = logits.at[:, :, jnp.array([PAD, BOS])].set(-jnp.inf)
    eos = np.asarray(tokens) == EOS
    assert eos.any(axis=1).all(), "a trained model ends every reversal with EOS"
    for row in range(32):
        end = int(np.argmax(eos[row])) + 1
        np.testing.assert_array_equal(tokens[row, :end], jnp.argmax(logits[row, :end], -1))
        assert bool(jnp.all(tokens[row, end:] == PAD))
        np.testing.assert_allclose(
            aux["attention"][row, :, :end], tf_aux["attention"][row, :, :end], atol=1e-5
        )
