"""BLEU as evaluation sums: per-sentence statistics added up give exactly sacreBLEU's corpus BLEU,
also through the seq2seq task's compiled evaluation (pure_callback) with padded examples."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu

from attn_jax.eval.bleu import NUM_STATS, bleu_from_statistics, bleu_statistics
from attn_jax.tasks import build_task
from attn_jax.tasks.seq2seq import EOS, PAD

WORDS = "the a cat dog sat ran on under mat rug quickly . , !".split()


def _sentences(rng, n):
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 15))) for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summed_statistics_equal_sacrebleu_corpus_bleu(seed):
    rng = np.random.default_rng(seed)
    refs = _sentences(rng, 40)
    # Hypotheses: some exact, some perturbed, some unrelated, so that every order has misses.
    hyps = [
        r if i % 3 == 0 else _sentences(rng, 1)[0] if i % 3 == 1 else r + " ran"
        for i, r in enumerate(refs)
    ]
    stats = bleu_statistics(hyps, refs)
    assert stats.shape == (40, NUM_STATS)
    expected = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert 0 < expected < 100
    assert bleu_from_statistics(stats.sum(0)) == pytest.approx(expected, abs=1e-9)
    # Split in two halves, summed: the same corpus score (what batches and devices do).
    halves = bleu_statistics(hyps[:17], refs[:17]).sum(0) + bleu_statistics(
        hyps[17:], refs[17:]
    ).sum(0)
    assert bleu_from_statistics(halves) == pytest.approx(expected, abs=1e-9)


TARGETS = np.array([[4, 6, 8, 2, 0], [5, 7, 16, 2, 0], [4, 6, 7, 8, 2], [9, 2, 0, 0, 0]], np.int32)


class Decoder(nn.Module):
    """Generates fixed `outputs` (and scores them as its teacher-forced logits)."""

    outputs: tuple

    @nn.compact
    def __call__(self, inputs, decoder_inputs, train=False):
        bias = self.param("bias", nn.initializers.zeros, (len(WORDS) + 4,))
        return jax.nn.one_hot(jnp.asarray(self.outputs), len(WORDS) + 4) + bias, {}

    def generate(self, inputs, max_length):
        return jnp.asarray(self.outputs, jnp.int32)[:, :max_length], {}


class WordVocab:
    """ids 4.. -> words; decode stops at EOS and skips PAD, like the project's vocabularies."""

    def decode(self, ids):
        out = []
        for t in ids:
            if t == EOS:
                break
            if t != PAD:
                out.append(WORDS[int(t) - 4])
        return " ".join(out)


@pytest.mark.parametrize("perfect", [True, False])
def test_task_reports_sacrebleu_of_the_decodings(perfect):
    task = build_task({"name": "seq2seq", "bleu": True}, num_classes=len(WORDS) + 4)
    assert task.needs_vocab
    task.vocab = WordVocab()
    outputs = TARGETS.copy()
    if not perfect:
        outputs[0, 1] = 10  # one wrong word in the first sentence
        outputs[3] = [4, 9, 2, 0, 0]  # a word too many in the padded example: must not count
    model = Decoder(outputs=tuple(map(tuple, outputs.tolist())))
    params = model.init(jax.random.key(0), TARGETS, TARGETS)["params"]
    batch = {
        "inputs": TARGETS,
        "targets": TARGETS,
        "length": np.full(4, 5, np.int32),
        "mask": np.array([True, True, True, False]),  # the last example is padding
    }
    sums = jax.jit(lambda p, b: task.eval_sums(model, p, b))(params, batch)
    bleu = task.finalize(jax.device_get(sums))["bleu"]
    hyps = [task.vocab.decode(list(t)) for t in outputs[:3]]
    refs = [task.vocab.decode(list(t)) for t in TARGETS[:3]]
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert (bleu == pytest.approx(100.0)) == perfect


def test_bleu_without_a_vocabulary_is_one_clear_error():
    task = build_task({"name": "seq2seq", "bleu": True}, num_classes=8)
    with pytest.raises(ValueError, match="task.bleu needs the dataset's vocabulary"):
        task._bleu_statistics(TARGETS, TARGETS)
