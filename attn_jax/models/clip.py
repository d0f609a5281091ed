"""CLIP: Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger,
Sutskever 2021, "Learning Transferable Visual Models From Natural Language Supervision" (ICML 2021),
and a BERT-style text encoder for masked language modeling: Devlin, Chang, Lee, Toutanova 2019,
"BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding" (NAACL 2019).

CLIP (Fig. 3 pseudocode, sec. 2.4 "Choosing and Scaling a Model", sec. 2.5 "Training"):
  I_f = image_encoder(I)                     ViT of sec. 2.4: patch embedding, class token, learned
                                             position embedding, an extra LayerNorm (`ln_pre`)
                                             before the pre-LN blocks, `ln_post` on the class token
  T_f = text_encoder(T)                      causal Transformer over [SOT] words [EOT]; the
                                             features of the last layer at the [EOT] position
  I_e = l2_normalize(I_f W_i)                `proj`, no bias
  T_e = l2_normalize(T_f W_t)                `text_projection`, no bias
  logits = np.dot(I_e, T_e.T) * np.exp(t)    t = `logit_scale`, initialized to log(1 / 0.07);
                                             sec. 2.5: the multiplier is clipped at 100
The symmetric cross-entropy of Fig. 3 is the loss of `attn_jax.tasks.contrastive`; models return
logits, never a loss. Following the released code (openai/CLIP, clip/model.py): QuickGELU
x * sigmoid(1.702 x) in the block MLPs, LayerNorm eps 1e-5 computed in float32, `eot_id=None`
pools at argmax(token ids) (the EOT id is the largest of the vocabulary), and the text tower is
initialized as its `initialize_parameters`: token embedding N(0, 0.02), position embedding
N(0, 0.01), attention input projections N(0, w^-1/2), attention output and MLP output
N(0, w^-1/2 (2L)^-1/2), MLP input N(0, (2w)^-1/2), `text_projection` N(0, w^-1/2). The image
tower keeps PyTorch's defaults there (attention input projections Xavier-uniform over the stacked
[3w, w] matrix, Linear and Conv kernels U(+-1/sqrt(fan_in))), class and position embeddings
N(0, w^-1/2), `proj` N(0, w^-1/2); biases start at 0 (PyTorch draws Linear biases uniformly).
The paper's clipping at 100 is not in the released code (openai/CLIP #46); here the multiplier is
exp(min(t, ln 100)) in the forward pass, so t stops receiving gradient once it reaches ln 100.

Parameter tree (w: vision width, tw: text width, E: embedding width), unrolled blocks so that
each layer of a converted checkpoint (openai/CLIP or Hugging Face `CLIPModel`) is one subtree:

  visual/conv1/kernel [P, P, 3, w]                     (no bias)
  visual/class_embedding [w]
  visual/positional_embedding [N + 1, w]
  visual/ln_pre/{scale, bias}
  visual/transformer/resblocks_{i}/ln_1/{scale, bias}
  visual/transformer/resblocks_{i}/attn/{query, key, value}/{kernel [w, h, w/h], bias [h, w/h]}
  visual/transformer/resblocks_{i}/attn/out/{kernel [h, w/h, w], bias [w]}
  visual/transformer/resblocks_{i}/ln_2/{scale, bias}
  visual/transformer/resblocks_{i}/mlp/{c_fc, c_proj}/{kernel, bias}
  visual/ln_post/{scale, bias}
  visual/proj/kernel [w, E]                            (no bias)
  text/token_embedding/embedding [V, tw]
  text/positional_embedding [context_length, tw]
  text/transformer/resblocks_{i}/...                   (as the visual blocks, width tw)
  text/ln_final/{scale, bias}
  text_projection/kernel [tw, E]                       (no bias)
  logit_scale []

The torch names map one to one: `in_proj_weight` [3w, w] is query/key/value stacked (transpose,
split, reshape to [w, h, w/h]), `out_proj` is `out`, `visual.proj` and `text_projection` are the
Dense kernels as they are (x @ W), `conv1.weight` [w, 3, P, P] transposes to [P, P, 3, w].
Hugging Face's `CLIPModel` renames them (vision_model.embeddings.patch_embedding, pre_layrnorm,
encoder.layers.{i}.self_attn.{q,k,v,out}_proj, layer_norm1/2, mlp.fc1/fc2, post_layernorm,
visual_projection; text_model.embeddings.{token,position}_embedding, final_layer_norm).

Variants (`CLIP_VARIANTS`, the CLIP-ViT hyperparameters of the paper's appendix and the released
models): "B/32", "B/16" and "L/14" at 224 px, context 77, vocabulary 49408; heads = width / 64.
Trainable parameters: 151,277,313, 149,620,737 and 427,616,513 (the first is the official
notebook's count), asserted in tests/models/test_clip.py.

`TextEncoder` is the same text tower without the causal mask (keys at PAD masked instead) and with
BERT's masked-LM head (sec. 3.1 and the released code's `cls/predictions`): Dense(w) -> GELU ->
LayerNorm -> logits through the token embedding matrix (tied, as BERT ties them) plus a
per-token bias; registered as model "text_mlm".
"""

