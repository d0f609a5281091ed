"""Bahdanau et al. 2015 attention seq2seq on the long-range reversal task (same budget as
seq2seq_reverse).

Reversing sequences of 10 to 60 symbols: the first output symbol depends on the last input
symbol and the last output on the first, the long-range case that a fixed-size bridge handles
worst. Exact match is reported per source-length bucket.

  python launch.py train --config experiments/bahdanau_reverse.py
"""

import ml_collections

from attn_jax.config import run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "bahdanau_reverse",
        batch_size=64,
        total_steps=800,
        eval_every=400,
        target_metric="test/exact_match",
    )

    c.data = data_config(name="reverse")

    c.model = ml_collections.ConfigDict()
    c.model.name = "bahdanau"
    c.model.variant = "small"
    c.model.vocab_size = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.embed_dim = 64
    c.model.hidden_size = 128
    c.model.cell = "lstm"
    c.model.dropout_rate = 0.0
    c.model.attention_dim = 128

    c.task = ml_collections.ConfigDict()
    c.task.name = "seq2seq"
    c.task.label_smoothing = 0.0
    c.task.bucket_edges = (10, 20, 30, 40, 50, 61)
    c.task.beam_size = 1
    c.task.length_penalty = 0.6

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"
    c.optim.lr = 3e-3
    c.optim.weight_decay = 0.0
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 200
    c.optim.end_lr_factor = 0.0
    c.optim.grad_clip_norm = 1.0
    c.optim.grad_accum_steps = 1

    return c
