"""Recurrent seq2seq on the long-range reversal task, with or without attention (same budget).

  bahdanau  Bahdanau et al. 2015: bidirectional GRU encoder, additive attention, maxout.
  seq2seq   Sutskever et al. 2014: LSTM encoder and decoder, the last state the only bridge
            (hidden 256, so both have about the same size; transformer_seq.py:reverse as well).

Reversing sequences of 10 to 60 symbols: the first output symbol depends on the last input
symbol and the last output on the first, the long-range case that a fixed-size bridge handles
worst. Exact match is reported per source-length bucket. Training reads train[:90%]; the best
checkpoint is chosen on the held-out train[90%:] and test is reported at that step.

  python launch.py train --config experiments/rnn_reverse.py:bahdanau
  python launch.py train --config experiments/rnn_reverse.py:seq2seq
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, run_config
from attn_jax.data import data_config

VARIANTS = ("bahdanau", "seq2seq")


def rnn_model(variant: str) -> ml_collections.ConfigDict:
    """The model group of `variant` ("bahdanau" or "seq2seq"), shared with rnn_dates.py."""
    m = ml_collections.ConfigDict()
    m.name = variant
    m.variant = "small"
    m.vocab_size = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    m.embed_dim = 64
    m.hidden_size = 128 if variant == "bahdanau" else 256
    # RNNsearch's gated units (with the maxout readout of the "small" preset), as published.
    m.cell = "gru" if variant == "bahdanau" else "lstm"
    m.dropout_rate = 0.0
    if variant == "bahdanau":
        m.attention_dim = 128
    return m


def rnn_optim() -> ml_collections.ConfigDict:
    """Adam(W) without weight decay, warmup then cosine from 3e-3: the recurrent recipe."""
    o = ml_collections.ConfigDict()
    o.name = "adamw"
    o.lr = 3e-3
    o.weight_decay = 0.0
    o.schedule = "cosine"
    o.warmup_steps = 200
    o.end_lr_factor = 0.0
    o.grad_clip_norm = 1.0
    return o


def get_config(variant: str = "bahdanau") -> ml_collections.ConfigDict:
    c = run_config(
        f"{variant}_reverse",
        batch_size=64,
        total_steps=800,
        eval_every=400,
        target_metric="validation/exact_match",
    )
    c.data = data_config(name="reverse", train_split=TRAIN_WITHOUT_VALIDATION)
    c.model = rnn_model(variant)

    c.task = ml_collections.ConfigDict()
    c.task.name = "seq2seq"
    c.task.label_smoothing = 0.0
    c.task.bucket_edges = (10, 20, 30, 40, 50, 61)
    c.task.beam_size = 1
    c.task.length_penalty = 0.6

    c.optim = rnn_optim()
    return c