from __future__ import annotations

import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.dropout import Dropout
from attn_jax.models.blocks import (
    AttentionModel,
    BlockNames,
    BlockStack,
    activation_fn,
    torch_linear_init,
)
from attn_jax.models.variants import VariantTable, preset_kwargs

ACTIVATIONS = ("quick_gelu", "gelu")
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # 2.659260
LOGIT_SCALE_MAX = math.log(100.0)  # 4.605170: the multiplier never exceeds 100


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| along the last axis (in float32); zero vectors stay zero instead of NaN."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def eot_positions(tokens: jax.Array, eot_id: int | None = None) -> jax.Array:
    """Index of the [EOT] token of each row: argmax of the ids (OpenAI's rule, EOT being the
    largest id) when `eot_id` is None, else the first position equal to `eot_id`.

    Args:
      tokens: int [B, T].
      eot_id: the EOT id, or None.

    Returns:
      int32 [B].
    """
    if eot_id is None:
        return jnp.argmax(tokens, axis=-1).astype(jnp.int32)
    return jnp.argmax(tokens == eot_id, axis=-1).astype(jnp.int32)


def layer_norm32(epsilon: float = 1e-5, param_dtype: Any = jnp.float32, **kwargs: Any) -> nn.Module:
    """LayerNorm computed in float32 whatever the activations' dtype, as CLIP's LayerNorm subclass
    does for fp16; the following layers cast back to their own dtype."""
    return nn.LayerNorm(epsilon=epsilon, dtype=jnp.float32, param_dtype=param_dtype, **kwargs)


# The released code's names (openai/CLIP clip/model.py: ResidualAttentionBlock).
CLIP_BLOCK_NAMES = BlockNames(
    self_norm="ln_1", self_attention="attn", mlp_norm="ln_2", mlp="mlp", fc1="c_fc", fc2="c_proj"
)


def _block_fields(owner: Any, width: int, layers: int, *, openai_text_init: bool) -> dict[str, Any]:
    """`TransformerBlock` fields of a tower: pre-LN, LayerNorm in float32, OpenAI's
    `initialize_parameters` stds for the text tower, the PyTorch module defaults for the image
    tower (see the module docstring)."""
    fields: dict[str, Any] = dict(
        num_heads=owner.num_heads,
        mlp_dim=int(width * owner.mlp_ratio),
        names=CLIP_BLOCK_NAMES,
        activation=owner.activation,
        layernorm_epsilon=owner.layernorm_epsilon,
        dropout_rate=getattr(owner, "dropout_rate", 0.0),
        attention_dropout_rate=getattr(owner, "attention_dropout_rate", 0.0),
        causal=getattr(owner, "causal", False),
        sow_weights=owner.sow_weights,
        **owner.shared_fields(),
    )
    if openai_text_init:
        attn_std = width**-0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fields.update(
            attention_init=nn.initializers.normal(attn_std),
            attention_out_init=nn.initializers.normal(proj_std),
            mlp_init=nn.initializers.normal((2 * width) ** -0.5),
            mlp_out_init=nn.initializers.normal(proj_std),
        )
    else:
        # Xavier over torch's stacked [3w, w] in_proj: variance 2 / (4w) = 1 / (2w) per matrix.
        fields.update(
            attention_init=nn.initializers.variance_scaling(0.5, "fan_avg", "uniform"),
            mlp_init=torch_linear_init(),
        )
    return fields


