"""Models of the self-supervised pretext tasks that need an output our other models lack; each
composes an existing model and adds only its head.

`Colorizer`: Zhang, Isola, Efros 2016, "Colorful Image Colorization" (ECCV 2016), sec. 2: from
the lightness channel X in R^{H x W x 1}, predict the colour channels Y in R^{H x W x 2} (a*b*).
The paper's network is a VGG-style CNN; here the encoder is our ViT (`attn_jax.models.vit.ViT`,
the submodule "encoder", built from the nested config `encoder` with `num_classes=0`) and the
prediction head that of SimMIM (Xie et al. 2022, sec. 3.3): one linear map of each patch token to
the P*P*C values of its pixels (a 1x1 conv), rearranged into the image (`depth_to_space`). The
encoder keeps the parameter names of a ViT classifier, so a fine-tuning run loads
`params["encoder"]` as it loads a masked-image-modeling encoder (`init_from_prefix="encoder"`).

`BertPretraining`: Devlin, Chang, Lee, Toutanova 2019, "BERT" (NAACL 2019), sec. 3.1: the masked
LM and next-sentence prediction on one input "[CLS] A [SEP] B [SEP]". The encoder is our masked-LM
text encoder (`attn_jax.models.clip.TextEncoder`, the submodule "encoder", with its masked-LM head
tied to the token embedding); the NSP classifier reads the final hidden state of [CLS] through
BERT's pooler (Dense + tanh) and a Dense to the two classes IsNext / NotNext. As BERT (Fig. 2), a
learned segment embedding (A or B: the text encoder's "segment_embedding") is added to every input
token's token and position embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.models.blocks import AttentionModel
from attn_jax.models.clip import TextEncoder, text_mlm_kwargs
from attn_jax.models.mim import depth_to_space
from attn_jax.models.variants import VariantTable, check_fields, merge_fields, preset_kwargs
from attn_jax.models.vit import ViT, vit_kwargs, vit_layer_index


class Colorizer(AttentionModel):
    """ViT encoder with a per-patch linear head that predicts `out_channels` values per pixel.

    Attributes:
      encoder: the encoder's ViT fields (and optionally a ViT "variant"); default pool "token"
        (a class token, not decoded) and MAE's fixed 2D sin-cos position embedding.
      out_channels: C, values predicted per pixel (2: a*b*).
    """

    encoder: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    out_channels: int = 2

    ENCODER_DEFAULTS: ClassVar[dict[str, Any]] = {"pool": "token", "posemb": "sincos2d"}

    def __post_init__(self):
        fields = self.encoder_fields()
        for required in ("patch_size", "hidden_size", "depth", "num_heads", "mlp_dim"):
            if fields.get(required) is None:
                raise ValueError(
                    f"Colorizer encoder misses {required!r}: set model.encoder.{required} or "
                    "model.encoder.variant"
                )
        if fields["pool"] not in ("token", "gap"):
            raise ValueError(f"Colorizer encoder pool={fields['pool']!r} is not one of token, gap")
        if self.out_channels < 1:
            raise ValueError(f"Colorizer out_channels={self.out_channels} must be at least 1")
        super().__post_init__()

    def encoder_fields(self) -> dict[str, Any]:
        """The fields of the encoder ViT; a classifier with these (and num_classes) fine-tunes
        from this model's `params["encoder"]`."""
        fields = dict(self.encoder)
        check_fields(ViT, fields, "Colorizer's model.encoder")
        variant = fields.pop("variant", None)
        fields = vit_kwargs(variant, **merge_fields(self.ENCODER_DEFAULTS, fields))
        return dict(fields, num_classes=0, **self.shared_fields())

    def layer_index(self, path: str) -> int | slice | None:
        """The encoder's layer ids for layer-wise lr decay; the head sits above every layer."""
        top, _, rest = path.partition("/")
        return vit_layer_index(rest) if top == "encoder" else None

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Predicts every pixel's colour channels.

        Args:
          images: float [B, H, W, C_in] (the lightness: C_in = 1), sides divisible by the patch.
          train: enables dropout (rngs={'dropout': key}).

        Returns:
          (prediction [B, H, W, out_channels] float32, aux) with aux["tokens"] the encoded patch
          tokens [B, N, D].
        """
        fields = self.encoder_fields()
        p = int(fields["patch_size"])
        b, h, w, _ = images.shape
        if h % p or w % p:
            raise ValueError(
                f"Colorizer needs image sides divisible by patch_size={p}, got {h}x{w}: resize "
                "the images (data.image_size) or change the patch size"
            )
        _, enc = ViT(**fields, name="encoder")(images, train=train)
        tokens = enc["tokens"][:, 1:] if fields["pool"] == "token" else enc["tokens"]
        z = tokens.reshape(b, h // p, w // p, tokens.shape[-1])  # [B, gh, gw, D]
        z = nn.Conv(
            p * p * self.out_channels,
            (1, 1),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="decoder",
        )(z)
        return depth_to_space(z, p).astype(jnp.float32), {"tokens": tokens}


class BertPretraining(AttentionModel):
    """The masked-LM text encoder plus BERT's next-sentence classifier.

    Attributes:
      vocab_size: V.
      context_length: T, tokens of one text row of the dataset (SOT and EOT included); the model
        reads pairs "[CLS] A [SEP] B [SEP]" of up to 2T - 1 tokens (A's SOT is [CLS], its EOT
        the first [SEP], B's SOT is dropped).
      encoder: the text encoder's fields (`attn_jax.models.clip.TextEncoder`: width, layers,
        num_heads, dropout_rate, ...; optionally its "variant").
    """

    vocab_size: int
    context_length: int
    encoder: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.context_length < 2:
            raise ValueError(
                f"bert context_length={self.context_length} must hold SOT and EOT (>= 2)"
            )
        fields = self.encoder_fields()
        if fields.get("width") is None or fields.get("layers") is None:
            raise ValueError(
                "bert encoder misses 'width' or 'layers': set model.encoder.width and "
                "model.encoder.layers, or model.encoder.variant"
            )
        super().__post_init__()

    @property
    def pair_length(self) -> int:
        """2T - 1: the longest "[CLS] A [SEP] B [SEP]"."""
        return 2 * int(self.context_length) - 1

    def encoder_fields(self) -> dict[str, Any]:
        """The TextEncoder fields; a `text_mlm` model with these loads `params["encoder"]`."""
        fields = dict(self.encoder)
        for owned in ("vocab_size", "context_length"):
            if owned in fields:
                raise ValueError(
                    f"bert model.encoder.{owned} is the model's own: set model.{owned} instead"
                )
        check_fields(TextEncoder, fields, "bert's model.encoder")
        variant = fields.pop("variant", None)
        fields = text_mlm_kwargs(variant, **fields)
        return dict(
            fields,
            vocab_size=self.vocab_size,
            context_length=self.pair_length,
            **self.shared_fields(),
        )

    @nn.compact
    def __call__(
        self, tokens: jax.Array, segments: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked-LM logits at every position and the NSP logits of each pair.

        Args:
          tokens: int [B, L], L <= 2T - 1: "[CLS] A [SEP] B [SEP]" then PAD, some tokens masked.
          segments: int [B, L], 0 on "[CLS] A [SEP]" and 1 on "B [SEP]" (`tasks.bert.pack_pairs`);
            None: all 0, as BERT without token types (the parameters are the same either way).
          train: enables dropout (rngs={'dropout': key}).

        Returns:
          (logits [B, L, V] float32, aux) with aux["nsp_logits"] [B, 2] float32 (class 0 IsNext,
          1 NotNext), aux["pooled"] [B, w] and aux["tokens"] the encoder output [B, L, w].
        """
        fields = self.encoder_fields()
        if segments is None:
            segments = jnp.zeros_like(tokens)
        logits, aux = TextEncoder(**fields, name="encoder")(tokens, segments, train=train)
        hidden = aux["tokens"]
        dense = dict(
            kernel_init=nn.initializers.normal(0.02),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        pooled = jnp.tanh(nn.Dense(hidden.shape[-1], name="nsp_pooler", **dense)(hidden[:, 0]))
        nsp = nn.Dense(2, name="nsp_head", **dense)(pooled).astype(jnp.float32)
        return logits, {"tokens": hidden, "pooled": pooled, "nsp_logits": nsp}


COLORIZER_VARIANTS = VariantTable("colorizer", "ours (no presets)", {})
BERT_VARIANTS = VariantTable("bert", "ours (no presets)", {})


def colorizer_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """Colorizer constructor kwargs (no presets: `variant` must be None, or it is a one-line
    ValueError); a nested `encoder` merges."""
    return preset_kwargs(COLORIZER_VARIANTS, variant, overrides)


def bert_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """BertPretraining constructor kwargs (no presets; the encoder's size is its own
    `encoder.variant`, e.g. "tiny")."""
    return preset_kwargs(BERT_VARIANTS, variant, overrides)


__all__ = [
    "BERT_VARIANTS",
    "COLORIZER_VARIANTS",
    "BertPretraining",
    "Colorizer",
    "bert_kwargs",
    "colorizer_kwargs",
]
