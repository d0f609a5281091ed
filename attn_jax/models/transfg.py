"""TransFG: He, Chen, Liu, Kortylewski, Yang, Bai, Wang 2022, "TransFG: A Transformer Architecture
for Fine-Grained Recognition" (AAAI 2022).

A ViT (models/vit.py, Dosovitskiy et al. 2021) with three changes for fine-grained recognition:

  Overlapping patches (sec. 3.1): the patch embedding is a Conv with kernel P and stride S < P
  ("slide step"), so neighbouring patches share P - S pixels and no discriminative detail is cut
  in half by a patch border; an H x W image gives N = ((H - P) // S + 1) * ((W - P) // S + 1)
  patches, eq. 1 of ViT with this N:
      z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos
  Part selection module (sec. 3.2): the raw attention weights a_l [H heads, N + 1, N + 1] of the
  first L - 1 layers are multiplied per head,
      a_final = a_{L-2} ... a_1 a_0   (per head; no identity, no renormalisation)
  and each head k picks the patch A_k = argmax of the class token's row of a_final (the token it
  attends to most through the first L - 1 layers); the last layer then runs on
      z_local = [z_{L-1}^0; z_{L-1}^{A_1}; ...; z_{L-1}^{A_K}]   (K = H parts after the class token)
  and the class token of its output, after a final LayerNorm (`part_norm`), feeds the head.
  Contrastive loss (sec. 3.3): on the L2-normalised class-token features, in
  attn_jax/tasks/transfg.py (a model returns outputs, never a loss).

The selection is `attn_jax.attention.rollout.transfg_part_selection`; the blocks are ViT's
(`blocks.stack_blocks` with ViT's parameter names): a ViT checkpoint of L blocks corresponds to
the L - 1 encoder blocks, `part_layer` (its last block) and `part_norm` (its `encoder_norm`), the
way the official code (TACJu/TransFG, models/modeling.py) loads ViT-B_16, with a position
embedding of another length for overlapping patches (no converter for this model here yet).

Variants (`TRANSFG_VARIANTS`): "B_16" is the paper's model (ViT-B_16, P = 16, slide step 12;
448 x 448 inputs give 37 x 37 = 1,369 patches); "tiny" is for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.dropout import Dropout
from attn_jax.attention.rollout import transfg_part_selection
from attn_jax.models.blocks import AttentionModel, TransformerBlock, stack_blocks
from attn_jax.models.variants import VariantTable, preset_kwargs
from attn_jax.models.vit import VIT_BLOCK_NAMES, AddPositionEmbs, _pair


def overlapping_grid(
    image_hw: tuple[int, int], patch_size: int | tuple[int, int], stride: int | tuple[int, int]
) -> tuple[int, int]:
    """The patch grid (gh, gw) of a VALID Conv with kernel `patch_size` and stride `stride`:
    ((H - P) // S + 1, (W - P) // S + 1), TransFG's overlapping split (sec. 3.1)."""
    (h, w), (ph, pw), (sh, sw) = image_hw, _pair(patch_size), _pair(stride)
    return (h - ph) // sh + 1, (w - pw) // sw + 1


class TransFGEncoder(nn.Module):
    """Position embedding, L - 1 blocks, part selection, the last block on the selected tokens and
    `part_norm`: the official code's `Encoder` (with its `part_select`, `part_layer`,
    `part_norm`).

    Attributes:
      depth: L (>= 2), counting the last block (`part_layer`).
      block: `TransformerBlock` fields of every block.
      dropout_rate: dropout after the embedding.
      layernorm_epsilon: epsilon of `part_norm`.
      remat: rematerialise each block.
      posemb_init: initializer of the learned position embedding.
    """

    depth: int
    block: Mapping[str, Any]
    dropout_rate: float = 0.0
    layernorm_epsilon: float = 1e-6
    remat: bool = False
    posemb_init: Any = nn.initializers.normal(stddev=0.02)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        """Tokens [B, 1 + N, D] (class token first) -> (normed [B, 1 + K, D], parts [B, K])."""
        x = AddPositionEmbs(
            posemb_init=self.posemb_init, param_dtype=self.param_dtype, name="posembed_input"
        )(x)
        x = Dropout(self.dropout_rate)(x, deterministic=not train)
        block = dict(self.block, train=train)
        x, aux = stack_blocks(
            x,
            depth=self.depth - 1,
            block=dict(block, return_weights=True),
            name="encoderblock_{i}",
            remat=self.remat,
        )
        # The selection only reads the weights: no gradient flows through an argmax.
        weights = [jax.lax.stop_gradient(w) for w in aux["attention"]]  # L-1 x [B, H, T, T]
        # transfg_part_selection takes the weights of all L layers and multiplies the first
        # L - 1; the last layer's weights do not exist before the selection, and any stand-in is
        # ignored, so the (L-1)-th layer's is repeated.
        parts = transfg_part_selection(jnp.stack([*weights, weights[-1]]))  # [B, K]
        index = jnp.concatenate([jnp.zeros_like(parts[:, :1]), parts], axis=1)  # [B, 1 + K]
        x = jnp.take_along_axis(x, index[:, :, None], axis=1)  # [B, 1 + K, D]
        x, _ = TransformerBlock(name="part_layer", **block)(x)
        norm = nn.LayerNorm(
            epsilon=self.layernorm_epsilon,
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name="part_norm",
        )
        return norm(x).astype(x.dtype), parts


class TransFG(AttentionModel):
    """TransFG classifier (module docstring); returns (logits, aux).

    Attributes:
      num_classes: output classes.
      patch_size: P, the kernel of the patch embedding.
      slide_step: S, its stride; None = P (ViT's non-overlapping patches, the paper's
        "non-overlap" split).
      hidden_size: D.
      depth: L, the number of blocks including the last one (`part_layer`); at least 2.
      num_heads: attention heads per block; also K, the number of selected parts.
      mlp_dim: hidden width of the block MLP.
      dropout_rate: dropout in the MLP, after attention and after the embedding.
      attention_dropout_rate: dropout on the attention weights (the selection reads the
        weights before dropout).
      layernorm_epsilon: LayerNorm epsilon (1e-6, as ViT).
      gelu_approximate: tanh GELU (official JAX ViT) or exact erf GELU (PyTorch, the official
        TransFG code).
      sow_weights: sow every block's attention weights into 'intermediates'.
      remat: rematerialise each block in the backward pass.
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype)
    """

    num_classes: int
    patch_size: int | tuple[int, int]
    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    slide_step: int | tuple[int, int] | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    layernorm_epsilon: float = 1e-6
    gelu_approximate: bool = True
    sow_weights: bool = False
    remat: bool = False

    def __post_init__(self):
        # Checked at construction, so a bad config fails while it is being read, not at init.
        if isinstance(self.depth, int) and self.depth < 2:
            raise ValueError(
                f"TransFG depth={self.depth} leaves no layer before the part selection: use >= 2"
            )
        if isinstance(self.num_classes, int) and self.num_classes < 1:
            raise ValueError(f"TransFG num_classes={self.num_classes} must be >= 1")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TransFG hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}"
            )
        stride, patch = _pair(self.stride), _pair(self.patch_size)
        if not all(0 < s <= p for s, p in zip(stride, patch, strict=True)):
            raise ValueError(
                f"TransFG slide_step={self.slide_step} must lie in [1, patch_size={patch}]: a "
                f"larger stride skips pixels"
            )
        super().__post_init__()

    @property
    def stride(self) -> int | tuple[int, int]:
        """The stride of the patch embedding (S, or P without a slide step)."""
        return self.patch_size if self.slide_step is None else self.slide_step

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Classifies a batch of images.

        Args:
          images: float [B, H, W, C].
          train: enables dropout (needs rngs={'dropout': key}).

        Returns:
          (logits [B, num_classes], aux) with aux["parts"] int32 [B, K] the selected tokens
          (patch p of the grid, row-major, is token p + 1), aux["pre_logits"] [B, D] the
          class-token feature after `part_norm` (the head's input and the contrastive loss's
          feature) and aux["tokens"] [B, 1 + K, D] the normed output of the last layer.
        """
        ph, pw = _pair(self.patch_size)
        x = nn.Conv(
            self.hidden_size,
            kernel_size=(ph, pw),
            strides=_pair(self.stride),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="embedding",
        )(images)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)  # [B, N, D]
        cls = self.param("cls", nn.initializers.zeros_init(), (1, 1, d), self.param_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)

        block = dict(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            names=VIT_BLOCK_NAMES,
            activation="gelu_tanh" if self.gelu_approximate else "gelu",
            dropout_rate=self.dropout_rate,
            mlp_dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            layernorm_epsilon=self.layernorm_epsilon,
            mlp_bias_init=nn.initializers.normal(stddev=1e-6),
            sow_weights=self.sow_weights,
            **self.shared_fields(),
        )
        tokens, parts = TransFGEncoder(
            depth=self.depth,
            block=block,
            dropout_rate=self.dropout_rate,
            layernorm_epsilon=self.layernorm_epsilon,
            remat=self.remat,
            param_dtype=self.param_dtype,
            name="Transformer",
        )(x, train=train)
        feature = tokens[:, 0]
        logits = nn.Dense(
            self.num_classes,
            kernel_init=nn.initializers.zeros_init(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="head",
        )(feature).astype(jnp.float32)
        return logits, {"parts": parts, "pre_logits": feature, "tokens": tokens}

    def figure_data(self, params: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"transfg_parts": up to 8 eval images
        spread over the batch, their true and predicted labels, the selected tokens [n, K], the
        patch grid, the patch size and the stride in pixels}."""
        images = np.asarray(batch["image"])
        keep = np.asarray(batch.get("mask", np.ones(len(images), bool))).astype(bool)
        images, labels = images[keep], np.asarray(batch["label"])[keep]
        # Spread the picks over the batch: neighbouring examples are often copies of one digit.
        picks = np.unique(np.linspace(0, len(images) - 1, min(8, len(images))).astype(int))
        images, labels = images[picks], labels[picks]
        logits, aux = jax.jit(self.apply)({"params": params}, jnp.asarray(images))
        return {
            "transfg_parts": {
                "images": images,
                "labels": labels,
                "predictions": np.asarray(jnp.argmax(logits, -1)),
                "parts": np.asarray(aux["parts"]),
                "grid_hw": overlapping_grid(images.shape[1:3], self.patch_size, self.stride),
                "patch_hw": _pair(self.patch_size),
                "stride_hw": _pair(self.stride),
            }
        }


# -- variants -------------------------------------------------------------------------------------
# He et al. 2022, implementation details (sec. 4): ViT-B_16 pre-trained on ImageNet-21k, 448 px
# inputs, slide step 12; the sizes are ViT-B's (Dosovitskiy et al. 2021, Table 1).
TRANSFG_VARIANTS = VariantTable(
    "TransFG",
    "He et al. 2022, implementation details (ViT-B_16, slide step 12); 'tiny' for tests",
    presets={
        "B_16": dict(
            patch_size=16,
            slide_step=12,
            hidden_size=768,
            depth=12,
            num_heads=12,
            mlp_dim=3072,
            dropout_rate=0.1,
        ),
        "tiny": dict(patch_size=4, slide_step=2, hidden_size=32, depth=3, num_heads=4, mlp_dim=64),
    },
)


def transfg_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`TransFG` fields of `variant` (None = class defaults) updated by the non-None overrides.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(TRANSFG_VARIANTS, variant, overrides)


__all__ = ["TRANSFG_VARIANTS", "TransFG", "TransFGEncoder", "overlapping_grid", "transfg_kwargs"]