class VisionTransformer(AttentionModel):
    """CLIP's image tower: conv1 -> [class; patches] + pos -> ln_pre -> blocks -> ln_post(class)
    -> proj. Returns (unnormalized embedding [B, E], tokens after the blocks [B, N + 1, w])."""

    patch_size: int
    width: int
    layers: int
    num_heads: int
    embed_dim: int
    mlp_ratio: float = 4.0
    activation: str = "quick_gelu"
    layernorm_epsilon: float = 1e-5
    sow_weights: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        p, w = self.patch_size, self.width
        x = nn.Conv(
            w,
            kernel_size=(p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            kernel_init=torch_linear_init(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv1",
        )(images)
        b, gh, gw, _ = x.shape
        x = x.reshape(b, gh * gw, w)  # [B, N, w]
        scale = w**-0.5
        cls = self.param("class_embedding", nn.initializers.normal(scale), (w,), self.param_dtype)
        pos = self.param(
            "positional_embedding",
            nn.initializers.normal(scale),
            (gh * gw + 1, w),
            self.param_dtype,
        )
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, w)), x], axis=1)
        x = x + pos.astype(x.dtype)
        x = layer_norm32(self.layernorm_epsilon, self.param_dtype, name="ln_pre")(x).astype(x.dtype)
        x, _ = BlockStack(
            self.layers,
            _block_fields(self, w, self.layers, openai_text_init=False),
            block_name="resblocks_{i}",
            param_dtype=self.param_dtype,
            name="transformer",
        )(x, train=train)
        pooled = layer_norm32(self.layernorm_epsilon, self.param_dtype, name="ln_post")(x[:, 0])
        embed = nn.Dense(
            self.embed_dim,
            use_bias=False,
            kernel_init=nn.initializers.normal(scale),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="proj",
        )(pooled)
        return embed, x


