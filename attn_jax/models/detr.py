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

Mask head (`mask_head=True`; sec. 4.4, Fig. 8 and appendix A.5; the official models/
segmentation.py was read for the details the paper leaves open):
  attention  for each query, the last decoder layer's normalised output o_q against the memory
             (the encoder output) per head m: a_{q,m}(y, x) = (W_q o_q)_m . (W_k mem(y, x))_m /
             sqrt(d / M), padding cells at -inf, ONE softmax over all heads and cells of the
             query together (the official MHAttentionMap flattens heads and space before its
             softmax); no values: the M maps [B, Q, M, h, w] are the result
  decoder    per query, [input_proj map (d) | its M attention maps] -> conv3x3 (d + M) ->
             conv3x3 d/2, then for each earlier backbone map, deepest first: a 1x1 adapter of
             that map to the current width plus the nearest-upsampled stream, conv3x3 halving the
             width; a final conv3x3 to 1 channel: mask logits at the shallowest map's stride
             (1/4 for ResNet and Swin: stage 1). Every conv3x3 but the last is followed by
             GroupNorm (gcd(8, width) groups; the official 8 wherever 8 divides the width) and
             ReLU; convolutions are Kaiming-uniform (a = 1) with zero biases, as in the official
             code. The masks come out as outputs["masks"] [B, Q, H_1, W_1] (logits) and the
             attention maps as aux["mask_attention"].
  Parameters added: 2 (d^2 + d) for the attention's query and key maps; with D = d + M:
             9 D^2 + D + 2 D, 9 D d/2 + d/2 + d (lay1, lay2 with their GroupNorms); per earlier
             map i = 1..S-1 with C_i channels (deepest first), w_i = d / 2^i:
             C_i w_i + w_i (adapter) + 9 w_i w_i/2 + w_i/2 + w_i (conv and norm); and
             9 d / 2^S + 1 for the output conv (tests/models/test_detr_masks.py checks it).

Swin backbone (`backbone="swin"`): the Swin Transformer of Liu et al. 2021 (attn_jax/models/swin.py,
its backbone mode: no head, the stage maps in aux) with `backbone_swin` holding its fields (a
"variant" of `SWIN_VARIANTS` and overrides); each stage map DETR reads is layer-normed (as dense
Swin backbones add a norm per output stage), the last one feeds input_proj and the earlier ones the
mask head. The Swin's own final norm feeds only its pooled features and stays unused. Swin sees
the padded image whole (it has no pixel mask); the transformer still masks the padded cells.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
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
from attn_jax.models.swin import LN_EPS as SWIN_LN_EPS
from attn_jax.models.swin import Swin, swin_kwargs
from attn_jax.models.variants import VariantTable, check_fields, preset_kwargs

Initializer = Any

# Carion et al. 2020, sec. 4 and Table 1: d = 256, 8 heads, FFN 2048, 6 + 6 layers, 100 queries,
# dropout 0.1 on a ResNet-50 (or -101) with frozen batch norm. "R18" swaps the backbone for a
# lighter one; "digits" is a small model for 64x64 digit canvases (stride 8: an 8x8 map).
# "swin_T" puts DETR on Swin-T (Liu et al. 2021, Table 1), "swin_digits" on a two-stage Swin of
# the same strides as "digits" (4 and 8).
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
        "swin_T": dict(backbone="swin", backbone_swin={"variant": "T"}),
        "swin_digits": dict(
            backbone="swin",
            backbone_swin=dict(
                patch_size=4,
                window=4,
                embed_dim=32,
                depths=(2, 2),
                num_heads=(2, 4),
                drop_path_rate=0.0,
            ),
            d_model=64,
            num_heads=4,
            d_ff=256,
            num_encoder_layers=2,
            num_decoder_layers=2,
            num_queries=10,
        ),
    },
)

BACKBONES = ("swin", *RESNET_VARIANTS)  # what `DETR.backbone` may name (None: a bare ResNet)

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


