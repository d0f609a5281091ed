"""The Transformer: Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin 2017,
"Attention Is All You Need" (NeurIPS 2017).

Equations (sec. 3):
  X_0      = Dropout(sqrt(d_model) E[tokens] + PE)          sec. 3.4 (scaled embeddings), 3.5 (PE),
                                                            5.4 (dropout on the sums)
  encoder  X = LayerNorm(X + Dropout(MultiHead(X, X, X)))   sec. 3.1, post-LN "Add & Norm"
           X = LayerNorm(X + Dropout(FFN(X)))
  decoder  Y = LayerNorm(Y + Dropout(MultiHead(Y, Y, Y)))   masked: position i sees j <= i
           Y = LayerNorm(Y + Dropout(MultiHead(Y, Z, Z)))   Q from the decoder, K, V from the
                                                            encoder output Z
           Y = LayerNorm(Y + Dropout(FFN(Y)))
  FFN(x)   = max(0, x W_1 + b_1) W_2 + b_2                  eq. 2
  logits   = Y E^T                                          sec. 3.4, with the embedding matrix E
                                                            shared by source, target and softmax

`pre_ln=True` computes X + Dropout(Sublayer(LayerNorm(X))) instead and ends each stack with a
LayerNorm (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"); the
paper's arrangement is post-LN. The layers are `attn_jax.models.blocks.TransformerBlock`s (post- or
pre-LN, ReLU FFN, cross-attention in the decoder) whose attention is
`attn_jax.attention.MultiHeadAttention`, with the model's `attention_fn` and `attention_impl`.
Masks: padding keys (token 0) are masked in encoder self-attention and cross-attention; decoder
self-attention is causal and masks padding keys too.

Choices the paper leaves open, as in the authors' tensor2tensor code: embeddings initialized
N(0, d_model^-1/2) (so sqrt(d_model) E has unit scale), LayerNorm epsilon 1e-6, no bias in the
pre-softmax projection; attention-weight dropout is off by default (`attention_dropout_rate`).

Decoding (`generate`): greedy, or beam search with the GNMT length penalty (beam_search.py), both
over a key/value cache in the 'cache' collection of the attention layers, one token per step.

Variants (`TRANSFORMER_VARIANTS`): "base" and "big" of Table 3 (N=6; d_model 512/1024, d_ff
2048/4096, h 8/16, P_drop 0.1/0.3), and "tiny" for CPU experiments. The paper's Table 3 gives 65M
and 213M parameters; `transformer_param_count` reproduces them up to the vocabulary accounting,
which the paper does not state: with a shared vocabulary of 37000 tokens it gives 63,082,496 (base)
and 214,245,376 (big); the non-embedding parts are exactly 44,138,496 and 176,357,376.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.dropout import Dropout
from attn_jax.attention.masks import padding_mask
from attn_jax.attention.positional import sinusoidal_position_encoding
from attn_jax.models import beam_search as search
from attn_jax.models.blocks import AttentionModel, BlockNames, BlockStack
from attn_jax.models.variants import VariantTable, preset_kwargs

PAD, BOS, EOS, UNK = 0, 1, 2, 3


# Sub-layer names: norm_i belongs to sub-layer i (0 self-attention, then cross-attention, then FFN).
ENCODER_BLOCK_NAMES = BlockNames(
    self_norm="norm_0",
    self_attention="self_attention",
    mlp_norm="norm_1",
    mlp="ffn",
    fc1="wi",
    fc2="wo",
)
DECODER_BLOCK_NAMES = dataclasses.replace(
    ENCODER_BLOCK_NAMES, cross_norm="norm_1", mlp_norm="norm_2"
)


class Transformer(AttentionModel):
    """Encoder-decoder Transformer of Vaswani et al. 2017 (see the module docstring).

    Attributes:
      vocab_size: number of token ids (PAD=0, BOS=1, EOS=2, UNK=3), shared by source and target.
      num_layers: N, the number of encoder and of decoder layers.
      d_model: model width.
      d_ff: inner width of the position-wise FFN.
      num_heads: h.
      dropout_rate: residual dropout on sub-layer outputs and on embedding + PE sums (P_drop).
      attention_dropout_rate: dropout on the attention weights (not in the paper).
      share_embeddings: one matrix for source and target embeddings and the pre-softmax
        projection (sec. 3.4); otherwise three separate matrices.
      pre_ln: LayerNorm before each sub-layer plus a final LayerNorm per stack, instead of after
        each residual addition.
      max_len: number of positions of the PE table (longest source, target or generation).
      num_decoder_layers: decoder depth if it differs from `num_layers`.
      layer_norm_epsilon: LayerNorm epsilon.
      return_attention: return the cross-attention weights in `aux` (explicit attention path).
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype; logits
      are float32 regardless)
    """

    vocab_size: int
    num_layers: int = 6
    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    share_embeddings: bool = True
    pre_ln: bool = False
    max_len: int = 512
    num_decoder_layers: int | None = None
    layer_norm_epsilon: float = 1e-6
    return_attention: bool = False

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}"
            )
        super().__post_init__()

    def setup(self):
        embed = dict(
            num_embeddings=self.vocab_size,
            features=self.d_model,
            embedding_init=nn.initializers.normal(stddev=self.d_model**-0.5),
            param_dtype=self.param_dtype,
        )
        if self.share_embeddings:
            self.embed = nn.Embed(**embed)
        else:
            self.source_embed = nn.Embed(**embed)
            self.target_embed = nn.Embed(**embed)
            self.output_projection = nn.Dense(
                self.vocab_size, use_bias=False, param_dtype=self.param_dtype
            )
        block = dict(
            num_heads=self.num_heads,
            mlp_dim=self.d_ff,
            pre_norm=self.pre_ln,
            activation="relu",
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            layernorm_epsilon=self.layer_norm_epsilon,
            **self.shared_fields(),
        )
        stack = dict(
            final_norm="final_norm" if self.pre_ln else None,
            layernorm_epsilon=self.layer_norm_epsilon,
            param_dtype=self.param_dtype,
            block_name="layer_{i}",
        )
        self.encoder = BlockStack(self.num_layers, dict(block, names=ENCODER_BLOCK_NAMES), **stack)
        self.decoder = BlockStack(
            self.num_decoder_layers or self.num_layers,
            dict(block, names=DECODER_BLOCK_NAMES, cross_attention=True, causal=True),
            **stack,
        )
        self.embed_dropout = Dropout(self.dropout_rate)

    def embed_tokens(
        self,
        tokens: jax.Array,
        *,
        target: bool = False,
        position: int | jax.Array = 0,
        train: bool = False,
    ) -> jax.Array:
        """X = Dropout(sqrt(d_model) E[tokens] + PE[position:position + T]), [B, T, d_model].

        Args:
          tokens: int [B, T].
          target: use the target embedding (differs from the source one only when unshared).
          position: position of tokens[:, 0] (the step when decoding with the cache).
          train: apply dropout.
        """
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds the Transformer's max_len="
                f"{self.max_len}; raise max_len"
            )
        if self.share_embeddings:
            table = self.embed
        else:
            table = self.target_embed if target else self.source_embed
        x = table(tokens) * math.sqrt(self.d_model)
        x = x + sinusoidal_position_encoding(tokens.shape[1], self.d_model, offset=position)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        return self.embed_dropout(x, deterministic=not train)

    def encode(self, inputs: jax.Array, *, train: bool = False) -> jax.Array:
        """Encoder output Z [B, S, d_model] of source tokens [B, S] (0 = PAD)."""
        x = self.embed_tokens(inputs, train=train)
        return self.encoder(x, mask=padding_mask(inputs != PAD), train=train)[0]

    def decode(
        self,
        decoder_inputs: jax.Array,
        encoded: jax.Array,
        inputs: jax.Array,
        *,
        train: bool = False,
        decode: bool = False,
        position: int | jax.Array = 0,
        return_attention: bool = False,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Next-token logits for every decoder position.

        Args:
          decoder_inputs: int [B, T]: BOS and the target shifted right, or (with `decode`) the
            T tokens that follow the cached ones.
          encoded: `encode(inputs)`, [B, S, d_model].
          inputs: the source tokens [B, S], for the padding mask.
          train: apply dropout.
          decode: use (and update) the key/value cache; needs `mutable=['cache']`. A first call
            with the full generation length creates the cache.
          position: position of decoder_inputs[:, 0] (the decoding step).
          return_attention: also return the cross-attention weights.

        Returns:
          (float32 logits [B, T, vocab_size], aux) with aux["cross_attention"] (a list, one
          [B, H, T, S] array per layer) and aux["attention"] (the last layer's) when requested.
        """
        y = self.embed_tokens(decoder_inputs, target=True, position=position, train=train)
        self_mask = None if decode else padding_mask(decoder_inputs != PAD)
        cross_mask = padding_mask(inputs != PAD)
        # With the cache, the attention layers derive the causal mask from their step.
        y, layers = self.decoder(
            y,
            memory=encoded,
            mask=self_mask,
            memory_mask=cross_mask,
            train=train,
            block_fields=dict(decode=decode, return_cross_weights=return_attention),
        )
        if self.share_embeddings:
            logits = self.embed.attend(y.astype(jnp.float32))
        else:
            logits = self.output_projection(y.astype(jnp.float32))
        aux: dict[str, Any] = {}
        if return_attention:
            cross = layers["cross_attention"]
            aux = {"cross_attention": cross, "attention": cross[-1]}
        return logits.astype(jnp.float32), aux

    def __call__(
        self,
        inputs: jax.Array,
        decoder_inputs: jax.Array,
        *,
        train: bool = False,
        return_attention: bool | None = None,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Teacher-forced forward pass.

        Args:
          inputs: source tokens int32 [B, S], 0 = PAD.
          decoder_inputs: int32 [B, T], BOS followed by the target shifted right.
          train: apply dropout (needs the 'dropout' RNG stream).
          return_attention: overrides the `return_attention` field.

        Returns:
          (float32 logits [B, T, vocab_size], aux): aux["encoded"] the encoder output
          [B, S, d_model]; with attention requested, aux["attention"] the last decoder layer's
          cross-attention [B, H, T, S] and aux["cross_attention"] every layer's.
        """
        if return_attention is None:
            return_attention = self.return_attention
        encoded = self.encode(inputs, train=train)
        logits, aux = self.decode(
            decoder_inputs, encoded, inputs, train=train, return_attention=return_attention
        )
        return logits, {"encoded": encoded, **aux}

    def generate(
        self,
        inputs: jax.Array,
        *,
        max_length: int,
        beam_size: int = 1,
        length_penalty: float = 0.6,
        return_attention: bool | None = None,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Autoregressive decoding with the key/value cache, without dropout; PAD and BOS are
        never generated.

        Args:
          inputs: source tokens int32 [B, S], 0 = PAD.
          max_length: number of generated positions L (BOS not included).
          beam_size: 1 for greedy decoding, k > 1 for beam search.
          length_penalty: alpha of the GNMT length penalty (beam search only).
          return_attention: record the greedy path's last-layer cross-attention (overrides the
            field; ignored by beam search).

        Returns:
          (tokens int32 [B, L], PAD after EOS; aux) with aux["scores"] [B] the beam's
          length-normalized log-probability (beam search), or aux["attention"]
          [B, H, L, S] (greedy, when requested).
        """
        if max_length > self.max_len:
            raise ValueError(
                f"max_length={max_length} exceeds the Transformer's max_len={self.max_len}; "
                f"raise max_len"
            )
        if return_attention is None:
            return_attention = self.return_attention
        encoded = self.encode(inputs)
        if beam_size > 1:
            encoded, inputs = search.tile_beams((encoded, inputs), beam_size)
        rows = inputs.shape[0]
        # Pure applies of an unbound copy can run inside lax loops; the bound module cannot.
        params = self.variables["params"]
        model = self.clone(parent=None)

        def run(tokens, cache, position, attention):
            variables = {"params": params} if cache is None else {"params": params, "cache": cache}
            (logits, aux), state = model.apply(
                variables,
                tokens,
                encoded,
                inputs,
                decode=True,
                position=position,
                return_attention=attention,
                method=Transformer.decode,
                mutable=["cache"],
            )
            return logits, aux, state["cache"]

        # Creates the cache: zero self-attention keys/values sized L, the projected memory.
        cache = run(jnp.zeros((rows, max_length), jnp.int32), None, 0, False)[2]

        def step(last, cache, i):
            logits, aux, cache = run(last[:, None], cache, i, return_attention)
            # A generated PAD would be masked as padding when the output is scored by teacher
            # forcing, and BOS only starts sequences: neither is ever emitted.
            logits = logits.at[:, :, jnp.array([PAD, BOS])].set(-jnp.inf)
            if beam_size > 1:
                return jax.nn.log_softmax(logits[:, 0]), cache
            return logits[:, 0], cache, (aux["attention"][:, :, 0] if return_attention else None)

        if beam_size > 1:
            tokens, scores = search.beam_search(
                step,
                cache,
                batch_size=rows // beam_size,
                beam_size=beam_size,
                max_length=max_length,
                length_penalty=length_penalty,
            )
            return tokens[:, 0], {"scores": scores[:, 0]}
        record_like = None
        if return_attention:
            record_like = jax.ShapeDtypeStruct(
                (rows, self.num_heads, inputs.shape[1]), encoded.dtype
            )
        tokens, attention = search.greedy_search(
            step, cache, batch_size=rows, max_length=max_length, record_like=record_like
        )
        aux = {}
        if return_attention:
            aux["attention"] = jnp.moveaxis(attention, 1, 2)  # [B, L, H, S] -> [B, H, L, S]
        return tokens, aux


TRANSFORMER_VARIANTS = VariantTable(
    "Transformer",
    "Vaswani et al. 2017, Table 3 (base, big); tiny: ours, for CPU experiments",
    {
        "base": dict(num_layers=6, d_model=512, d_ff=2048, num_heads=8, dropout_rate=0.1),
        "big": dict(num_layers=6, d_model=1024, d_ff=4096, num_heads=16, dropout_rate=0.3),
        # Not in the paper: small enough to train on a CPU in minutes.
        "tiny": dict(num_layers=2, d_model=128, d_ff=512, num_heads=4, dropout_rate=0.1),
    },
)

# Table 3 of the paper, in millions (vocabulary accounting unstated; see the module docstring).
PUBLISHED_PARAMS_M = {"base": 65, "big": 213}


def transformer_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """Transformer constructor kwargs of a variant, with the non-None `overrides` on top.

    Args:
      variant: a name in `TRANSFORMER_VARIANTS`, or None to take every field from `overrides`.
      **overrides: Transformer fields; None values are ignored.

    Returns:
      a new dict of Transformer fields.

    Raises:
      ValueError: if the variant is unknown.
    """
    return preset_kwargs(TRANSFORMER_VARIANTS, variant, overrides)


def transformer_param_count(
    vocab_size: int,
    d_model: int,
    d_ff: int,
    num_layers: int,
    num_heads: int,
    share_embeddings: bool,
    *,
    pre_ln: bool = False,
    num_decoder_layers: int | None = None,
) -> int:
    """Trainable parameters of the configuration, counted from the paper's description.

    Per layer: multi-head attention 4 (d^2 + d) (W^Q, W^K, W^V, W^O with biases; h only splits
    them), FFN 2 d d_ff + d_ff + d, LayerNorm 2 d; an encoder layer has one attention, one FFN,
    two LayerNorms, a decoder layer two attentions, one FFN, three LayerNorms. Embeddings V d,
    times three when source, target and softmax matrices are not shared (no softmax bias).
    """
    assert d_model % num_heads == 0, "d_model must be divisible by num_heads"
    attention = 4 * (d_model * d_model + d_model)
    ffn = 2 * d_model * d_ff + d_ff + d_model
    norm = 2 * d_model
    encoder = num_layers * (attention + ffn + 2 * norm)
    decoder = (num_decoder_layers or num_layers) * (2 * attention + ffn + 3 * norm)
    final_norms = 2 * norm if pre_ln else 0
    embeddings = vocab_size * d_model * (1 if share_embeddings else 3)
    return encoder + decoder + final_norms + embeddings


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "PUBLISHED_PARAMS_M",
    "TRANSFORMER_VARIANTS",
    "UNK",
    "DECODER_BLOCK_NAMES",
    "ENCODER_BLOCK_NAMES",
    "Transformer",
    "transformer_kwargs",
    "transformer_param_count",
]