class TextTransformer(AttentionModel):
    """Token + position embedding -> blocks -> ln_final: the text tower up to (not including) the
    pooling, shared by CLIP (`causal`) and the masked-LM encoder (bidirectional).

    Returns the final hidden states [B, T, w]; `attend(h)` gives h @ token_embedding^T.
    """

    vocab_size: int
    context_length: int
    width: int
    layers: int
    num_heads: int
    mlp_ratio: float = 4.0
    activation: str = "quick_gelu"
    layernorm_epsilon: float = 1e-5
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    causal: bool = True
    sow_weights: bool = False

    def setup(self):
        self.token_embedding = nn.Embed(
            self.vocab_size,
            self.width,
            embedding_init=nn.initializers.normal(0.02),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.positional_embedding = self.param(
            "positional_embedding",
            nn.initializers.normal(0.01),
            (self.context_length, self.width),
            self.param_dtype,
        )
        self.transformer = BlockStack(
            self.layers,
            _block_fields(self, self.width, self.layers, openai_text_init=True),
            block_name="resblocks_{i}",
            param_dtype=self.param_dtype,
        )
        self.ln_final = layer_norm32(self.layernorm_epsilon, self.param_dtype)
        self.embedding_dropout = Dropout(self.dropout_rate)

    def __call__(
        self,
        tokens: jax.Array,
        mask: jax.Array | None = None,
        *,
        train: bool = False,
        input_embedding: jax.Array | None = None,
    ) -> jax.Array:
        """Final hidden states [B, T, w] of int tokens [B, T]; `mask` is the attention mask and
        `input_embedding` [B, T, w], if given, is added to the token and position embeddings
        (BERT's segment embedding: the module itself then stays exactly CLIP's)."""
        t = tokens.shape[-1]
        if t > self.context_length:
            raise ValueError(
                f"text of {t} tokens is longer than context_length={self.context_length}: "
                f"raise the model's context_length or shorten the text"
            )
        x = self.token_embedding(tokens)  # [B, T, w]
        x = x + self.positional_embedding[:t].astype(x.dtype)
        if input_embedding is not None:
            x = x + input_embedding.astype(x.dtype)
        x = self.embedding_dropout(x, deterministic=not train)
        x, _ = self.transformer(x, mask=mask, train=train)
        return self.ln_final(x)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """hidden @ E^T with E the token embedding: logits over the vocabulary (tied weights)."""
        return self.token_embedding.attend(hidden)


_TOWER_INPUTS = frozenset(
    {"conv1", "class_embedding", "positional_embedding", "ln_pre", "token_embedding"}
)


def clip_layer_index(path: str) -> int | None:
    """`CLIP.layer_index`: the same ids in both towers, "visual/..." and "text/..."."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] not in ("visual", "text"):
        return None
    if parts[1] in _TOWER_INPUTS:
        return 0
    block = re.fullmatch(r"resblocks_(\d+)", parts[2]) if parts[1] == "transformer" else None
    return int(block[1]) + 1 if block else None


class CLIP(AttentionModel):
    """Image and text towers with a shared embedding space (Fig. 3; module docstring).

    Attributes:
      embed_dim: E, the width of the joint embedding.
      patch_size: P of the image tower's conv1.
      vision_width: w.
      vision_layers: blocks of the image tower.
      vision_heads: heads of the image tower (None: w / 64, as the released models).
      vocab_size: V.
      context_length: longest text (77 in the released models); shorter texts use the first
        position embeddings.
      text_width: tw.
      text_layers: blocks of the text tower.
      text_heads: heads of the text tower (None: tw / 64).
      image_size: if set, images must be image_size x image_size (the released models: 224);
        None: the position embedding follows the first image size seen (at init).
      mlp_ratio: MLP hidden width / width.
      activation: "quick_gelu" (OpenAI) or "gelu" (exact).
      eot_id: None pools at argmax(token ids); an int pools at the first position equal to it.
      layernorm_epsilon: 1e-5, PyTorch's default, as in the released code.
      sow_weights: sow attention weights of every block into 'intermediates'.
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype, shared by
      both towers; LayerNorms and the logits stay in float32)
    """

    embed_dim: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vocab_size: int
    context_length: int
    text_width: int
    text_layers: int
    vision_heads: int | None = None
    text_heads: int | None = None
    image_size: int | None = None
    mlp_ratio: float = 4.0
    activation: str = "quick_gelu"
    eot_id: int | None = None
    layernorm_epsilon: float = 1e-5
    sow_weights: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"CLIP activation={self.activation!r} is not one of {ACTIVATIONS}")
        for tower, width, heads in (
            ("vision", self.vision_width, self.vision_heads),
            ("text", self.text_width, self.text_heads),
        ):
            heads = heads or max(width // 64, 1)
            if width % heads:
                raise ValueError(
                    f"CLIP {tower}_width={width} is not divisible by {tower}_heads={heads}: "
                    f"set {tower}_heads to a divisor of the width"
                )
        super().__post_init__()

    def setup(self):
        common = dict(
            mlp_ratio=self.mlp_ratio,
            activation=self.activation,
            layernorm_epsilon=self.layernorm_epsilon,
            sow_weights=self.sow_weights,
            **self.shared_fields(),
        )
        self.visual = VisionTransformer(
            patch_size=self.patch_size,
            width=self.vision_width,
            layers=self.vision_layers,
            num_heads=self.vision_heads or max(self.vision_width // 64, 1),
            embed_dim=self.embed_dim,
            **common,
        )
        self.text = TextTransformer(
            vocab_size=self.vocab_size,
            context_length=self.context_length,
            width=self.text_width,
            layers=self.text_layers,
            num_heads=self.text_heads or max(self.text_width // 64, 1),
            causal=True,
            **common,
        )
        self.text_projection = nn.Dense(
            self.embed_dim,
            use_bias=False,
            kernel_init=nn.initializers.normal(self.text_width**-0.5),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.logit_scale = self.param(
            "logit_scale", nn.initializers.constant(LOGIT_SCALE_INIT), (), jnp.float32
        )

    def layer_index(self, path: str) -> int | None:
        """BEiT's layer id of a parameter for layer-wise lr decay (train/optim.py), per tower:
        0 for the embeddings and `ln_pre`, l + 1 in block l, None above the blocks (final norms,
        projections, logit scale)."""
        return clip_layer_index(path)

    # -- towers -----------------------------------------------------------------------------------
    def image_features(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """Unnormalized image embeddings I_f W_i [B, E]."""
        if images.ndim != 4:
            raise ValueError(f"CLIP images must be [B, H, W, C], got shape {images.shape}")
        if self.image_size is not None and images.shape[1:3] != (self.image_size,) * 2:
            raise ValueError(
                f"CLIP was built for {self.image_size}x{self.image_size} images, got "
                f"{images.shape[1]}x{images.shape[2]}: resize the images or set image_size"
            )
        return self.visual(images, train=train)[0]

    def text_features(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        """Unnormalized text embeddings T_f W_t [B, E], T_f at the EOT position."""
        if tokens.ndim != 2:
            raise ValueError(f"CLIP tokens must be [B, T], got shape {tokens.shape}")
        x = self.text(tokens, train=train)  # [B, T, tw], causal
        pooled = x[jnp.arange(x.shape[0]), eot_positions(tokens, self.eot_id)]  # [B, tw]
        return self.text_projection(pooled)

    def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """L2-normalized image embeddings [B, E] (float32)."""
        return l2_normalize(self.image_features(images, train=train))

    def encode_text(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        """L2-normalized text embeddings [B, E] (float32)."""
        return l2_normalize(self.text_features(tokens, train=train))

    def scale(self) -> jax.Array:
        """exp(t) clipped at 100 (sec. 2.5): the multiplier of the cosine similarities."""
        return jnp.exp(jnp.minimum(self.logit_scale, LOGIT_SCALE_MAX))

    def __call__(
        self, images: jax.Array, tokens: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scaled cosine similarities of every image with every text.

        Args:
          images: float [B_img, H, W, C].
          tokens: int [B_txt, T]: SOT, words, EOT, then padding.
          train: enables dropout where configured (CLIP has none).

        Returns:
          (logits_per_image [B_img, B_txt] float32, aux) with aux "image_embeds" and
          "text_embeds" (normalized, [B, E]), "image_pre_norm" and "text_pre_norm" (before the
          normalization), "logit_scale" (the clipped multiplier, a scalar) and
          "logits_per_text" [B_txt, B_img].
        """
        image_pre = self.image_features(images, train=train)
        text_pre = self.text_features(tokens, train=train)
        image_embeds, text_embeds = l2_normalize(image_pre), l2_normalize(text_pre)
        scale = self.scale()
        logits = scale * jnp.einsum("ie,te->it", image_embeds, text_embeds)
        aux = {
            "image_embeds": image_embeds,
            "text_embeds": text_embeds,
            "image_pre_norm": image_pre,
            "text_pre_norm": text_pre,
            "logit_scale": scale,
            "logits_per_text": logits.T,
        }
        return logits, aux


