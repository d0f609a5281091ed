"""Seq2Seq (Sutskever et al. 2014) and Seq2SeqAttention (Bahdanau et al. 2015): padding,
teacher forcing vs greedy decoding, causality, alignments, presets and a tiny learning check."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.models.seq2seq import (
    BAHDANAU_VARIANTS,
    BOS,
    EOS,
    PAD,
    SEQ2SEQ_VARIANTS,
    Seq2Seq,
    Seq2SeqAttention,
    bahdanau_kwargs,
    reverse_real_tokens,
    seq2seq_kwargs,
)

VOCAB, MAX_LEN = 12, 7
TINY = dict(vocab_size=VOCAB, embed_dim=8, hidden_size=16)
CONFIGS = {
    "seq2seq-rnn": (Seq2Seq, dict(cell="rnn", num_layers=2, reverse_source=True)),
    "seq2seq-lstm": (Seq2Seq, dict(cell="lstm", num_layers=1)),
    # The appendix's network: gated units, maxout over pairs, readout from s_(i-1).
    "attention-gru": (Seq2SeqAttention, dict(cell="gru", attention_dim=8, maxout_units=6)),
    # Dropout is configured but must stay off outside training, with no 'dropout' rng given.
    "attention-lstm": (
        Seq2SeqAttention,
        dict(cell="lstm", attention_dim=8, dropout_rate=0.5, readout_state="current"),
    ),
}


def make_source(lengths, width, rng):
    """Random real tokens (ids >= 4) ending with EOS, then PAD; `lengths` counts the EOS."""
    src = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        src[row, : n - 1] = rng.integers(4, VOCAB, n - 1)
        src[row, n - 1] = EOS
    return src


SRC = make_source([5, 3, 1, 6], 6, np.random.default_rng(0))
# As wide as the generated sequences, so that one compiled forward pass serves every test.
DEC = np.concatenate(
    [np.full((4, 1), BOS, np.int32), np.random.default_rng(1).integers(4, VOCAB, (4, MAX_LEN - 1))],
    axis=1,
)


def random_params(model):
    """Gaussian parameters of the model's shapes: no compiled initializer (QR etc.) needed."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), SRC, DEC)["params"]
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(0)
    scale = lambda shape: 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.1
    return jax.tree.unflatten(
        treedef,
        [jnp.asarray(rng.normal(0, scale(x.shape), x.shape), jnp.float32) for x in leaves],
    )


@functools.cache
def compiled(name):
    """(model, params, jitted teacher-forced apply, jitted generate) for one configuration."""
    cls, kwargs = CONFIGS[name]
    model = cls(**TINY, **kwargs)
    params = random_params(model)
    forward = jax.jit(lambda p, x, y: model.apply({"params": p}, x, y))
    generate = jax.jit(
        lambda p, x: model.apply({"params": p}, x, max_length=MAX_LEN, method="generate")
    )
    return model, params, forward, generate


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_the_source_changes_nothing(name):
    _, params, forward, generate = compiled(name)
    padded = np.concatenate([SRC, np.zeros((4, 3), np.int32)], axis=1)
    logits, aux = forward(params, SRC, DEC)
    logits_p, aux_p = forward(params, padded, DEC)
    assert logits.shape == (4, DEC.shape[1], VOCAB) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits_p, logits, atol=1e-5)
    tokens, gen_aux = generate(params, SRC)
    tokens_p, gen_aux_p = generate(params, padded)
    np.testing.assert_array_equal(tokens_p, tokens)
    if "attention" in aux:
        np.testing.assert_array_equal(aux_p["attention"][..., SRC.shape[1] :], 0.0)
        np.testing.assert_allclose(
            aux_p["attention"][..., : SRC.shape[1]], aux["attention"], atol=1e-6
        )
        np.testing.assert_array_equal(gen_aux_p["attention"][..., SRC.shape[1] :], 0.0)


