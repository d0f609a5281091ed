"""The sequence-to-sequence task: teacher-forcing inputs, token weights, exact match per bucket."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.tasks import build_task
from attn_jax.tasks.seq2seq import BOS, EOS, PAD, bucket_names, shift_right


class Oracle(nn.Module):
    """Predicts given targets (stored in a constant) when teacher forced and generates them,
    except that it gets row `wrong_row` wrong at its last real position."""

    answers: tuple
    vocab: int = 8
    wrong_row: int = -1

    def setup(self):
        self.bias = self.param("bias", nn.initializers.zeros, (self.vocab,))

    def _answers(self):
        a = jnp.asarray(self.answers, jnp.int32)
        if self.wrong_row >= 0:
            last = jnp.sum(a[self.wrong_row] != PAD) - 2  # the token before EOS
            a = a.at[self.wrong_row, last].set(7)
        return a

    def __call__(self, inputs, decoder_inputs, train=False):
        logits = jax.nn.one_hot(self._answers(), self.vocab) * 10.0 + self.bias
        return logits, {}

    def generate(self, inputs, max_length):
        return self._answers()[:, :max_length], {}


TARGETS = np.array(
    [
        [4, 5, EOS, PAD],
        [6, EOS, PAD, PAD],
        [4, 4, 4, EOS],
        [5, EOS, PAD, PAD],
    ],
    np.int32,
)


def _batch(lengths=(3, 12, 25, 14), mask=(True, True, True, False)):
    return {
        "inputs": np.ones((4, 5), np.int32),
        "targets": TARGETS,
        "length": np.asarray(lengths, np.int32),
        "mask": np.asarray(mask),
    }


def test_shift_right_starts_with_bos_and_drops_the_last_token():
    out = np.asarray(shift_right(jnp.asarray(TARGETS)))
    np.testing.assert_array_equal(out[:, 0], BOS)
    np.testing.assert_array_equal(out[:, 1:], TARGETS[:, :-1])


def test_bucket_names_follow_the_edges():
    assert bucket_names((10, 20, 30, 40, 50, 61)) == [
        "10-19",
        "20-29",
        "30-39",
        "40-49",
        "50-60",
    ]


@pytest.mark.parametrize("wrong_row", [-1, 0, 2])
def test_exact_match_counts_real_examples_only(wrong_row):
    task = build_task({"name": "seq2seq", "bucket_edges": (0, 10, 20, 30)}, num_classes=8)
    model = Oracle(tuple(map(tuple, TARGETS.tolist())), wrong_row=wrong_row)
    params = model.init(jax.random.key(0), _batch()["inputs"], TARGETS)["params"]
    sums = task.eval_sums(model, params, _batch(mask=(True, True, False, False)))
    metrics = task.finalize(jax.device_get(sums))
    assert metrics["exact_match"] == (1.0 if wrong_row in (-1, 2) else 0.5)
    # Rows 0 and 1 are real: lengths 3 (bucket 0-9) and 12 (bucket 10-19); row 2 is padding.
    assert metrics["exact_match/0-9"] == (0.0 if wrong_row == 0 else 1.0)
    assert metrics["exact_match/10-19"] == 1.0
    assert "exact_match/20-29" not in metrics  # its only example is padding


def test_loss_weighs_tokens_up_to_eos_and_ignores_padded_examples():
    task = build_task({"name": "seq2seq"}, num_classes=8)
    model = Oracle(tuple(map(tuple, TARGETS.tolist())), wrong_row=1)
    params = model.init(jax.random.key(0), _batch()["inputs"], TARGETS)["params"]
    loss, metrics = task.loss(model, params, _batch(), jax.random.key(1), train=False)
    # Real target tokens (EOS included) of the 3 real rows: 3 + 2 + 4 = 9; one of them wrong.
    assert float(metrics["accuracy"]) == pytest.approx(8 / 9)
    assert float(loss) > 0.0
    # The padded example does not count: changing its targets changes nothing.
    batch = _batch()
    batch["targets"] = TARGETS.copy()
    batch["targets"][3] = [7, 7, 7, EOS]
    _, again = task.loss(model, params, batch, jax.random.key(1), train=False)
    assert float(again["accuracy"]) == pytest.approx(8 / 9)
