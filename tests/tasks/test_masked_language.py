"""BERT's masked-LM objective (Devlin et al. 2019, sec. 3.1): the 15% / 80-10-10 proportions,
special tokens never chosen, the loss only at the chosen positions, deterministic evaluation."""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.tasks import TASKS, build_task
from attn_jax.tasks.masked_language import MaskedLanguage

PAD, UNK, MASK, SOT, EOT, V = 0, 1, 2, 3, 79, 80
SPECIALS = (PAD, SOT, EOT, MASK, UNK)


def _task(**kwargs) -> MaskedLanguage:
    return MaskedLanguage(vocab_size=V, mask_id=MASK, special_ids=SPECIALS, **kwargs)


def _texts(n: int, t: int, seed: int = 0) -> np.ndarray:
    """SOT, 4..t-3 ordinary words, EOT, PAD: rows of varied length."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, t), np.int32)
    for row in out:
        length = rng.integers(4, t - 2)
        row[0] = SOT
        row[1 : 1 + length] = rng.integers(4, EOT, size=length)
        row[1 + length] = EOT
    return out


@pytest.fixture(scope="module")
def corrupted():
    task = _task()
    tokens = _texts(2048, 16)
    keys = jax.random.split(jax.random.key(0), tokens.shape[0])
    out, chosen = jax.jit(task.corrupt)(keys, tokens)
    return tokens, np.asarray(out), np.asarray(chosen)


def test_fifteen_percent_of_ordinary_tokens_are_chosen(corrupted):
    tokens, _, chosen = corrupted
    eligible = ~np.isin(tokens, SPECIALS)
    assert not chosen[~eligible].any()  # PAD, SOT, EOT are never chosen
    assert chosen[eligible].mean() == pytest.approx(0.15, abs=0.01)  # ~13,000 eligible tokens


def test_chosen_tokens_are_masked_randomized_or_kept_80_10_10(corrupted):
    tokens, out, chosen = corrupted
    assert (out[~chosen] == tokens[~chosen]).all()  # unchosen positions are untouched
    picked, original = out[chosen], tokens[chosen]  # ~2,000 chosen tokens
    masked = picked == MASK
    changed = ~masked & (picked != original)
    kept = picked == original
    # A random replacement equals the original with probability 1/75 (75 ordinary ids).
    assert masked.mean() == pytest.approx(0.8, abs=0.03)
    assert changed.mean() == pytest.approx(0.1 * (1 - 1 / 75), abs=0.025)
    assert kept.mean() == pytest.approx(0.1 + 0.1 / 75, abs=0.025)
    # Random replacements are ordinary words, never a special id.
    assert not np.isin(picked[changed], SPECIALS).any()


class PositionLogits(nn.Module):
    """Logits that depend on the position only: their gradient shows which positions count."""

    length: int

    @nn.compact
    def __call__(self, tokens, *, train=False):
        table = self.param("table", nn.initializers.normal(1.0), (self.length, V))
        return jnp.broadcast_to(table, (*tokens.shape, V)), {}


def test_loss_counts_only_chosen_positions_of_real_examples():
    task = _task(mask_prob=0.5)  # more chosen positions in one row
    tokens = _texts(2, 32, seed=1)
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.array([True, False])}
    model = PositionLogits(32)
    table = np.random.default_rng(0).normal(size=(32, V)).astype(np.float32)
    params = {"table": jnp.asarray(table)}  # the module's only parameter, without an init pass

    def loss(params):
        sums = task.eval_sums(model, params, batch)
        return sums["loss"], sums

    @jax.jit
    def run(params, tokens):
        grads, sums = jax.grad(loss, has_aux=True)(params)
        return grads, sums, task.corrupt(task.eval_keys(tokens), tokens)[1]

    grads, sums, chosen = run(params, batch["tokens"])
    chosen = np.asarray(chosen)[0]  # the padded second row must not count
    assert 3 <= chosen.sum() < (~np.isin(tokens[0], SPECIALS)).sum()
    touched = np.abs(np.asarray(grads["table"])).sum(-1) > 0
    np.testing.assert_array_equal(touched, chosen)
    # The summed loss is the cross-entropy of the ORIGINAL tokens at those positions.
    log_probs = jax.nn.log_softmax(params["table"])
    positions = np.flatnonzero(chosen)
    expected = -log_probs[positions, tokens[0, positions]].sum()
    assert float(sums["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(sums["count"]) == chosen.sum()
    result = task.finalize(jax.device_get(sums))
    assert result["loss"] == pytest.approx(float(expected) / chosen.sum(), rel=1e-5)


def test_masks_are_reproducible():
    task = _task()
    tokens = jnp.asarray(_texts(8, 16, seed=2))

    @jax.jit
    def masks(tokens, key, other_key):
        def train(key):
            return task.corrupt(jax.random.split(key, 8), tokens)[1]

        def evaluate(t):
            return task.corrupt(task.eval_keys(t), t)[1]

        return evaluate(tokens), evaluate(tokens[::-1]), train(key), train(key), train(other_key)

    ev, ev_reversed, first, again, other = map(
        np.asarray, masks(tokens, jax.random.key(3), jax.random.key(4))
    )
    # Evaluation: a text is masked the same way wherever it sits in the batch.
    np.testing.assert_array_equal(ev_reversed, ev[::-1])
    # Training: the step's key decides; another key draws other positions.
    np.testing.assert_array_equal(again, first)
    assert (other != first).any()


def test_vocabulary_provides_the_special_ids():
    task = build_task({"name": "masked_language"}, num_classes=10)
    assert TASKS["masked_language"] is MaskedLanguage and task.needs_vocab
    with pytest.raises(ValueError, match="needs the vocabulary's size, mask id"):
        task.ordinary_ids()
    task.vocab = types.SimpleNamespace(
        size=V, pad_id=PAD, unk_id=UNK, mask_id=MASK, sot_id=SOT, eot_id=EOT
    )
    assert task.vocab_size == V and task.mask_id == MASK
    assert set(task.special_ids) == set(SPECIALS)
    np.testing.assert_array_equal(task.ordinary_ids(), np.arange(4, EOT))


def test_bad_settings_raise_one_line_errors():
    with pytest.raises(ValueError, match="replace_mask \\+ replace_random = 1.2 exceeds 1"):
        MaskedLanguage(replace_mask=0.9, replace_random=0.3)
    with pytest.raises(ValueError, match="mask_prob=1.5 must be within"):
        MaskedLanguage(mask_prob=1.5)