@pytest.mark.parametrize("name", ["attention-gru", "attention-lstm"])
def test_alignments_are_distributions_over_real_tokens(name):
    _, params, forward, generate = compiled(name)
    _, aux = forward(params, SRC, DEC)
    weights = np.asarray(aux["attention"])
    assert weights.shape == (4, DEC.shape[1], SRC.shape[1])
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    pad = np.broadcast_to((SRC == PAD)[:, None, :], weights.shape)
    assert np.all(weights[pad] == 0.0)
    np.testing.assert_array_equal(weights[2, :, 0], 1.0)  # one real token: all the weight
    _, gen_aux = generate(params, SRC)
    assert gen_aux["attention"].shape == (4, MAX_LEN, SRC.shape[1])
    np.testing.assert_allclose(np.sum(gen_aux["attention"], -1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_teacher_forcing_on_own_outputs_reproduces_greedy_decoding(name):
    _, params, forward, generate = compiled(name)
    tokens, gen_aux = generate(params, SRC)
    tokens = np.asarray(tokens)
    assert tokens.shape == (4, MAX_LEN) and tokens.dtype == np.int32
    decoder_inputs = np.concatenate([np.full((4, 1), BOS, np.int32), tokens[:, :-1]], axis=1)
    logits, aux = forward(params, SRC, decoder_inputs)
    forced = np.asarray(jnp.argmax(logits, -1))
    for row in range(4):
        eos = np.flatnonzero(tokens[row] == EOS)
        end = eos[0] + 1 if eos.size else MAX_LEN
        np.testing.assert_array_equal(forced[row, :end], tokens[row, :end])
        np.testing.assert_array_equal(tokens[row, end:], PAD)  # PAD after the first EOS
        if "attention" in aux:
            np.testing.assert_allclose(
                aux["attention"][row, :end], gen_aux["attention"][row, :end], atol=1e-5
            )


def test_generated_tokens_are_pad_after_eos():
    # An output bias that always prefers EOS: the first token is EOS, every later one PAD.
    _, params, _, generate = compiled("seq2seq-lstm")
    params = jax.tree.map(lambda a: a, params)
    params["output"]["bias"] = params["output"]["bias"].at[EOS].set(100.0)
    tokens = np.asarray(generate(params, SRC)[0])
    np.testing.assert_array_equal(tokens[:, 0], EOS)
    np.testing.assert_array_equal(tokens[:, 1:], PAD)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_future_decoder_inputs_do_not_change_earlier_logits(name):
    _, params, forward, _ = compiled(name)
    logits, aux = forward(params, SRC, DEC)
    changed = DEC.copy()
    changed[:, 3:] = (changed[:, 3:] + 1 - 4) % (VOCAB - 4) + 4
    logits_c, aux_c = forward(params, SRC, changed)
    # Logits at position i read decoder inputs 0..i only.
    np.testing.assert_array_equal(logits_c[:, :3], logits[:, :3])
    assert not np.allclose(logits_c[:, 3:], logits[:, 3:])
    if "attention" in aux:
        # a_i is computed from s_(i-1), which has not seen y_i yet (Bahdanau, not Luong).
        np.testing.assert_array_equal(aux_c["attention"][:, :4], aux["attention"][:, :4])
        assert not np.allclose(aux_c["attention"][:, 4:], aux["attention"][:, 4:])


def test_dropout_only_in_training():
    model, params, forward, _ = compiled("attention-lstm")
    assert model.dropout_rate == 0.5
    a, _ = forward(params, SRC, DEC)
    train = jax.jit(
        lambda p, k: model.apply({"params": p}, SRC, DEC, train=True, rngs={"dropout": k})[0]
    )
    c, d = train(params, jax.random.key(1)), train(params, jax.random.key(2))
    assert not np.allclose(a, c) and not np.allclose(c, d)


def test_reverse_real_tokens_keeps_padding_at_the_end():
    src = np.array([[5, 6, 7, EOS, 0, 0], [4, EOS, 0, 0, 0, 0]], np.int32)
    out = reverse_real_tokens(jnp.asarray(src), jnp.asarray(src != PAD))
    np.testing.assert_array_equal(out, [[EOS, 7, 6, 5, 0, 0], [EOS, 4, 0, 0, 0, 0]])


def test_variant_decoding():
    assert seq2seq_kwargs("small", hidden_size=None, vocab_size=9) == {
        **SEQ2SEQ_VARIANTS["small"],
        "vocab_size": 9,
    }
    assert bahdanau_kwargs(None, cell="rnn", dropout_rate=None) == {"cell": "rnn"}
    assert bahdanau_kwargs("rnnsearch", hidden_size=7)["hidden_size"] == 7
    assert BAHDANAU_VARIANTS["rnnsearch"]["hidden_size"] == 1000
    with pytest.raises(ValueError, match=r"valid variants: \['small', 'sutskever'\]"):
        seq2seq_kwargs("big")
    with pytest.raises(ValueError, match="unknown bahdanau variant 'x'"):
        bahdanau_kwargs("x")
    with pytest.raises(ValueError, match="cell='elman'"):
        Seq2Seq(vocab_size=5, cell="elman").init(jax.random.key(0), SRC, DEC)
    # The published RNNsearch: gated units and a maxout of 500 from s_(i-1) (appendix A.2.2).
    rnnsearch = Seq2SeqAttention(**bahdanau_kwargs("rnnsearch", vocab_size=10))
    assert (rnnsearch.cell, rnnsearch.maxout_units, rnnsearch.readout_state) == (
        "gru",
        500,
        "previous",
    )


def test_maxout_readout_is_the_max_of_two_linear_pieces_of_the_previous_state():
    model, params, forward, _ = compiled("attention-gru")
    logits, aux = forward(params, SRC, DEC)
    _, _, _, s0 = model.apply({"params": params}, SRC, method="encode")
    # Position 0: s_0, E y_0 = E[BOS] and c_1 = sum_j a_1j h_j (appendix A.2.2).
    embed = np.asarray(params["target_embed"]["embedding"])[DEC[:, 0]]
    context = np.einsum("bs,bsd->bd", aux["attention"][:, 0], aux["annotations"])
    t = np.concatenate([np.asarray(s0), embed, context], axis=-1)
    k, b = (np.asarray(params["deep_output"][n]) for n in ("kernel", "bias"))
    assert k.shape[1] == 2 * 6
    pieces = [t @ k[:, j::2] + b[j::2] for j in (0, 1)]  # units 2k-1 and 2k of t~_i
    out = np.maximum(*pieces) @ np.asarray(params["output"]["kernel"]) + np.asarray(
        params["output"]["bias"]
    )
    np.testing.assert_allclose(logits[:, 0], out, rtol=1e-5, atol=1e-5)
    readout = model.apply(
        {"params": params},
        jnp.asarray(s0),
        jnp.asarray(embed),
        jnp.asarray(context),
        method="readout",
    )
    assert readout.shape == (4, VOCAB)
    np.testing.assert_allclose(readout, out, rtol=1e-5, atol=1e-5)


def test_sutskever_preset_has_64m_recurrent_weights():
    # Sec. 3.4: "64M are pure recurrent connections (32M for the encoder LSTM and 32M for the
    # decoder LSTM)": 4 layers x 4 gates x 1000 x (1000 input + 1000 recurrent) per stack.
    model = Seq2Seq(**seq2seq_kwargs("sutskever", vocab_size=10))
    shapes = jax.eval_shape(model.init, jax.random.key(0), SRC, DEC)["params"]
    per_side = {"encoder": 0, "decoder": 0}
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        keys = [p.key for p in path]
        if keys[0].split("_")[0] in per_side and keys[-1] == "kernel":
            per_side[keys[0].split("_")[0]] += int(np.prod(leaf.shape))
    assert per_side == {"encoder": 32_000_000, "decoder": 32_000_000}


def reversal_batch(rng, batch):
    """Sources: 3-6 symbols out of 8, then EOS; targets: the symbols reversed, then EOS."""
    lengths = rng.integers(3, 7, batch)
    src = np.zeros((batch, MAX_LEN), np.int32)
    tgt = np.zeros((batch, MAX_LEN), np.int32)
    for row, n in enumerate(lengths):
        symbols = rng.integers(4, VOCAB, n)
        src[row, :n], src[row, n] = symbols, EOS
        tgt[row, :n], tgt[row, n] = symbols[::-1], EOS
    dec = np.concatenate([np.full((batch, 1), BOS, np.int32), tgt[:, :-1]], axis=1)
    return src, dec, tgt


def test_attention_model_learns_to_reverse():
    # The published form (gated units, maxout, readout from s_(i-1)) at a tiny size. With
    # l = 32 (the paper's ratio l = n / 2) this seed sits on a plateau at 10% of the first loss
    # after 200 steps; l = 64 leaves it far below.
    model = Seq2SeqAttention(
        vocab_size=VOCAB, embed_dim=32, hidden_size=64, attention_dim=32, maxout_units=64
    )
    rng = np.random.default_rng(0)
    src, dec, tgt = reversal_batch(rng, 64)
    # Gaussian start instead of model.init: the eager initializers would cost seconds to compile.
    params = random_params(model)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    def loss_fn(p, src, dec, tgt):
        logits, _ = model.apply({"params": p}, src, dec)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
        weight = (tgt != PAD).astype(jnp.float32)
        return jnp.sum(ce * weight) / jnp.sum(weight)

    @jax.jit
    def step(p, s, src, dec, tgt):
        loss, grads = jax.value_and_grad(loss_fn)(p, src, dec, tgt)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    losses = []
    for _ in range(200):
        params, opt_state, loss = step(params, opt_state, *reversal_batch(rng, 64))
        losses.append(float(loss))
    assert np.mean(losses[-20:]) < 0.1 * losses[0], (losses[0], losses[-20:])
    src, _, tgt = reversal_batch(rng, 128)
    generate = jax.jit(
        lambda p, x: model.apply({"params": p}, x, max_length=MAX_LEN, method="generate")
    )
    tokens = np.asarray(generate(params, src)[0])
    accuracy = np.mean(tokens[tgt != PAD] == tgt[tgt != PAD])
    assert accuracy > 0.9, accuracy
