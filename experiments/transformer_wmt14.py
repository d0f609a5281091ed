"""Vaswani et al. 2017 Transformer base on WMT 2014 English-German.

The paper's base configuration (Table 3): 6+6 post-LN layers, d_model 512, d_ff 2048, 8 heads,
dropout 0.1, label smoothing 0.1, shared embeddings, ~25,000 source + target tokens per batch
(here 256 sentences of up to 128 subwords), 100k steps, warmup 4000, beam 4 with alpha 0.6.
Needs wmt14_translate/de-en prepared as array_record (README, Real datasets); an accelerator.

  python launch.py train --config experiments/transformer_wmt14.py
"""

import ml_collections

from attn_jax.config import run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "transformer_wmt14",
        batch_size=256,
        total_steps=100000,
        eval_every=5000,
        target_metric="validation/bleu",
        validation_split="validation",  # newstest2013; test is newstest2014, the paper's table
    )

    c.data = data_config(name="wmt14_en_de", max_length=128, vocab_size=37000)

    c.model = ml_collections.ConfigDict()
    c.model.name = "transformer"
    c.model.variant = "base"
    c.model.vocab_size = ml_collections.config_dict.placeholder(int)  # None: from the dataset
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "seq2seq"
    c.task.label_smoothing = 0.1
    c.task.bucket_edges = ()
    c.task.beam_size = 4
    c.task.length_penalty = 0.6
    c.task.bleu = True  # sacreBLEU of the detokenized beam decodings (Table 2 reports BLEU)

    c.optim = ml_collections.ConfigDict()
    # Vaswani et al. eq. 3 with the paper's Adam (beta2 0.98, eps 1e-9); lr scales the schedule.
    c.optim.name = "adam"
    c.optim.lr = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-9
    c.optim.weight_decay = 0.0
    c.optim.schedule = "noam"
    c.optim.d_model = 512
    c.optim.warmup_steps = 4000
    c.optim.grad_clip_norm = ml_collections.config_dict.placeholder(float)

    return c
