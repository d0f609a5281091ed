"""Recurrent encoder-decoder models, without and with additive attention.

`Seq2Seq`: Sutskever, Vinyals & Le 2014, "Sequence to Sequence Learning with Neural Networks"
(NeurIPS 2014). An encoder RNN reads the source; its state at the last real token is the only
bridge to the decoder, which starts from it and models p(y_i | y_<i, x):

    h^j = tau1(U^3 h^(j-1) + U^1 x^j)            encoder (Elman form; or an LSTM or GRU)
    g^0 = h^S,   g^i = tau1(U^3' g^(i-1) + U^1' y^(i-1)),   p(y^i) = softmax(U^2 g^i)

With `num_layers` > 1 the layers are stacked and layer l of the decoder starts from the final
state of layer l of the encoder, as in the paper's 4-layer LSTMs (sec. 3.4: 1000 cells, 1000-d
embeddings). `reverse_source` reverses the real source tokens (padding stays at the end), the
paper's sec. 3.3 trick. The paper's vocabularies differ (160k source, 80k target); here one
vocabulary serves both, with separate source and target embeddings.

`Seq2SeqAttention`: Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning
to Align and Translate" (ICLR 2015), RNNsearch, following appendix A where practical:

    h_j = [forward_h_j; backward_h_j]                       bidirectional encoder (A.2.1)
    s_0 = tanh(W_s backward_h_1)                            decoder initial state (A.2.2)
    e_ij = v_a^T tanh(W_a s_(i-1) + U_a h_j),  a_ij = softmax_j(e_ij),  c_i = sum_j a_ij h_j
    s_i = f(s_(i-1), [E y_(i-1); c_i])                      decoder step, f the gated unit (A.1.1)
    t~_i = U_o s_(i-1) + V_o E y_(i-1) + C_o c_i            deep output (A.2.2), 2l units
    t_i,k = max(t~_i,2k-1, t~_i,2k),  k = 1..l              maxout (Goodfellow et al. 2013)
    p(y_i) = softmax(W_o t_i)

`cell="gru"` (the paper's gated unit, models/rnn.py) with `maxout_units` = l set and
`readout_state="previous"` is the appendix's network, the default. Options, each a departure:
`cell="rnn"` or `"lstm"` (an LSTM decoder's s_0 sets h_0 and c_0 = 0); `readout_state="current"`
reads s_i as eq. 4 of the main text writes it; `maxout_units=None` makes the logits a linear map
of [s; E y_(i-1); c_i]. The alignment weights a_ij are returned as aux["attention"] [B, T, S].

Token conventions: PAD = 0, BOS = 1, EOS = 2, UNK = 3; sources hold real tokens first (ending in
EOS), then PAD. Both models are trained with teacher forcing (`__call__` takes BOS + the target
shifted right) and decode greedily with `generate`; both loops over time are `nn.scan`s. Dropout
(`dropout_rate`) acts on embeddings, between layers and before the output layer, never on the
recurrent connections (Zaremba, Sutskever & Vinyals 2014).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.additive import AdditiveAttention
from attn_jax.attention.dropout import Dropout
from attn_jax.models.rnn import CELLS, RNN, Bidirectional, hidden_state, make_cell, scan_cell
from attn_jax.models.variants import VariantTable, preset_kwargs

PAD, BOS, EOS, UNK = 0, 1, 2, 3

# vocab_size depends on the data and is never part of a variant.
SEQ2SEQ_VARIANTS = VariantTable(
    "seq2seq",
    "Sutskever et al. 2014, sec. 3.4",
    {
        "small": dict(embed_dim=64, hidden_size=128, num_layers=1, cell="lstm"),
        # Sutskever et al. 2014 sec. 3.4: 4 layers of 1000 LSTM cells, 1000-d embeddings, reversed
        # source, dropout none. 64M "pure recurrent" weights (32M per LSTM stack).
        "sutskever": dict(
            embed_dim=1000, hidden_size=1000, num_layers=4, cell="lstm", reverse_source=True
        ),
    },
)

BAHDANAU_VARIANTS = VariantTable(
    "bahdanau",
    "Bahdanau et al. 2015, appendix A.2 / B",
    {
        # The appendix's network at a small size: maxout of half the state width, as 500 of 1000.
        "small": dict(
            embed_dim=64, hidden_size=128, attention_dim=128, maxout_units=64, cell="gru"
        ),
        # Bahdanau et al. 2015 appendix A.2 / B: 620-d embeddings, 1000 gated hidden units per
        # direction and in the decoder, alignment hidden layer n' = 1000, maxout of 500 units.
        "rnnsearch": dict(
            embed_dim=620, hidden_size=1000, attention_dim=1000, maxout_units=500, cell="gru"
        ),
    },
)


def seq2seq_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`Seq2Seq` fields of `variant` (None = none) updated by the overrides that are not None.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(SEQ2SEQ_VARIANTS, variant, overrides)


def bahdanau_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`Seq2SeqAttention` fields of `variant` (None = none) updated by the non-None overrides.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(BAHDANAU_VARIANTS, variant, overrides)


def reverse_real_tokens(tokens: jax.Array, valid: jax.Array) -> jax.Array:
    """Reverses each row's real (leading) tokens and leaves its trailing padding in place."""
    length = jnp.sum(valid, axis=1, keepdims=True)
    pos = jnp.arange(tokens.shape[1])[None, :]
    index = jnp.where(pos < length, length - 1 - pos, pos)
    return jnp.take_along_axis(tokens, index, axis=1)


