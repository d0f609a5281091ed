"""Vision Transformer: Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani,
Minderer, Heigold, Gelly, Uszkoreit, Houlsby 2021, "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale" (ICLR 2021).

Equations (sec. 3.1):
  (1) z_0  = [x_class; x_p^1 E; ...; x_p^N E] + E_pos   patch embedding (a Conv with
                                                        kernel = stride = P, see `patchify`),
                                                        class token, learned position embedding
  (2) z'_l = MSA(LN(z_{l-1})) + z_{l-1},  l = 1..L       pre-LN attention sub-block
  (3) z_l  = MLP(LN(z'_l)) + z'_l,        l = 1..L       pre-LN MLP sub-block
  (4) y    = LN(z_L^0)                                   representation = normed class token

`pool="gap"` replaces (4) by the mean over all tokens after the final LN, as the official JAX code
does (App. D.3: works as well as the class token given a suitable learning rate); `pool="flatten"`
concatenates all normed tokens, the head of the Keras example below. Parameter names follow the
official google-research/vision_transformer code (`embedding`, `cls`,
`Transformer/posembed_input/pos_embedding`, `Transformer/encoderblock_{i}/{LayerNorm_0,
MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3}`, `Transformer/encoder_norm`,
`pre_logits`, `head`), so its checkpoints map onto this tree one to one; with `scan=True` the blocks
are stacked under `Transformer/encoderblock` with a leading depth axis, as in big_vision.

The masked-image models of models/mim.py use this ViT as their encoder (`num_classes=0`: no head):
SimMIM (Xie et al. 2022) passes `mask` and gets a `mask_token` in place of the masked patch
embeddings; MAE (He et al. 2022) passes `keep`, adds its fixed 2D sin-cos position embedding
(`posemb="sincos2d"`) and encodes the visible patches only.

Variants (`VIT_VARIANTS`): B, L and H from Table 1 of the paper; Ti and S from Touvron et al. 2021
("Training data-efficient image transformers", DeiT, Table 1) as adopted by the official repo.
Published parameter counts (1000 classes, 224 px) are asserted in tests/models/test_vit.py.

The preset "textbook_cifar10" is the Keras example "Image classification with Vision Transformer"
(K. Salama, keras.io, 2021): 32x32 inputs, patch 4, width 64, 6 blocks of 8 heads (key_dim 8),
MLP Dense(128, GELU) -> Dense(64, GELU) with GELU on both layers, dropout 0.1 after each MLP layer
and on the attention weights but neither after the attention nor after the embedding, no class
token, head LayerNorm -> Flatten -> Dropout(0.5) -> [Dense(2048, GELU), Dropout(0.5),
Dense(1024, GELU), Dropout(0.5)] -> Dense(classes): 10,707,274 trainable parameters for 10 classes.
Its initializers are the official ViT ones by default; `weight_init="keras"` gives Keras' defaults
throughout, as the example ran: glorot_uniform kernels with the fans of Keras' kernel shapes (the
patch projection a Dense on flattened patches, the attention projections EinsumDense kernels
[D, H, Dh] and [H, Dh, D]), zero biases, uniform(-0.05, 0.05) position embeddings (an Embedding),
LayerNorm 1 and 0. The counts are unaffected. (The field is not called `init`: that name is the
Linen method.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.dropout import Dropout
from attn_jax.attention.positional import sincos_2d_posemb
from attn_jax.models.blocks import AttentionModel, BlockNames, activation_fn, stack_blocks
from attn_jax.models.variants import VariantTable, preset_kwargs

POOLS = ("token", "gap", "flatten")
HEADS = ("linear", "textbook_mlp")
POSEMBS = ("learned", "sincos2d")
# "official": google-research/vision_transformer's initializers; "keras": Keras' defaults.
INITS = ("official", "keras")
# The official google-research/vision_transformer names of a block's submodules.
VIT_BLOCK_NAMES = BlockNames(
    self_norm="LayerNorm_0",
    self_attention="MultiHeadDotProductAttention_1",
    mlp_norm="LayerNorm_2",
    mlp="MlpBlock_3",
    fc1="Dense_0",
    fc2="Dense_1",
)


def keras_glorot_uniform(fan_in: int, fan_out: int) -> Callable[..., jax.Array]:
    """Keras' glorot_uniform for a kernel whose Keras shape has these fans: U(-l, l) with
    l = sqrt(6 / (fan_in + fan_out)). The fans are given because Flax flattens a multi-head
    kernel to a matrix before initializing it, while Keras counts fans on its own kernel shape."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def keras_embedding_uniform(
    key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32
) -> jax.Array:
    """Keras' Embedding default: U(-0.05, 0.05)."""
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def patchify(images: jax.Array, patch_size: int | tuple[int, int]) -> jax.Array:
    """Splits images into flattened, non-overlapping patches x_p of eq. 1.

    Each patch vector is ordered (row, column, channel), the order of a Conv kernel [P, P, C, D]
    reshaped to [P*P*C, D], so `patchify(x) @ kernel.reshape(-1, D)` equals the VALID strided Conv.
    Trailing rows/columns that do not fill a patch are dropped, as a VALID Conv does.

    Args:
      images: [B, H, W, C].
      patch_size: P or (Ph, Pw).

    Returns:
      [B, (H // Ph) * (W // Pw), Ph * Pw * C].
    """
    ph, pw = _pair(patch_size)
    b, h, w, c = images.shape
    gh, gw = h // ph, w // pw
    x = images[:, : gh * ph, : gw * pw]
    x = x.reshape(b, gh, ph, gw, pw, c)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, gh, gw, Ph, Pw, C]
    return x.reshape(b, gh * gw, ph * pw * c)


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    ph, pw = size
    return (int(ph), int(pw))


