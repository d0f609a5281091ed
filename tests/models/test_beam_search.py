"""Beam search: GNMT length penalty, exhaustive optimum on a toy model with a reordered cache,
beam 1 = greedy, and a Transformer's beam never scoring below its greedy output."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models.beam_search import (
    EOS,
    PAD,
    beam_search,
    gnmt_length_penalty,
    greedy_search,
    tile_beams,
)
from attn_jax.models.transformer import BOS, Transformer

V, L, M, ROWS = 4, 4, 97, 16


def test_gnmt_length_penalty():
    np.testing.assert_allclose(gnmt_length_penalty(1, 0.6), 1.0)
    np.testing.assert_allclose(gnmt_length_penalty(10, 0.6), (15 / 6) ** 0.6, rtol=1e-6)
    np.testing.assert_allclose(gnmt_length_penalty(7, 0.0), 1.0)


def _toy(seed):
    """A model whose next-token distribution depends on the whole prefix through the cache."""
    table = jax.random.normal(jax.random.key(seed), (ROWS, L, M, V)) * 2.0

    def step(last, cache, i):
        # The prefix hash is only right if the search reorders the cache with its hypotheses.
        h = jnp.where(i == 0, 0, (cache["hash"] * V + last + 1) % M)
        logp = jax.nn.log_softmax(table[cache["row"], i, h])
        return logp, {"hash": h, "row": cache["row"]}

    cache = {"hash": jnp.zeros((ROWS,), jnp.int32), "row": jnp.arange(ROWS)}
    return table, step, cache


def _exhaustive(table, row, alpha):
    """All sequences: EOS at step t (none before) or L tokens without EOS, and their scores."""
    logp = np.asarray(jax.nn.log_softmax(table[row]))
    results = []
    for n in range(1, L + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (n < L and seq[-1] != EOS):
                continue
            h, total = 0, 0.0
            for i, tok in enumerate(seq):
                if i > 0:
                    h = (h * V + seq[i - 1] + 1) % M
                total += logp[i, h, tok]
            results.append((total / float(gnmt_length_penalty(n, alpha)), seq))
    return sorted(results, reverse=True)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_wide_beam_finds_the_exhaustive_optimum(alpha):
    table, step, cache = _toy(0)
    k = 64  # more than all live hypotheses of this toy, so nothing is pruned
    tokens, scores = jax.jit(
        lambda c: beam_search(
            step, c, batch_size=ROWS, beam_size=k, max_length=L, length_penalty=alpha
        )
    )(tile_beams(cache, k))
    for row in range(4):
        best = _exhaustive(table, row, alpha)
        np.testing.assert_allclose(scores[row, :5], [s for s, _ in best[:5]], rtol=1e-5)
        seq = best[0][1]
        np.testing.assert_array_equal(tokens[row, 0, : len(seq)], seq)
        assert bool(jnp.all(tokens[row, 0, len(seq) :] == PAD))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_one_is_greedy_on_the_toy(alpha):
    _, step, cache = _toy(1)
    greedy, _ = greedy_search(step, cache, batch_size=ROWS, max_length=L)
    beam, _ = beam_search(
        step, cache, batch_size=ROWS, beam_size=1, max_length=L, length_penalty=alpha
    )
    np.testing.assert_array_equal(beam[:, 0], greedy)
    assert (np.asarray(greedy) == EOS).any()


@pytest.fixture(scope="module")
def transformer():
    model = Transformer(vocab_size=12, num_layers=2, d_model=32, d_ff=64, num_heads=4, max_len=16)
    inputs = jax.random.randint(jax.random.key(0), (8, 6), 3, 12)
    inputs = inputs.at[:4, 4:].set(PAD)
    params = jax.jit(model.init)(jax.random.key(1), inputs, inputs)["params"]
    # Make EOS frequent enough that hypotheses of different lengths compete.
    params["embed"]["embedding"] = params["embed"]["embedding"].at[EOS].multiply(2.0)
    generate = jax.jit(
        lambda p, x, k, alpha: model.apply(
            {"params": p}, x, max_length=8, beam_size=k, length_penalty=alpha, method="generate"
        ),
        static_argnums=(2,),
    )

    @jax.jit
    def score(params, inputs, tokens, alpha):
        decoder_inputs = jnp.concatenate([jnp.full_like(tokens[:, :1], BOS), tokens[:, :-1]], 1)
        logits, _ = model.apply({"params": params}, inputs, decoder_inputs)
        logp = jax.nn.log_softmax(logits.at[:, :, jnp.array([PAD, BOS])].set(-jnp.inf))
        token_logp = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
        is_eos = tokens == EOS
        length = jnp.where(is_eos.any(1), jnp.argmax(is_eos, 1) + 1, tokens.shape[1])
        counted = jnp.arange(tokens.shape[1])[None] < length[:, None]
        return jnp.sum(jnp.where(counted, token_logp, 0.0), 1) / gnmt_length_penalty(length, alpha)

    return params, inputs, generate, score


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_transformer_wider_beams_never_score_below_greedy(transformer, alpha):
    params, inputs, generate, score = transformer
    greedy, _ = generate(params, inputs, 1, alpha)
    greedy_score = score(params, inputs, greedy, alpha)
    improved = np.zeros(8, bool)
    for k in (2, 4):
        tokens, aux = generate(params, inputs, k, alpha)
        assert tokens.shape == (8, 8)
        beam_score = score(params, inputs, tokens, alpha)
        np.testing.assert_allclose(aux["scores"], beam_score, atol=1e-4)
        assert bool(jnp.all(beam_score >= greedy_score - 1e-5)), (beam_score, greedy_score)
        improved = improved | np.asarray(beam_score > greedy_score + 1e-4)
        eos = np.asarray(tokens) == EOS
        for row in range(8):
            if eos[row].any():
                assert bool(jnp.all(tokens[row, int(np.argmax(eos[row])) + 1 :] == PAD))
    assert improved.any(), "greedy was optimal everywhere: the comparison tests nothing"