class TextEncoder(AttentionModel):
    """Bidirectional text encoder with BERT's masked-LM head; returns (logits [B, T, V], aux).

    Keys at `pad_id` are masked in every attention layer. The head is Dense(w) -> GELU ->
    LayerNorm -> h E^T + b with E the (tied) token embedding, as BERT's `cls/predictions`.

    Attributes:
      vocab_size: V.
      context_length: longest text.
      width: w.
      layers: blocks.
      num_heads: heads (None: w / 64).
      mlp_ratio: MLP hidden width / width.
      activation: "gelu" (exact, BERT) or "quick_gelu".
      layernorm_epsilon: LayerNorm epsilon (BERT: 1e-12).
      dropout_rate: dropout on the embeddings and the residual branches (BERT: 0.1).
      attention_dropout_rate: dropout on the attention weights (BERT: 0.1).
      pad_id: the padding id whose keys are masked.
      sow_weights: sow attention weights into 'intermediates'.
      num_segments: segment types of the optional `segments` input (BERT's token types: 2).
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype)
    """

    vocab_size: int
    context_length: int
    width: int
    layers: int
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    layernorm_epsilon: float = 1e-12
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    pad_id: int = 0
    sow_weights: bool = False
    num_segments: int = 2

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"text_mlm activation={self.activation!r} is not one of {ACTIVATIONS}")
        if self.num_segments < 1:
            raise ValueError(f"text_mlm num_segments={self.num_segments} must be at least 1")
        heads = self.num_heads or max(self.width // 64, 1)
        if self.width % heads:
            raise ValueError(
                f"text_mlm width={self.width} is not divisible by num_heads={heads}: set "
                f"num_heads to a divisor of the width"
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, tokens: jax.Array, segments: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Vocabulary logits at every position.

        Args:
          tokens: int [B, T] with some positions replaced by the MASK id.
          segments: optional int [B, T] in [0, num_segments), BERT's token types (sentence A or
            B): a learned embedding of them, "segment_embedding", is added to the token and
            position embeddings. None: no segment embedding, and no such parameter.
          train: enables dropout (needs rngs={'dropout': key}).

        Returns:
          (logits [B, T, V] float32, aux) with aux "tokens" the encoder output [B, T, w].
        """
        if tokens.ndim != 2:
            raise ValueError(f"text_mlm tokens must be [B, T], got shape {tokens.shape}")
        if segments is not None and segments.shape != tokens.shape:
            raise ValueError(
                f"text_mlm segments of shape {segments.shape} must match the tokens' {tokens.shape}"
            )
        text = TextTransformer(
            vocab_size=self.vocab_size,
            context_length=self.context_length,
            width=self.width,
            layers=self.layers,
            num_heads=self.num_heads or max(self.width // 64, 1),
            mlp_ratio=self.mlp_ratio,
            activation=self.activation,
            layernorm_epsilon=self.layernorm_epsilon,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            causal=False,
            sow_weights=self.sow_weights,
            name="text",
            **self.shared_fields(),
        )
        segment_embedding = None
        if segments is not None:
            segment_embedding = nn.Embed(
                self.num_segments,
                self.width,
                embedding_init=nn.initializers.normal(0.02),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="segment_embedding",
            )(segments)  # [B, T, w]
        keys = (tokens != self.pad_id)[:, None, None, :]  # [B, 1, 1, T]
        hidden = text(tokens, keys, train=train, input_embedding=segment_embedding)
        h = nn.Dense(
            self.width,
            kernel_init=nn.initializers.normal(0.02),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlm_transform",
        )(hidden)
        h = activation_fn(self.activation)(h)
        h = layer_norm32(self.layernorm_epsilon, self.param_dtype, name="mlm_norm")(h)
        bias = self.param("mlm_bias", nn.initializers.zeros_init(), (self.vocab_size,))
        logits = text.attend(h).astype(jnp.float32) + bias
        return logits, {"tokens": hidden}


def rank_captions(model: CLIP, params: Any, images: jax.Array, tokens: jax.Array) -> jax.Array:
    """Probability of each caption for each image: softmax over the captions of the scaled
    cosine similarities (the zero-shot classifier of sec. 3.1.2 when the captions are prompts).

    Args:
      model: a CLIP module.
      params: its parameters (the 'params' collection).
      images: float [B_img, H, W, C].
      tokens: int [B_txt, T].

    Returns:
      float32 [B_img, B_txt], rows summing to 1.
    """
    logits, _ = model.apply({"params": params}, jnp.asarray(images), jnp.asarray(tokens))
    return jax.nn.softmax(logits, axis=-1)


# -- variants -------------------------------------------------------------------------------------
# The released models (the paper's CLIP-ViT hyperparameter table; openai/CLIP model cards):
# 224 px, context 77, V = 49408.
_OPENAI_TEXT = dict(vocab_size=49408, context_length=77, text_layers=12, image_size=224)
CLIP_VARIANTS = VariantTable(
    "CLIP",
    "Radford et al. 2021, Table 20 (CLIP-ViT hyperparameters) and the released models",
    {
        "B/32": dict(
            _OPENAI_TEXT,
            embed_dim=512,
            patch_size=32,
            vision_width=768,
            vision_layers=12,
            text_width=512,
        ),
        "B/16": dict(
            _OPENAI_TEXT,
            embed_dim=512,
            patch_size=16,
            vision_width=768,
            vision_layers=12,
            text_width=512,
        ),
        "L/14": dict(
            _OPENAI_TEXT,
            embed_dim=768,
            patch_size=14,
            vision_width=1024,
            vision_layers=24,
            text_width=768,
        ),
    },
)
# Trainable parameters of the released models (FAITHFULNESS sec. 14/17; B/32 = the notebook's).
CLIP_PARAM_COUNTS = {"B/32": 151_277_313, "B/16": 149_620_737, "L/14": 427_616_513}

TEXT_MLM_VARIANTS = VariantTable(
    "text_mlm",
    "Devlin et al. 2019, sec. 3 (BERT-base); tiny: ours, sized for the digit captions",
    {
        "tiny": dict(width=128, layers=4, num_heads=4),
        "base": dict(width=768, layers=12, num_heads=12),
    },
)


def clip_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """CLIP constructor kwargs of a variant ("B/32", "B/16", "L/14"), with the non-None
    `overrides` taking precedence.

    Raises:
      ValueError: if the variant is unknown.
    """
    return preset_kwargs(CLIP_VARIANTS, variant, overrides)


def text_mlm_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """TextEncoder kwargs of a variant ("tiny", "base"), non-None `overrides` taking precedence.

    Raises:
      ValueError: if the variant is unknown.
    """
    return preset_kwargs(TEXT_MLM_VARIANTS, variant, overrides)


def clip_param_count(variant: str, image_size: int | None = None) -> int:
    """Trainable parameters of a CLIP variant, from `jax.eval_shape` (nothing is allocated)."""
    kwargs = clip_kwargs(variant)
    size = image_size or kwargs.get("image_size") or 224
    model = CLIP(**kwargs)
    shapes = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, kwargs["context_length"]), jnp.int32),
    )
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
