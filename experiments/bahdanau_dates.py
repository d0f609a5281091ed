"""Bahdanau et al. 2015 attention seq2seq (bidirectional LSTM encoder, additive attention) on
date translation.

Dates written in 16 human formats ("Monday, 23 November 2026", "11/23/26", ...) to ISO 8601.

  python launch.py train --config experiments/bahdanau_dates.py
"""

import ml_collections

from attn_jax.config import run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "bahdanau_dates",
        batch_size=128,
        total_steps=1200,
        eval_every=600,
        target_metric="test/exact_match",
    )

    c.data = data_config(name="dates")

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
    c.task.bucket_edges = ()
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
