"""Vaswani et al. 2017 Transformer (tiny preset: 2+2 pre-LN layers, d_model 128) on the two toy
sequence tasks, with the budgets of experiments/rnn_reverse.py and rnn_dates.py.

  reverse  Reversing sequences of 10 to 60 symbols: the first output symbol depends on the last
           input symbol and the last output on the first, the long-range case that a fixed-size
           bridge handles worst. Exact match is reported per source-length bucket. 1,600 steps
           of 64 take about the wall time of rnn_reverse.py:bahdanau's 800 (the LSTM's steps are
           slower).
  dates    Dates written in 16 human formats ("Monday, 23 November 2026", "11/23/26", ...) to
           ISO 8601; 1,200 steps of 128.

The recipe departs from the paper's where the paper's does not fit a 10-minute CPU budget
(searched on 44 short runs of reverse; README, "Experiments"): with post-LN, dropout 0.1, label
smoothing 0.1 and the eq. 3 schedule the model is at 30% exact match on reverse after 800 steps,
and higher rates diverge. Pre-LN (Xiong et al. 2020) trains stably at a 3e-3 peak; dropout and
label smoothing only slow the fit of a task without noise. On dates this recipe reached
99.95-100% exact match over three seeds; the paper's (post-LN, dropout 0.1, label smoothing 0.1,
eq. 3) 75-84% at the schedule's scale 2 and 98.9-99.7% at scale 1, where longer runs are not
better:
  python launch.py train --config experiments/transformer_seq.py:dates \\
    --config.model.pre_ln=false --config.model.dropout_rate=0.1 --config.task.label_smoothing=0.1 \\
    --config.optim.schedule=noam --config.optim.lr=1 --config.optim.warmup_steps=400 \\
    --config.optim.grad_clip_norm=0

Training reads train[:90%]; the best checkpoint is chosen on the held-out train[90%:] and test is
reported at that step.

  python launch.py train --config experiments/transformer_seq.py:reverse
  python launch.py train --config experiments/transformer_seq.py:dates
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, run_config
from attn_jax.data import data_config

VARIANTS = ("reverse", "dates")


def get_config(variant: str = "reverse") -> ml_collections.ConfigDict:
    reverse = variant == "reverse"
    c = run_config(
        f"transformer_{variant}",
        batch_size=64 if reverse else 128,
        total_steps=1600 if reverse else 1200,
        eval_every=800 if reverse else 600,
        target_metric="validation/exact_match",
    )
    c.data = data_config(name=variant, train_split=TRAIN_WITHOUT_VALIDATION)

    c.model = ml_collections.ConfigDict()
    c.model.name = "transformer"
    c.model.variant = "tiny"
    c.model.vocab_size = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.dropout_rate = 0.0
    c.model.pre_ln = True
    c.model.max_len = 128
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "seq2seq"
    c.task.label_smoothing = 0.0
    c.task.bucket_edges = (10, 20, 30, 40, 50, 61) if reverse else ()
    c.task.beam_size = 1
    c.task.length_penalty = 0.6

    c.optim = ml_collections.ConfigDict()
    # The paper's Adam (beta2 0.98, eps 1e-9) on a cosine schedule instead of eq. 3 (see above);
    # d_model is read by the noam schedule only.
    c.optim.name = "adam"
    c.optim.lr = 3e-3
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-9
    c.optim.weight_decay = 0.0
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 200
    c.optim.end_lr_factor = 0.0
    c.optim.d_model = 128
    c.optim.grad_clip_norm = 1.0
    return c
