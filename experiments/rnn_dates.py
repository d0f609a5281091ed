"""Recurrent seq2seq on date translation, with or without attention (same budget).

  bahdanau  Bahdanau et al. 2015: bidirectional LSTM encoder, additive attention.
  seq2seq   Sutskever et al. 2014: LSTM encoder and decoder, the last state the only bridge.

Dates written in 16 human formats ("Monday, 23 November 2026", "11/23/26", ...) to ISO 8601.
The models and optimizer are rnn_reverse.py's. Training reads train[:90%]; the best checkpoint is
chosen on the held-out train[90%:] and test is reported at that step.

  python launch.py train --config experiments/rnn_dates.py:bahdanau
  python launch.py train --config experiments/rnn_dates.py:seq2seq
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, run_config
from attn_jax.data import data_config
from experiments import rnn_reverse

VARIANTS = rnn_reverse.VARIANTS


def get_config(variant: str = "bahdanau") -> ml_collections.ConfigDict:
    c = run_config(
        f"{variant}_dates",
        batch_size=128,
        total_steps=1200,
        eval_every=600,
        target_metric="validation/exact_match",
    )
    c.data = data_config(name="dates", train_split=TRAIN_WITHOUT_VALIDATION)
    c.model = rnn_reverse.rnn_model(variant)

    c.task = ml_collections.ConfigDict()
    c.task.name = "seq2seq"
    c.task.label_smoothing = 0.0
    c.task.bucket_edges = ()
    c.task.beam_size = 1
    c.task.length_penalty = 0.6

    c.optim = rnn_reverse.rnn_optim()
    return c
