"""DETR: Carion, Massa, Synnaeve, Usunier, Kirillov, Zagoruyko 2020, "End-to-End Object Detection
with Transformers" (ECCV 2020).

What is implemented (sec. 3.2, Fig. 2, appendix A.3 and Fig. 10):
  backbone   f = ResNet(x) in R^{C x H/32 x W/32} (C = 2048 for ResNet-50), pixels outside
             `pixel_mask` zeroed first (the reference pads batches with zeros), the mask
             downsampled to the map by nearest neighbour (torch's F.interpolate default)
  input_proj z_0 = Conv1x1(f) in R^{d x h x w}, flattened to [B, hw, d]
  pos        the fixed 2D sine encoding of the real pixels (`sine_position_encoding_2d`, d/2
             channels per axis, [E_y | E_x]), added to the queries and keys of EVERY attention
             layer and never to the values
  encoder    post-norm layers: x = LN(x + Drop(Attn(q = x + pos, k = x + pos, v = x)));
             x = LN(x + Drop(FFN(x))), padding cells masked as keys; no final encoder norm
  decoder    tgt starts at zeros; N learned query embeddings (object queries) q_pos are added
             to the queries and keys of the self-attention and to the queries of the
             cross-attention, whose keys are memory + pos and values the memory; post-norm;
             all N objects are decoded in parallel (no causal mask, no autoregression)
  outputs    one LayerNorm, SHARED by all decoder layers, is applied to each layer's output
             (the un-normalised output feeds the next layer); on every normalised output
             class = Linear(d, K + 1) (index K = "no object") and
             box = sigmoid(MLP_3(d -> d -> d -> 4)), normalised (cx, cy, w, h)
  FFN(x)     = Linear_2(Drop(ReLU(Linear_1(x)))), d -> d_ff -> d
Dropout 0.1 sits on the attention weights (torch's nn.MultiheadAttention dropout), inside the FFN
and on each residual branch, as in the official code.

Initialisation as in the official code: Xavier-uniform on every >1-D transformer parameter, zero
attention biases, torch's default U(+-1/sqrt(fan_in)) for the FFN biases, the heads and the 1x1
projection, N(0, 1) for the query embeddings. One difference: torch draws q, k and v from ONE
fused [3d, d] Xavier matrix (bound sqrt(6 / 4d)); here each of the three projections is its own
[d, d] Xavier matrix (bound sqrt(6 / 2d)), as in flax.

Parameters: with the frozen batch norm of the reference ("frozen_batch": its affine terms and
statistics are constants in 'batch_stats', not parameters), DETR-R50 at 91 classes has
41,524,768 parameters, 41,302,368 of them trainable when the stem and stage 1 are frozen (the
number DETR's main.py prints): transformer 17,363,456 + heads, input projection and queries
706,400 + ResNet-50 convolutions 23,454,912 (222,400 of them in the stem and stage 1).

The model returns ({"logits": [B, Q, K+1], "boxes": [B, Q, 4]}, aux) with the outputs of every
decoder layer in aux["layer_logits"] [L, B, Q, K+1] and aux["layer_boxes"] [L, B, Q, 4] (the
auxiliary decoding losses of sec. 3.2; the last entry equals the output), the normalised decoder
outputs aux["decoder_outputs"] [L, B, Q, d], the projected feature map aux["features"]
[B, h, w, d] and its validity aux["feature_mask"] [B, h, w]. With
`sow_attention` the decoder's attention weights are sown as ('intermediates', 'attention'): the
self-attention's [B, heads, Q, Q] under `self_attention`, the cross-attention's [B, heads, Q, hw]
under `cross_attention`.

The encoder and decoder layers are post-norm `attn_jax.models.blocks.TransformerBlock`s under the
official code's names (`DETR_ENCODER_NAMES`, `DETR_DECODER_NAMES`), so the model's
`attention_fn` and `attention_impl` reach all of their attention.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.positional import sine_position_encoding_2d
from attn_jax.models.blocks import (
    AttentionModel,
    BlockNames,
    stack_blocks,
    torch_bias_init,
    torch_linear_init,
)
from attn_jax.models.resnet import NORMS, RESNET_VARIANTS, ResNet, resnet_kwargs
from attn_jax.models.variants import VariantTable, preset_kwargs

Initializer = Any

# Carion et al. 2020, sec. 4 and Table 1: d = 256, 8 heads, FFN 2048, 6 + 6 layers, 100 queries,
# dropout 0.1 on a ResNet-50 (or -101) with frozen batch norm. "R18" swaps the backbone for a
# lighter one; "digits" is a small model for 64x64 digit canvases (stride 8: an 8x8 map).
DETR_VARIANTS = VariantTable(
    "DETR",
    "Carion et al. 2020, sec. 4 and Table 1",
    {
        "R50": dict(
            backbone="resnet50",
            backbone_norm="frozen_batch",
            d_model=256,
            num_heads=8,
            d_ff=2048,
            num_encoder_layers=6,
            num_decoder_layers=6,
            num_queries=100,
            dropout_rate=0.1,
        ),
        "R18": dict(backbone="resnet18", backbone_norm="frozen_batch"),
        "digits": dict(
            backbone="resnet18",
            backbone_stage_sizes=(1, 1),
            backbone_width=32,
            backbone_norm="group",
            d_model=64,
            num_heads=4,
            d_ff=256,
            num_encoder_layers=2,
            num_decoder_layers=2,
            num_queries=10,
        ),
    },
)

# Parameters of DETR-R50 at 91 classes (module docstring): all of the 'params' collection, and the
# trainable ones with the stem and stage 1 frozen, as the official repository prints.
PUBLISHED_PARAMS: dict[str, dict[str, int]] = {
    "R50": {"params": 41_524_768, "trainable": 41_302_368},
}


def resize_mask_nearest(mask: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize of a bool mask [B, H, W] to [B, h, w] (torch's F.interpolate
    default: output cell i reads input cell floor(i * H / h))."""
    height, width = mask.shape[1:3]
    rows = (np.arange(size[0]) * height) // size[0]
    cols = (np.arange(size[1]) * width) // size[1]
    return mask[:, rows][:, :, cols]