def _check_cell(model: str, cell: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"{model} cell={cell!r} is not one of {list(CELLS)}")


def _greedy(logits: jax.Array, done: jax.Array) -> tuple[jax.Array, jax.Array]:
    """argmax token, PAD once a sequence has emitted EOS; returns (token, new done)."""
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    token = jnp.where(done, PAD, token)
    return token, done | (token == EOS)


def _seq2seq_generate_step(model: Seq2Seq, state, _):
    carries, previous, done = state
    carries, top = model.decode_step(carries, model.target_embed(previous))
    token, done = _greedy(model.output(top), done)
    return (carries, token, done), token


class Seq2Seq(nn.Module):
    """Encoder-decoder RNN of Sutskever et al. 2014; `__call__` returns (logits, aux).

    Attributes:
      vocab_size: shared source/target vocabulary size (PAD=0, BOS=1, EOS=2, UNK=3).
      embed_dim: embedding width.
      hidden_size: state width of every layer.
      cell: "rnn" (Elman), "lstm" or "gru".
      num_layers: stacked layers in the encoder and the decoder.
      reverse_source: reverse the real source tokens (sec. 3.3).
      dropout_rate: dropout on embeddings, between layers and before the output layer.
    """

    vocab_size: int
    embed_dim: int = 64
    hidden_size: int = 128
    cell: str = "lstm"
    num_layers: int = 1
    reverse_source: bool = False
    dropout_rate: float = 0.0

    def setup(self):
        _check_cell("Seq2Seq", self.cell)
        self.source_embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.target_embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.encoder = [RNN(self.cell, self.hidden_size) for _ in range(self.num_layers)]
        self.decoder = [make_cell(self.cell, self.hidden_size) for _ in range(self.num_layers)]
        self.output = nn.Dense(self.vocab_size)  # U^2
        self.dropout = Dropout(self.dropout_rate)

    def encode(self, inputs: jax.Array, *, train: bool = False) -> tuple[Any, ...]:
        """Per-layer encoder carries at the last real token of each source [B, S]."""
        valid = inputs != PAD
        tokens = reverse_real_tokens(inputs, valid) if self.reverse_source else inputs
        x = self.dropout(self.source_embed(tokens), deterministic=not train)
        carries = []
        for layer in self.encoder:
            carry, x = layer(x, valid)
            carries.append(carry)
            x = self.dropout(x, deterministic=not train)
        return tuple(carries)

    def decode_step(self, carries: tuple[Any, ...], y: jax.Array) -> tuple[tuple[Any, ...], Any]:
        """One decoder step through all layers: (carries, embedded y^(i-1)) -> (carries, g^i)."""
        new = []
        for cell, carry in zip(self.decoder, carries, strict=True):
            carry, y = cell(carry, y)
            new.append(carry)
        return tuple(new), y

    def __call__(
        self, inputs: jax.Array, decoder_inputs: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Teacher-forced logits.

        Args:
          inputs: int [B, S] source, real tokens then PAD.
          decoder_inputs: int [B, T], BOS followed by the target shifted right.
          train: enables dropout (needs rngs={'dropout': key}).

        Returns:
          (logits float32 [B, T, vocab_size], aux) with aux["encoder_state"] the top encoder
          layer's h at the last real token [B, H].
        """
        carries = self.encode(inputs, train=train)
        y = self.dropout(self.target_embed(decoder_inputs), deterministic=not train)
        # Layer by layer over the whole sequence: the same cells as `decode_step`, one scan each.
        for cell, carry in zip(self.decoder, carries, strict=True):
            _, y = scan_cell(cell, carry, y)
            y = self.dropout(y, deterministic=not train)
        logits = self.output(y).astype(jnp.float32)
        return logits, {"encoder_state": hidden_state(carries[-1])}

    def generate(
        self, inputs: jax.Array, *, max_length: int
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Greedy decoding from BOS for `max_length` steps (BOS not included in the output).

        Returns:
          (tokens int32 [B, max_length], PAD after each sequence's first EOS; aux with
          aux["encoder_state"]).
        """
        carries = self.encode(inputs)
        batch = inputs.shape[0]
        state = (carries, jnp.full((batch,), BOS, jnp.int32), jnp.zeros((batch,), bool))
        scan = nn.scan(
            _seq2seq_generate_step,
            variable_broadcast="params",
            split_rngs={"params": False},
            length=max_length,
            out_axes=1,
        )
        _, tokens = scan(self, state, None)
        return tokens, {"encoder_state": hidden_state(carries[-1])}


def _attention_step(model: Seq2SeqAttention, carry, y, annotations, keys, valid):
    # s_(i-1) queries the annotations before the step, then feeds [E y_(i-1); c_i] to the cell;
    # the readout takes s_(i-1) or s_i (`readout_state`).
    previous = hidden_state(carry)
    context, weights = model.attention(previous, annotations, valid, projected_keys=keys)
    carry, s = model.decoder(carry, jnp.concatenate([y, context.astype(y.dtype)], axis=-1))
    readout_state = previous if model.readout_state == "previous" else s
    return carry, (readout_state, context, weights)


def _attention_generate_step(model: Seq2SeqAttention, state, _, annotations, keys, valid):
    carry, previous, done = state
    y = model.target_embed(previous)
    carry, (s, context, weights) = _attention_step(model, carry, y, annotations, keys, valid)
    token, done = _greedy(model.readout(s, y, context), done)
    return (carry, token, done), (token, weights)


READOUT_STATES = ("previous", "current")


class Seq2SeqAttention(nn.Module):
    """RNNsearch of Bahdanau et al. 2015; `__call__` returns (logits, aux with "attention").

    Attributes:
      vocab_size: shared source/target vocabulary size (PAD=0, BOS=1, EOS=2, UNK=3).
      embed_dim: embedding width (620 in the paper).
      hidden_size: state width of each encoder direction and of the decoder (1000).
      attention_dim: hidden width n' of the alignment model (1000).
      cell: "gru" (the paper's gated unit), "rnn" (Elman) or "lstm", encoder and decoder.
      maxout_units: if set, the deep output t~_i has 2 * maxout_units units max-pooled in pairs
        (l = 500 in the paper); None = a linear readout.
      readout_state: the decoder state the readout reads: "previous" s_(i-1) (appendix A.2.2)
        or "current" s_i (eq. 4 of the main text).
      dropout_rate: dropout on embeddings, annotations and the readout.
    """

    vocab_size: int
    embed_dim: int = 64
    hidden_size: int = 128
    attention_dim: int = 128
    cell: str = "gru"
    maxout_units: int | None = None
    readout_state: str = "previous"
    dropout_rate: float = 0.0

    def setup(self):
        _check_cell("Seq2SeqAttention", self.cell)
        if self.readout_state not in READOUT_STATES:
            raise ValueError(
                f"Seq2SeqAttention readout_state={self.readout_state!r} is not one of "
                f"{list(READOUT_STATES)}"
            )
        self.source_embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.target_embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.encoder = Bidirectional(self.cell, self.hidden_size)
        self.init_state = nn.Dense(self.hidden_size)  # W_s
        self.attention = AdditiveAttention(self.attention_dim)
        self.decoder = make_cell(self.cell, self.hidden_size)
        if self.maxout_units is not None:
            self.deep_output = nn.Dense(2 * self.maxout_units)  # U_o, V_o, C_o
        self.output = nn.Dense(self.vocab_size)  # W_o
        self.dropout = Dropout(self.dropout_rate)

    def encode(self, inputs: jax.Array, *, train: bool = False):
        """(annotations [B, S, 2H], projected keys U_a h_j [B, S, A], valid [B, S], s_0 carry)."""
        valid = inputs != PAD
        x = self.dropout(self.source_embed(inputs), deterministic=not train)
        annotations, (_, backward) = self.encoder(x, valid)
        annotations = self.dropout(annotations, deterministic=not train)
        s0 = jnp.tanh(self.init_state(hidden_state(backward)))  # backward_h_1
        carry = (jnp.zeros_like(s0), s0) if self.cell == "lstm" else s0
        return annotations, self.attention.project_keys(annotations), valid, carry

    def readout(
        self, s: jax.Array, y: jax.Array, context: jax.Array, *, train: bool = False
    ) -> jax.Array:
        """float32 logits from the readout's state s (s_(i-1) or s_i), E y_(i-1) and c_i (any
        leading shape): W_o of the maxout of U_o s + V_o E y_(i-1) + C_o c_i, or of their
        concatenation when `maxout_units` is None."""
        t = jnp.concatenate([s, y, context.astype(s.dtype)], axis=-1)
        if self.maxout_units is not None:
            t = self.deep_output(t)
            t = jnp.max(t.reshape(*t.shape[:-1], self.maxout_units, 2), axis=-1)
        t = self.dropout(t, deterministic=not train)
        return self.output(t).astype(jnp.float32)

    def __call__(
        self, inputs: jax.Array, decoder_inputs: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Teacher-forced logits and alignments.

        Args:
          inputs: int [B, S] source, real tokens then PAD.
          decoder_inputs: int [B, T], BOS followed by the target shifted right.
          train: enables dropout (needs rngs={'dropout': key}).

        Returns:
          (logits float32 [B, T, vocab_size], aux) with aux["attention"] the alignment weights
          a_ij [B, T, S] (rows sum to 1, exactly 0 on padded source positions) and
          aux["annotations"] [B, S, 2H].
        """
        annotations, keys, valid, carry = self.encode(inputs, train=train)
        y = self.dropout(self.target_embed(decoder_inputs), deterministic=not train)
        scan = nn.scan(
            _attention_step,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast),
            out_axes=1,
        )
        _, (s, context, weights) = scan(self, carry, y, annotations, keys, valid)
        logits = self.readout(s, y, context, train=train)
        return logits, {"attention": weights, "annotations": annotations}

    def generate(
        self, inputs: jax.Array, *, max_length: int
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Greedy decoding from BOS for `max_length` steps (BOS not included in the output).

        Returns:
          (tokens int32 [B, max_length], PAD after each sequence's first EOS; aux with
          aux["attention"] [B, max_length, S]).
        """
        annotations, keys, valid, carry = self.encode(inputs)
        batch = inputs.shape[0]
        state = (carry, jnp.full((batch,), BOS, jnp.int32), jnp.zeros((batch,), bool))
        scan = nn.scan(
            _attention_generate_step,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
            length=max_length,
            out_axes=1,
        )
        _, (tokens, weights) = scan(self, state, None, annotations, keys, valid)
        return tokens, {"attention": weights, "annotations": annotations}


__all__ = [
    "BAHDANAU_VARIANTS",
    "BOS",
    "EOS",
    "PAD",
    "SEQ2SEQ_VARIANTS",
    "UNK",
    "Seq2Seq",
    "Seq2SeqAttention",
    "bahdanau_kwargs",
    "reverse_real_tokens",
    "seq2seq_kwargs",
]