def resize_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize of [N, H, W, ...] to [N, h, w, ...], torch's F.interpolate
    default (output cell i reads input cell floor(i * H / h)), as `resize_mask_nearest`."""
    return resize_mask_nearest(x, size)


class MaskAttentionMaps(nn.Module):
    """Each query's attention over the memory map per head, without values (module docstring).

    Attributes:
      num_heads: M.
      dtype, param_dtype: computation and parameter dtypes.
    """

    num_heads: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, queries: jax.Array, memory: jax.Array, valid: jax.Array) -> jax.Array:
        """queries [B, Q, d], memory [B, h, w, d], valid bool [B, h, w] -> float32 weights
        [B, Q, M, h, w], summing to 1 over (M, h, w) for each query."""
        d = queries.shape[-1]
        dense = functools.partial(
            nn.Dense,
            d,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        b, q = queries.shape[:2]
        h, w = memory.shape[1:3]
        head_dim = d // self.num_heads
        qh = dense(name="query")(queries).reshape(b, q, self.num_heads, head_dim)
        kh = dense(name="key")(memory).reshape(b, h, w, self.num_heads, head_dim)
        logits = jnp.einsum("bqmc,byxmc->bqmyx", qh * head_dim**-0.5, kh).astype(jnp.float32)
        logits = jnp.where(valid[:, None, None], logits, -jnp.inf)
        # One softmax over heads and cells together, as the official code flattens both.
        weights = jax.nn.softmax(logits.reshape(b, q, -1), axis=-1)
        return weights.reshape(b, q, self.num_heads, h, w)


class QueryMapConv(nn.Module):
    """The mask head's first 3x3 convolution (d + M -> d + M channels, padding 1) on
    [features | a query's attention maps], with the features' share computed once per image.

    Convolution is linear in its input channels, so conv([f | a_q]) = conv_f(f) + conv_a(a_q):
    the d feature channels, the same for every query, cost one convolution per image instead of
    one per query. The parameters are those of one Conv ("kernel" [3, 3, d + M, d + M], "bias"),
    as the official code has them.
    """

    features: int
    kernel_init: Any = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, shared: jax.Array, per_query: jax.Array) -> jax.Array:
        """shared [B, h, w, d], per_query [B, Q, h, w, M] -> [B, Q, h, w, features]."""
        d, m = shared.shape[-1], per_query.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init, (3, 3, d + m, self.features), self.param_dtype
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        dtype = self.dtype or shared.dtype
        kernel = kernel.astype(dtype)

        def conv(x, k):
            return jax.lax.conv_general_dilated(
                x.astype(dtype),
                k,
                (1, 1),
                ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )

        b, q, h, w, _ = per_query.shape
        from_features = conv(shared, kernel[:, :, :d])  # [B, h, w, F]
        from_maps = conv(per_query.reshape(b * q, h, w, m), kernel[:, :, d:])
        return from_maps.reshape(b, q, h, w, -1) + from_features[:, None] + bias.astype(dtype)


class MaskHeadSmallConv(nn.Module):
    """DETR's FPN-style mask decoder (module docstring): per-query maps up to the shallowest
    backbone map.

    Attributes:
      hidden: d, the transformer width; the stream narrows to d/2, d/4, ... .
      norm_groups: GroupNorm groups (gcd with the width is used).
      dtype, param_dtype: computation and parameter dtypes.
    """

    hidden: int
    norm_groups: int = 8
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, features: jax.Array, attention: jax.Array, fpn: tuple[jax.Array, ...]
    ) -> jax.Array:
        """features [B, h, w, d] (input_proj's map), attention [B, Q, M, h, w], fpn: earlier
        backbone maps [B, H_i, W_i, C_i], deepest first -> mask logits float32 [B, Q, H, W] at
        the last fpn map's size (the features' size without fpn maps)."""
        b, q, m, h, w = attention.shape
        conv = functools.partial(
            nn.Conv,
            kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

        def norm_relu(x, width, index):
            x = nn.GroupNorm(
                num_groups=math.gcd(self.norm_groups, width),
                epsilon=1e-5,
                dtype=jnp.float32,
                param_dtype=self.param_dtype,
                name=f"gn{index}",
            )(x)
            return nn.relu(x).astype(features.dtype)

        def conv_norm_relu(x, width, index):
            return norm_relu(conv(width, (3, 3), padding=1, name=f"lay{index}")(x), width, index)

        maps = jnp.moveaxis(attention, 2, -1).astype(features.dtype)  # [B, Q, h, w, M]
        dim = features.shape[-1] + m
        x = QueryMapConv(dim, dtype=self.dtype, param_dtype=self.param_dtype, name="lay1")(
            features, maps
        )  # [B, Q, h, w, d + M]: the conv of [features | maps] per query
        x = norm_relu(x.reshape(b * q, h, w, dim), dim, 1)
        width = self.hidden // 2
        x = conv_norm_relu(x, width, 2)
        for i, level in enumerate(fpn):
            adapted = conv(width, (1, 1), name=f"adapter{i + 1}")(level)  # [B, H, W, width]
            size = level.shape[1:3]
            x = resize_nearest(x, size).reshape(b, q, *size, width) + adapted[:, None]
            width //= 2
            x = conv_norm_relu(x.reshape(b * q, *size, -1), width, i + 3)
        x = conv(1, (3, 3), padding=1, name="out_lay")(x)  # [BQ, H, W, 1]
        return x.reshape(b, q, *x.shape[1:3]).astype(jnp.float32)


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
      backbone: a ResNet variant of `RESNET_VARIANTS` (or None: all from the fields below), or
        "swin" (a Swin Transformer from `backbone_swin`; the ResNet fields are then unused).
      backbone_swin: backbone="swin": the Swin's fields (`attn_jax.models.swin.Swin`), with an
        optional "variant" ("T", "S", "B", "L") they override; its head is never built.
      backbone_block: overrides the variant's block ("basic" or "bottleneck").
      backbone_stage_sizes: overrides the variant's blocks per stage.
      backbone_width: overrides the variant's stem and stage-1 width.
      backbone_stem: overrides the variant's stem ("imagenet": stride 4, "small": stride 1).
      backbone_norm: the ResNet norm; "frozen_batch" as in the paper (constants filled by a
        converted checkpoint, the identity without one), "group" to train from scratch.
      backbone_norm_groups: groups of the "group" norm.
      backbone_padding: the ResNet's 3x3 padding, "symmetric" (1, 1) as torch does, or "same"
        (attn_jax/models/resnet.py).
      backbone_stage: the stage (1-based) whose map feeds the transformer; None = the last one.
        Stages after it are not built. Stride = stem stride x 2^(stage - 1) (Swin: patch size x
        2^(stage - 1)).
      mask_head: add the mask head (module docstring): outputs["masks"] [B, Q, H_1, W_1].
      mask_norm_groups: GroupNorm groups of the mask head (8).
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
    backbone_padding: str = "symmetric"
    backbone_stage: int | None = None
    backbone_swin: Mapping[str, Any] | None = None
    mask_head: bool = False
    mask_norm_groups: int = 8
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
        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ValueError(
                f"DETR backbone={self.backbone!r} is not a ResNet variant or 'swin'; valid: "
                f"{sorted(BACKBONES)}"
            )
        if self.backbone_swin is not None and self.backbone != "swin":
            raise ValueError(
                f"DETR backbone_swin is set but backbone={self.backbone!r}: set backbone='swin' "
                "or drop backbone_swin"
            )
        if self.backbone_norm not in NORMS:
            raise ValueError(f"DETR backbone_norm={self.backbone_norm!r} is not one of {NORMS}")
        if self.backbone == "swin":
            num_stages = len(self._swin_fields()["depths"])
        else:
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

    def _swin_fields(self) -> dict[str, Any]:
        fields = dict(self.backbone_swin or {})
        check_fields(Swin, fields, "DETR's model.backbone_swin")
        variant = fields.pop("variant", None)
        return dict(swin_kwargs(variant, **fields), num_classes=0)

    def _backbone_maps(self, images: jax.Array, train: bool) -> tuple[dict[str, jax.Array], int]:
        """({"stage1": [B, H_1, W_1, C_1], ...} up to the stage DETR reads, that stage)."""
        if self.backbone == "swin":
            fields = self._swin_fields()
            stage = self.backbone_stage or len(fields["depths"])
            fields["depths"] = tuple(fields["depths"])[:stage]
            fields["num_heads"] = tuple(fields["num_heads"])[:stage]
            _, aux = Swin(**fields, **self.shared_fields(), name="backbone")(images, train=train)
            # Only the maps that are read get a norm: the last one, and the rest with masks.
            read = range(1, stage + 1) if self.mask_head else (stage,)
            maps = {
                f"stage{i}": nn.LayerNorm(
                    epsilon=SWIN_LN_EPS,
                    dtype=jnp.float32,
                    param_dtype=self.param_dtype,
                    # Not "backbone...": lr multipliers and init_into match name prefixes.
                    name=f"stage_norm{i}",
                )(aux[f"stage{i}"]).astype(images.dtype)
                for i in read
            }
            return maps, stage
        fields = self._backbone_fields()
        stage = self.backbone_stage or len(fields["stage_sizes"])
        fields["stage_sizes"] = tuple(fields["stage_sizes"])[:stage]
        fields.pop("num_classes", None)
        _, maps = ResNet(
            **fields,
            norm=self.backbone_norm,
            norm_groups=self.backbone_norm_groups,
            padding=self.backbone_padding,
            num_classes=0,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="backbone",
        )(images, train=train)
        return maps, stage

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
          (cx, cy, w, h) relative to the real image, and with `mask_head` "masks": float32
          [B, Q, H_1, W_1] mask logits at the first backbone stage's stride}, aux) (module
          docstring).

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

        maps, stage = self._backbone_maps(images, train)
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
        hs, memory = DetrTransformer(
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
        outputs = {"logits": layer_logits[-1], "boxes": layer_boxes[-1]}
        if self.mask_head:
            kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
            attention = MaskAttentionMaps(self.num_heads, name="bbox_attention", **kw)(
                hs[-1], memory.reshape(batch, h, w, self.d_model), feature_mask
            )  # [B, Q, M, h, w]
            fpn = tuple(maps[f"stage{i}"] for i in range(stage - 1, 0, -1))
            outputs["masks"] = MaskHeadSmallConv(
                self.d_model, self.mask_norm_groups, name="mask_head", **kw
            )(features, attention, fpn)
            aux["mask_attention"] = attention
        return outputs, aux


def detr_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """DETR constructor kwargs of a variant (`DETR_VARIANTS`), non-None `overrides` on top.

    Raises:
      ValueError: unknown variant.
    """
    return preset_kwargs(DETR_VARIANTS, variant, overrides)


__all__ = [
    "BACKBONES",
    "DETR",
    "MaskAttentionMaps",
    "MaskHeadSmallConv",
    "DETR_VARIANTS",
    "PUBLISHED_PARAMS",
    "DETR_DECODER_NAMES",
    "DETR_ENCODER_NAMES",
    "BoxMLP",
    "DetrTransformer",
    "detr_kwargs",
    "resize_mask_nearest",
    "resize_nearest",
]