class AddPositionEmbs(nn.Module):
    """Learned position embedding E_pos of eq. 1, one vector per token position."""

    posemb_init: Any = nn.initializers.normal(stddev=0.02)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (1, x.shape[1], x.shape[2])
        pos = self.param("pos_embedding", self.posemb_init, shape, self.param_dtype)
        return x + pos.astype(x.dtype)


def keep_tokens(x: jax.Array, keep: jax.Array, class_token: bool) -> jax.Array:
    """The kept patch tokens of each example (MAE's encoder input), class token first if any.

    Args:
      x: [B, N (+1), D] tokens, the class token (if any) at index 0.
      keep: int [B, K] indices into the N patches, in the order they are to be kept.
      class_token: whether x[:, 0] is a class token (always kept).

    Returns:
      [B, K (+1), D].
    """
    index = keep.astype(jnp.int32)
    if class_token:
        index = jnp.concatenate([jnp.zeros_like(index[:, :1]), index + 1], axis=1)
    return jnp.take_along_axis(x, index[:, :, None], axis=1)


class ViTEncoder(nn.Module):
    """Position embedding, L blocks (`blocks.stack_blocks`) and the final LayerNorm: the
    official code's 'Transformer' submodule.

    `posemb="learned"` adds the `posembed_input` parameter (eq. 1); `"sincos2d"` adds MAE's fixed
    table (`sincos_2d_posemb`) of the patch grid given by the call's `grid`. With `keep`, only
    the kept tokens continue past the position embedding (MAE, He et al. 2022, sec. 3: the
    embedding is added to every patch before the masked ones are removed).

    Attributes:
      depth: L.
      block: `TransformerBlock` fields of every block (ViT's names, pre-LN).
      dropout_rate: dropout after the embedding.
      dropout_after_embedding: whether to apply it.
      posemb: "learned" or "sincos2d".
      layernorm_epsilon: epsilon of the final LayerNorm.
      scan: `nn.scan` over the blocks (stacked under `encoderblock`).
      remat: rematerialise each block.
      drop_path_rate: stochastic depth of the last block (linear from 0).
      posemb_init: initializer of the learned position embedding.
    """

    depth: int
    block: Mapping[str, Any]
    dropout_rate: float = 0.0
    dropout_after_embedding: bool = True
    posemb: str = "learned"
    layernorm_epsilon: float = 1e-6
    scan: bool = False
    remat: bool = False
    drop_path_rate: float = 0.0
    posemb_init: Any = nn.initializers.normal(stddev=0.02)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        grid: tuple[int, int] | None = None,
        class_token: bool = False,
        keep: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes tokens [B, N (+1), D]; `grid` (gh, gw) is needed by "sincos2d" only,
        `class_token` says whether x[:, 0] is one, `keep` int [B, K] selects patches (MAE).
        Returns (normed tokens, aux with "blockNN" when the block fields ask for them)."""
        if self.posemb == "learned":
            x = AddPositionEmbs(
                posemb_init=self.posemb_init, param_dtype=self.param_dtype, name="posembed_input"
            )(x)
        elif self.posemb == "sincos2d":
            if grid is None:
                raise ValueError(
                    "ViTEncoder posemb='sincos2d' needs the patch grid: pass grid=(gh, gw)"
                )
            table = sincos_2d_posemb(grid[0], grid[1], x.shape[-1], class_token)
            assert table.shape[1:] == x.shape[1:], (table.shape, x.shape)
            x = x + jnp.asarray(table, x.dtype)
        else:
            raise ValueError(f"ViTEncoder posemb={self.posemb!r} is not one of {list(POSEMBS)}")
        if keep is not None:
            x = keep_tokens(x, keep, class_token)
        if self.dropout_after_embedding:
            x = Dropout(self.dropout_rate)(x, deterministic=not train)
        x, aux = stack_blocks(
            x,
            depth=self.depth,
            block=dict(self.block, train=train),
            name="encoderblock_{i}",
            scan=self.scan,
            remat=self.remat,
            drop_path_rate=self.drop_path_rate,
        )
        norm = nn.LayerNorm(
            epsilon=self.layernorm_epsilon,
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name="encoder_norm",
        )
        return norm(x).astype(x.dtype), aux


# Parameters below the first block: BEiT's layer 0 (their names in our ViT and the MIM encoders).
_LAYER_ZERO = frozenset({"embedding", "cls", "posembed_input", "pos_embedding", "mask_token"})
_BLOCK = re.compile(r"encoderblock(?:_(\d+))?")


def vit_layer_index(path: str) -> int | slice | None:
    """BEiT's layer id i of a ViT parameter for layer-wise lr decay (train/optim.py): 0 for the
    patch embedding, class token, position embedding and mask token, l + 1 in encoder block l,
    None above the blocks (final norm, pre_logits, head). A scanned stack of blocks
    (".../encoderblock/...", blocks on the leading axis) gives slice(1, None): ids 1, 2, ...
    along that axis.

    Args:
      path: the parameter's keys joined by "/" ("Transformer/encoderblock_3/LayerNorm_0/scale").
    """
    parts = path.split("/")
    block = next((m for m in map(_BLOCK.fullmatch, parts) if m), None)
    if block is not None:
        return slice(1, None) if block.group(1) is None else int(block.group(1)) + 1
    if _LAYER_ZERO.intersection(parts):
        return 0
    return None


class ViT(AttentionModel):
    """Vision Transformer classifier, eqs. 1-4; returns (logits, aux).

    Attributes:
      num_classes: output classes; 0 = no head: the "logits" are the pooled features (what
        aux["pre_logits"] holds), the encoder of the masked-image models (models/mim.py).
      patch_size: P (or (Ph, Pw)); the embedding is a Conv with kernel = stride = P.
      hidden_size: D, the token width.
      depth: L, the number of encoder blocks.
      num_heads: attention heads per block.
      mlp_dim: hidden width of the block MLP.
      qkv_features: total query/key/value width (Keras' num_heads * key_dim); None = D.
      dropout_rate: dropout in the MLP, after attention and after the embedding.
      attention_dropout_rate: dropout on the attention weights.
      pool: "token" (class token, eq. 4), "gap" (mean of the normed tokens) or "flatten" (all
        normed tokens concatenated: the Keras example's head input).
      head: "linear" (one zero-initialized Dense, as the official code) or "textbook_mlp"
        (Dropout -> [Dense(u, GELU) -> Dropout] for u in head_hidden -> Dense).
      head_hidden: hidden widths of the "textbook_mlp" head.
      head_dropout: dropout rate of the "textbook_mlp" head.
      representation_size: if set, a Dense + tanh 'pre_logits' layer before the head (used by the
        paper for ImageNet-21k pre-training only).
      posemb: position embedding: "learned" (eq. 1, the `posembed_input` parameter) or
        "sincos2d" (MAE's fixed 2D sin-cos table, no parameter; needs hidden_size % 4 == 0).
      layernorm_epsilon: LayerNorm epsilon (official ViT and Keras example: 1e-6).
      gelu_approximate: tanh GELU (official JAX ViT) or exact erf GELU (Keras, PyTorch).
      mlp_activation_on_output: GELU also after the second MLP Dense (the Keras example).
      dropout_after_embedding: dropout on z_0 (official code yes, Keras example no).
      dropout_after_attention: dropout on the MSA output before the residual sum (official code
        yes, Keras example no).
      output_softmax: return probabilities instead of logits. Off by default: the Keras example
        puts a softmax in its output layer and then applies a from_logits loss, a double softmax
        that only this flag reproduces.
      drop_path_rate: stochastic depth of the last block, linear from 0 over the blocks (0 in
        the paper; MAE's fine-tuning uses 0.1).
      sow_weights: sow each block's attention weights [B, H, T, T] into 'intermediates'.
      return_intermediates: add each block's output tokens to aux as "block00", "block01", ...
      scan: run the blocks with `nn.scan` (one compiled body, params stacked on a depth axis).
      remat: rematerialize each block in the backward pass (memory for compute).
      weight_init: "official" (the official code's initializers) or "keras" (Keras' defaults,
        the textbook example's; see the module docstring).
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype)
    """

    num_classes: int
    patch_size: int | tuple[int, int]
    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    qkv_features: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    pool: str = "token"
    head: str = "linear"
    head_hidden: tuple[int, ...] = (2048, 1024)
    head_dropout: float = 0.5
    representation_size: int | None = None
    posemb: str = "learned"
    layernorm_epsilon: float = 1e-6
    gelu_approximate: bool = True
    mlp_activation_on_output: bool = False
    dropout_after_embedding: bool = True
    dropout_after_attention: bool = True
    output_softmax: bool = False
    drop_path_rate: float = 0.0
    sow_weights: bool = False
    return_intermediates: bool = False
    scan: bool = False
    remat: bool = False
    weight_init: str = "official"

    def __post_init__(self):
        # Checked at construction, so a bad config fails while it is being read, not at init.
        for field, value, allowed in (
            ("pool", self.pool, POOLS),
            ("head", self.head, HEADS),
            ("posemb", self.posemb, POSEMBS),
            ("weight_init", self.weight_init, INITS),
        ):
            if value not in allowed:
                raise ValueError(f"ViT {field}={value!r} is not one of {list(allowed)}")
        if isinstance(self.num_classes, int) and self.num_classes < 0:
            raise ValueError(
                f"ViT num_classes={self.num_classes} is negative: use 0 for no head (features)"
            )
        if self.posemb == "sincos2d" and self.hidden_size % 4:
            raise ValueError(
                f"ViT posemb='sincos2d' needs hidden_size divisible by 4, got {self.hidden_size}"
            )
        qkv = self.qkv_features or self.hidden_size
        if qkv % self.num_heads:
            raise ValueError(
                f"ViT qkv_features (or hidden_size) {qkv} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        super().__post_init__()

    def layer_index(self, path: str) -> int | slice | None:
        """BEiT's layer id of a parameter (`vit_layer_index`), for layer-wise lr decay."""
        return vit_layer_index(path)

    def initializers(self, channels: int) -> dict[str, Any]:
        """The initializers `weight_init` picks for images of `channels` channels: the patch
        embedding's kernel, the position embedding, the block's attention and MLP-bias fields,
        and the Dense kernels above the blocks (linear head, pre_logits)."""
        if self.weight_init == "official":
            return {
                "embedding": nn.linear.default_kernel_init,  # lecun_normal, Flax's Conv default
                "posemb": nn.initializers.normal(stddev=0.02),
                "block": {"mlp_bias_init": nn.initializers.normal(stddev=1e-6)},
                "head": nn.initializers.zeros_init(),
                "pre_logits": nn.linear.default_kernel_init,
            }
        ph, pw = _pair(self.patch_size)
        d, h = self.hidden_size, self.num_heads
        dh = (self.qkv_features or d) // h
        return {
            "embedding": keras_glorot_uniform(ph * pw * channels, d),  # Dense on a patch
            "posemb": keras_embedding_uniform,
            "block": {
                # EinsumDense kernels [D, H, Dh] and [H, Dh, D]: Keras' fans multiply the last
                # two axes by the product of the others.
                "attention_init": keras_glorot_uniform(h * d, dh * d),
                "attention_out_init": keras_glorot_uniform(dh * h, d * h),
                "mlp_init": nn.initializers.xavier_uniform(),
                "mlp_bias_init": nn.initializers.zeros_init(),
            },
            "head": nn.initializers.xavier_uniform(),
            "pre_logits": nn.initializers.xavier_uniform(),
        }

    @property
    def class_token(self) -> bool:
        """Whether a learned class token is prepended (only the 'token' pool reads it)."""
        return self.pool == "token"

    @nn.compact
    def __call__(
        self,
        images: jax.Array,
        *,
        train: bool = False,
        sow_weights: bool | None = None,
        mask: jax.Array | None = None,
        keep: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Classifies a batch of images.

        Args:
          images: float [B, H, W, C].
          train: enables dropout (needs rngs={'dropout': key}).
          sow_weights: overrides the field for this call; read the weights with
            `mutable=['intermediates']`.
          mask: bool [B, N] over the N patches, True = masked: SimMIM (Xie et al. 2022, sec. 3.2)
            replaces those patch embeddings by a learned `mask_token` [1, 1, D] before the
            position embedding; every token still goes through the blocks.
          keep: int [B, K] indices of the patches that go through the blocks (MAE, He et al.
            2022, sec. 3), after the position embedding; the class token (if any) is kept too.

        Returns:
          (logits [B, num_classes], aux) with aux["tokens"] the normed tokens [B, T, D] (class
          token first; T = K (+1) with `keep`), aux["pre_logits"] the head input features and,
          with `return_intermediates`, aux["blockNN"] each block's output tokens. With
          num_classes=0 the logits are the pre-logits features.

        Raises:
          ValueError: a mask that is not [B, N] or a keep that is not [B, K] for this image.
        """
        sow = self.sow_weights if sow_weights is None else sow_weights
        ph, pw = _pair(self.patch_size)
        inits = self.initializers(images.shape[-1])
        x = nn.Conv(
            self.hidden_size,
            kernel_size=(ph, pw),
            strides=(ph, pw),
            padding="VALID",
            kernel_init=inits["embedding"],
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="embedding",
        )(images)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)  # [B, N, D]
        if mask is not None:
            if mask.shape != (b, gh * gw):
                raise ValueError(
                    f"ViT mask has shape {tuple(mask.shape)}, expected (batch, patches) = "
                    f"{(b, gh * gw)} for images {tuple(images.shape)} and patch {(ph, pw)}"
                )
            # SimMIM inits zeros then trunc_normal(.02): the zeros are overwritten at once.
            token = self.param(
                "mask_token", nn.initializers.truncated_normal(0.02), (1, 1, d), self.param_dtype
            )
            w = mask.astype(x.dtype)[:, :, None]
            x = x * (1 - w) + token.astype(x.dtype) * w
        if keep is not None and (keep.ndim != 2 or keep.shape[0] != b or keep.shape[1] > gh * gw):
            raise ValueError(
                f"ViT keep has shape {tuple(keep.shape)}, expected (batch, K) with batch {b} and "
                f"K <= {gh * gw} patches"
            )
        if self.class_token:
            cls = self.param("cls", nn.initializers.zeros_init(), (1, 1, d), self.param_dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)

        block = dict(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            names=VIT_BLOCK_NAMES,
            qkv_features=self.qkv_features,
            activation="gelu_tanh" if self.gelu_approximate else "gelu",
            mlp_activation_on_output=self.mlp_activation_on_output,
            dropout_rate=self.dropout_rate,
            mlp_dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            dropout_after_attention=self.dropout_after_attention,
            layernorm_epsilon=self.layernorm_epsilon,
            **inits["block"],
            sow_weights=sow,
            return_tokens=self.return_intermediates,
            **self.shared_fields(),
        )
        x, aux = ViTEncoder(
            depth=self.depth,
            block=block,
            dropout_rate=self.dropout_rate,
            dropout_after_embedding=self.dropout_after_embedding,
            posemb=self.posemb,
            layernorm_epsilon=self.layernorm_epsilon,
            scan=self.scan,
            remat=self.remat,
            drop_path_rate=self.drop_path_rate,
            posemb_init=inits["posemb"],
            param_dtype=self.param_dtype,
            name="Transformer",
        )(x, train=train, grid=(gh, gw), class_token=self.class_token, keep=keep)
        aux = {"tokens": x, **aux}

        if self.pool == "token":
            x = x[:, 0]
        elif self.pool == "gap":
            x = jnp.mean(x, axis=1)
        else:
            x = x.reshape(b, -1)

        if self.representation_size is not None:
            x = nn.Dense(
                self.representation_size,
                kernel_init=inits["pre_logits"],
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="pre_logits",
            )(x)
            x = jnp.tanh(x)

        if self.head == "linear":
            head_init = inits["head"]
        else:
            head_init = nn.initializers.xavier_uniform()
            gelu = activation_fn("gelu_tanh" if self.gelu_approximate else "gelu")
            x = Dropout(self.head_dropout)(x, deterministic=not train)
            for i, units in enumerate(self.head_hidden):
                x = nn.Dense(
                    units,
                    kernel_init=nn.initializers.xavier_uniform(),
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"head_hidden_{i}",
                )(x)
                x = Dropout(self.head_dropout)(gelu(x), deterministic=not train)
        aux["pre_logits"] = x
        if self.num_classes == 0:
            return x.astype(jnp.float32), aux

        logits = nn.Dense(
            self.num_classes,
            kernel_init=head_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(x).astype(jnp.float32)
        if self.output_softmax:
            logits = jax.nn.softmax(logits, axis=-1)
        return logits, aux


# -- variants -------------------------------------------------------------------------------------
# Table 1 of Dosovitskiy et al. 2021 (B, L, H); Ti and S from Touvron et al. 2021, Table 1.
VIT_SIZES: dict[str, dict[str, int]] = {
    "Ti": dict(hidden_size=192, depth=12, num_heads=3, mlp_dim=768),
    "S": dict(hidden_size=384, depth=12, num_heads=6, mlp_dim=1536),
    "B": dict(hidden_size=768, depth=12, num_heads=12, mlp_dim=3072),
    "L": dict(hidden_size=1024, depth=24, num_heads=16, mlp_dim=4096),
    "H": dict(hidden_size=1280, depth=32, num_heads=16, mlp_dim=5120),
}

TEXTBOOK_CIFAR10: dict[str, Any] = dict(
    patch_size=4,
    hidden_size=64,
    depth=6,
    num_heads=8,
    qkv_features=64,  # Keras MultiHeadAttention(num_heads=8, key_dim=8)
    mlp_dim=128,
    dropout_rate=0.1,
    attention_dropout_rate=0.1,
    pool="flatten",
    head="textbook_mlp",
    head_hidden=(2048, 1024),
    head_dropout=0.5,
    gelu_approximate=False,
    layernorm_epsilon=1e-6,
    mlp_activation_on_output=True,
    dropout_after_embedding=False,
    dropout_after_attention=False,
)

_PUBLISHED = ("Ti/16", "S/16", "B/16", "B/32", "L/16", "L/32", "H/14", "S/16-gap", "B/16-gap-norep")
_SUFFIXES = {"gap": dict(pool="gap"), "norep": dict(representation_size=None)}
_GRAMMAR = VariantTable("ViT", "Dosovitskiy et al. 2021, Table 1", {}, VIT_SIZES, _SUFFIXES)
VIT_VARIANTS = VariantTable(
    "ViT",
    "Dosovitskiy et al. 2021, Table 1 (B, L, H); Touvron et al. 2021, Table 1 (Ti, S); the "
    "Keras example (textbook_cifar10)",
    presets={
        **{name: _GRAMMAR.fields(name) for name in _PUBLISHED},
        "textbook_cifar10": TEXTBOOK_CIFAR10,
    },
    sizes=VIT_SIZES,
    suffixes=_SUFFIXES,
)


def vit_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """ViT constructor kwargs of a variant, with the non-None `overrides` taking precedence.

    Besides the names in `VIT_VARIANTS`, any "<size>/<patch>[-gap][-norep]" with size in
    `VIT_SIZES` decodes (e.g. "B/8", "S/32-gap").

    Raises:
      ValueError: if the variant is unknown.
    """
    return preset_kwargs(VIT_VARIANTS, variant, overrides)