# The names of DETR's checkpoints (models/transformer.py of the official code).
DETR_ENCODER_NAMES = BlockNames(
    self_norm="norm1",
    self_attention="self_attention",
    mlp_norm="norm2",
    mlp="ffn",
    fc1="linear1",
    fc2="linear2",
)
DETR_DECODER_NAMES = dataclasses.replace(DETR_ENCODER_NAMES, cross_norm="norm2", mlp_norm="norm3")


class DetrTransformer(AttentionModel):
    """DETR's encoder-decoder (post-norm `blocks.TransformerBlock`s): returns the shared-norm
    output of every decoder layer and the memory.

    Attributes:
      num_heads: heads of every attention layer.
      d_ff: FFN width.
      num_encoder_layers: encoder depth.
      num_decoder_layers: decoder depth.
      dropout_rate: attention-weight, FFN and residual dropout.
      epsilon: LayerNorm epsilon (torch's 1e-5).
      sow_attention: sow the decoder's attention weights (self and cross).
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype)
    """

    num_heads: int = 8
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout_rate: float = 0.1
    epsilon: float = 1e-5
    sow_attention: bool = False

    @nn.compact
    def __call__(
        self,
        src: jax.Array,
        pos: jax.Array,
        valid: jax.Array,
        query_embed: jax.Array,
        *,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """Encodes the flattened map and decodes the object queries.

        Args:
          src: [B, T, d] flattened feature map.
          pos: [B, T, d] its positional encoding.
          valid: bool [B, T], False on padding cells (masked as keys everywhere).
          query_embed: [Q, d] learned object queries.
          train: apply dropout.

        Returns:
          (hs [L, B, Q, d]: every decoder layer's output after the shared norm, memory [B, T, d]).
        """
        d = src.shape[-1]
        block = dict(
            num_heads=self.num_heads,
            mlp_dim=self.d_ff,
            pre_norm=False,
            activation="relu",
            dropout_rate=self.dropout_rate,
            mlp_dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.dropout_rate,
            layernorm_epsilon=self.epsilon,
            mlp_bias_init=torch_bias_init(d),
            mlp_out_bias_init=torch_bias_init(self.d_ff),
            train=train,
            **self.shared_fields(),
        )
        key_mask = valid[:, None, None, :]  # [B, 1, 1, T]
        memory, _ = stack_blocks(
            src,
            depth=self.num_encoder_layers,
            block=dict(block, names=DETR_ENCODER_NAMES),
            name="encoder_layer{i}",
            mask=key_mask,
            query_pos=pos,
        )
        query_pos = jnp.broadcast_to(query_embed, (src.shape[0], *query_embed.shape))
        # tgt starts at zeros; no mask among the queries: every object is decoded at once.
        tgt = jnp.zeros_like(query_pos, dtype=memory.dtype)
        _, layers = stack_blocks(
            tgt,
            depth=self.num_decoder_layers,
            block=dict(
                block,
                names=DETR_DECODER_NAMES,
                cross_attention=True,
                sow_weights=self.sow_attention,
                return_tokens=True,
            ),
            name="decoder_layer{i}",
            memory=memory,
            memory_mask=key_mask,
            query_pos=query_pos,
            memory_pos=pos,
        )
        # One norm, shared: its parameters are reused for every layer's intermediate output.
        decoder_norm = nn.LayerNorm(
            epsilon=self.epsilon,
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name="decoder_norm",
        )
        outputs = [decoder_norm(layers[f"block{i:02d}"]) for i in range(self.num_decoder_layers)]
        return jnp.stack(outputs).astype(memory.dtype), memory


class BoxMLP(nn.Module):
    """A ReLU MLP of `num_layers` Linear layers (hidden width `hidden`, output `out`)."""

    hidden: int
    out: int = 4
    num_layers: int = 3
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            fan_in = x.shape[-1]
            x = nn.Dense(
                self.out if i == self.num_layers - 1 else self.hidden,
                kernel_init=torch_linear_init(),
                bias_init=torch_bias_init(fan_in),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layer{i}",
            )(x)
            if i < self.num_layers - 1:
                x = nn.relu(x)
        return x


class DETR(AttentionModel):
    """DEtection TRansformer (Carion et al. 2020); see the module docstring.

    Attributes:
      num_classes: K, object classes (the class head has K + 1 outputs; index K = no object). The
        paper's COCO model uses K = 91 (max category id + 1), tfds' coco/2017 has 80.
      num_queries: N, object queries (an upper bound on the detections per image).
      d_model: transformer width d.
      num_heads: attention heads.
      d_ff: FFN width.
      num_encoder_layers: encoder depth.
      num_decoder_layers: decoder depth (and number of auxiliary outputs).
      dropout_rate: dropout on attention weights, inside the FFN and on residual branches.
      layer_norm_epsilon: epsilon of the transformer's LayerNorms.
      pos_temperature: T of the 2D sine encoding.
      backbone: a ResNet variant of `RESNET_VARIANTS` (or None: all from the fields below).
      backbone_block: overrides the variant's block ("basic" or "bottleneck").
      backbone_stage_sizes: overrides the variant's blocks per stage.
      backbone_width: overrides the variant's stem and stage-1 width.
      backbone_stem: overrides the variant's stem ("imagenet": stride 4, "small": stride 1).
      backbone_norm: the ResNet norm; "frozen_batch" as in the paper (constants filled by a
        converted checkpoint, the identity without one), "group" to train from scratch.
      backbone_norm_groups: groups of the "group" norm.
      backbone_symmetric_padding: pad the backbone's 3x3 convolutions (1, 1) as torch does
        rather than "SAME" (attn_jax/models/resnet.py); set by converted torch checkpoints.
      backbone_stage: the stage (1-based) whose map feeds the transformer; None = the last one.
        Stages after it are not built. Stride = stem stride x 2^(stage - 1).
      sow_attention: sow the decoder's attention weights (explicit attention path).
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype; outputs
      are float32)
    """

    num_classes: int | None = None
    num_queries: int = 100
    d_model: int = 256
    num_heads: int = 8
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-5
    pos_temperature: float = 10_000.0
    backbone: str | None = "resnet50"
    backbone_block: str | None = None
    backbone_stage_sizes: tuple[int, ...] | None = None
    backbone_width: int | None = None
    backbone_stem: str | None = None
    backbone_norm: str = "frozen_batch"
    backbone_norm_groups: int = 32
    backbone_symmetric_padding: bool = False
    backbone_stage: int | None = None
    sow_attention: bool = False

    def __post_init__(self):
        # Checked at construction, so that a bad config fails while it is read.
        if not self.num_classes or self.num_classes < 1:
            raise ValueError(
                f"DETR needs num_classes >= 1 (object classes, without 'no object'); got "
                f"{self.num_classes}"
            )
        if self.d_model % self.num_heads or self.d_model % 4:
            raise ValueError(
                f"DETR d_model={self.d_model} must be divisible by num_heads={self.num_heads} "
                f"and by 4 (sin/cos pairs for each image axis)"
            )
        if self.backbone is not None and self.backbone not in RESNET_VARIANTS:
            raise ValueError(
                f"DETR backbone={self.backbone!r} is not a ResNet variant; valid: "
                f"{sorted(RESNET_VARIANTS)}"
            )
        if self.backbone_norm not in NORMS:
            raise ValueError(f"DETR backbone_norm={self.backbone_norm!r} is not one of {NORMS}")
        num_stages = len(self._backbone_fields()["stage_sizes"])
        if self.backbone_stage is not None and not 1 <= self.backbone_stage <= num_stages:
            raise ValueError(
                f"DETR backbone_stage={self.backbone_stage} out of range: the backbone has stages "
                f"1..{num_stages}"
            )
        if min(self.num_queries, self.num_encoder_layers, self.num_decoder_layers) < 1:
            raise ValueError("DETR needs num_queries, num_encoder_layers, num_decoder_layers >= 1")
        super().__post_init__()

    def _backbone_fields(self) -> dict[str, Any]:
        fields = resnet_kwargs(
            self.backbone,
            block=self.backbone_block,
            stage_sizes=self.backbone_stage_sizes,
            width=self.backbone_width,
            stem=self.backbone_stem,
        )
        fields.setdefault("stage_sizes", ResNet.stage_sizes)
        return fields

    @nn.compact
    def __call__(
        self, images: jax.Array, pixel_mask: jax.Array | None = None, *, train: bool = False
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """Predicts num_queries (class, box) pairs per image.

        Args:
          images: float [B, H, W, C], normalised, padded to a common size.
          pixel_mask: bool [B, H, W], True on real pixels, False on padding; None = all real.
          train: apply dropout (needs the 'dropout' stream).

        Returns:
          ({"logits": float32 [B, Q, K+1], "boxes": float32 [B, Q, 4] in (0, 1), normalised
          (cx, cy, w, h) relative to the real image}, aux) (module docstring).

        Raises:
          ValueError: images not [B, H, W, C] or a pixel_mask of another shape.
        """
        if images.ndim != 4:
            raise ValueError(
                f"DETR expects images [B, H, W, C]; got shape {images.shape} (add a channel axis)"
            )
        batch, height, width = images.shape[:3]
        if pixel_mask is None:
            pixel_mask = jnp.ones((batch, height, width), bool)
        elif pixel_mask.shape != (batch, height, width):
            raise ValueError(
                f"DETR pixel_mask must be [B, H, W] = {(batch, height, width)} like the images; "
                f"got {pixel_mask.shape}"
            )
        pixel_mask = pixel_mask.astype(bool)
        # Padding is zero whatever the pipeline wrote there: the reference pads with zeros.
        images = jnp.where(pixel_mask[..., None], images, 0).astype(images.dtype)

        fields = self._backbone_fields()
        stage = self.backbone_stage or len(fields["stage_sizes"])
        fields["stage_sizes"] = tuple(fields["stage_sizes"])[:stage]
        fields.pop("num_classes", None)
        _, maps = ResNet(
            **fields,
            norm=self.backbone_norm,
            norm_groups=self.backbone_norm_groups,
            symmetric_padding=self.backbone_symmetric_padding,
            num_classes=0,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="backbone",
        )(images, train=train)
        features = maps[f"stage{stage}"]  # [B, h, w, C]
        feature_mask = resize_mask_nearest(pixel_mask, features.shape[1:3])  # [B, h, w]
        features = nn.Conv(
            self.d_model,
            (1, 1),
            kernel_init=torch_linear_init(),
            bias_init=torch_bias_init(features.shape[-1]),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="input_proj",
        )(features)  # [B, h, w, d]
        pos = sine_position_encoding_2d(
            feature_mask, self.d_model // 2, temperature=self.pos_temperature, normalize=True
        )
        h, w = features.shape[1:3]
        query_embed = self.param(
            "query_embed",
            nn.initializers.normal(1.0),
            (self.num_queries, self.d_model),
            self.param_dtype,
        )
        hs, _ = DetrTransformer(
            num_heads=self.num_heads,
            d_ff=self.d_ff,
            num_encoder_layers=self.num_encoder_layers,
            num_decoder_layers=self.num_decoder_layers,
            dropout_rate=self.dropout_rate,
            epsilon=self.layer_norm_epsilon,
            sow_attention=self.sow_attention,
            name="transformer",
            **self.shared_fields(),
        )(
            features.reshape(batch, h * w, self.d_model),  # [B, hw, d]
            pos.reshape(batch, h * w, self.d_model),
            feature_mask.reshape(batch, h * w),
            query_embed,
            train=train,
        )  # hs: [L, B, Q, d]
        layer_logits = nn.Dense(
            self.num_classes + 1,
            kernel_init=torch_linear_init(),
            bias_init=torch_bias_init(self.d_model),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="class_embed",
        )(hs).astype(jnp.float32)
        layer_boxes = nn.sigmoid(
            BoxMLP(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="bbox_embed")(
                hs
            ).astype(jnp.float32)
        )
        aux = {
            "layer_logits": layer_logits,
            "layer_boxes": layer_boxes,
            "decoder_outputs": hs,
            "features": features,
            "feature_mask": feature_mask,
        }
        return {"logits": layer_logits[-1], "boxes": layer_boxes[-1]}, aux


def detr_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """DETR constructor kwargs of a variant (`DETR_VARIANTS`), non-None `overrides` on top.

    Raises:
      ValueError: unknown variant.
    """
    return preset_kwargs(DETR_VARIANTS, variant, overrides)


__all__ = [
    "DETR",
    "DETR_VARIANTS",
    "PUBLISHED_PARAMS",
    "DETR_DECODER_NAMES",
    "DETR_ENCODER_NAMES",
    "BoxMLP",
    "DetrTransformer",
    "detr_kwargs",
    "resize_mask_nearest",
]
