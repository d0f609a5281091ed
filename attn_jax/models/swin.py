"""Swin Transformer of Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo 2021, "Swin Transformer: Hierarchical
Vision Transformer using Shifted Windows" (ICCV 2021).

- Patch partition + linear embedding (sec. 3.1): a 4x4 stride-4 convolution, then LayerNorm.
- Swin block (sec. 3.1, eq. 3): z' = W-MSA(LN(z)) + z, z = MLP(LN(z')) + z', with SW-MSA (windows
  shifted by M // 2) in every second block; window attention and its relative position bias
  (eq. 4) are in attention/windows.py. Stochastic depth on both residual branches, its rate
  growing linearly from 0 to `drop_path_rate` over all blocks, as in the official code.
- Patch merging (sec. 3.1): the 2x2 neighbours concatenated (4C), LayerNorm, a linear map to 2C
  without bias; the concatenation order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]
  is the official one, so that its weights load unchanged.
- Four stages; a map whose side is not a multiple of the window is padded at the bottom and right
  before the window attention and cropped after it (official code); a map no larger than the window
  gets one window of the map's size and no shift.
- Head: final LayerNorm, global average pooling, linear classifier; `num_classes=0` returns
  the pooled features, and aux always holds the four stages' maps ("stage1".."stage4", [B, H_i,
  W_i, C_i], before the final norm) for dense heads.

Variants (Table 1 / sec. 3.3): T (C=96, depths 2-2-6-2, heads 3-6-12-24), S (96, 2-2-18-2,
3-6-12-24), B (128, 2-2-18-2, 4-8-16-32), L (192, 2-2-18-2, 6-12-24-48); window 7, MLP ratio 4.
Parameter counts at 1000 classes (official code, == timm): T 28,288,354, S 49,606,258,
B 87,768,224, L 196,532,476.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.windows import WindowAttention
from attn_jax.models.blocks import AttentionModel, Mlp, drop_path
from attn_jax.models.variants import VariantTable, preset_kwargs

LN_EPS = 1e-5  # the official code's nn.LayerNorm default

SWIN_VARIANTS = VariantTable(
    "swin",
    "Liu et al. 2021, Table 1 and sec. 3.3",
    {
        "T": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
        "S": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
        "B": dict(
            embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5
        ),
        "L": dict(
            embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.5
        ),
    },
)
PUBLISHED_PARAMS = {"T": 28_288_354, "S": 49_606_258, "B": 87_768_224, "L": 196_532_476}


class SwinBlock(AttentionModel):
    """One Swin block (eq. 3) on a [B, H, W, C] map: pre-LN residuals with the block family's
    `Mlp` and stochastic depth (models/blocks.py) around window attention."""

    num_heads: int
    window: int = 7
    shifted: bool = False
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, h, w, c = x.shape
        # A map no larger than the window is one window, and shifting it would only roll it.
        window = min(self.window, h, w)
        shift = window // 2 if self.shifted and min(h, w) > self.window else 0
        norm = functools.partial(
            nn.LayerNorm, epsilon=LN_EPS, dtype=jnp.float32, param_dtype=self.param_dtype
        )

        def residual(x: jax.Array, y: jax.Array) -> jax.Array:
            if train and self.drop_path_rate:
                y = drop_path(y, self.drop_path_rate, self.make_rng("dropout"))
            return x + y

        y = norm(name="norm1")(x).astype(x.dtype)
        pad_h, pad_w = (-h) % window, (-w) % window
        y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))  # official: pad bottom/right
        y = WindowAttention(
            self.num_heads,
            window,
            shift,
            attention_fn=self.attention_fn,
            implementation=self.attention_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attn",
        )(y, train=train)[:, :h, :w]
        x = residual(x, y)

        y = norm(name="norm2")(x).astype(x.dtype)
        y = Mlp(
            int(c * self.mlp_ratio),
            activation="gelu",
            kernel_init=nn.initializers.lecun_normal(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(y, train=train)
        return residual(x, y)


class PatchMerging(nn.Module):
    """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]: 2x2 neighbours concatenated (official order),
    LayerNorm, linear 4C -> 2C without bias; odd sides are padded with zeros first."""

    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )  # [B, H/2, W/2, 4C]
        x = nn.LayerNorm(
            epsilon=LN_EPS, dtype=jnp.float32, param_dtype=self.param_dtype, name="norm"
        )(x).astype(x.dtype)
        return nn.Dense(
            2 * c, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name="reduction"
        )(x)


class Swin(AttentionModel):
    """Swin Transformer classifier / backbone.

    Attributes:
      num_classes: logits; 0 = no head (a backbone): the output is the pooled features.
      patch_size: side of the non-overlapping patches of the embedding (4).
      embed_dim: C, the width of stage 1 (stage i has 2^(i-1) C).
      depths: blocks per stage.
      num_heads: heads per stage.
      window: M.
      mlp_ratio: MLP width over C.
      drop_path_rate: the stochastic depth rate of the last block (0 for the first, linear between).
      (and `blocks.AttentionModel`'s attention_fn, computed inside the windows, attention_impl,
      dtype, param_dtype)
    """

    num_classes: int = 1000
    patch_size: int = 4
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    window: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1

    def __post_init__(self):
        if len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"Swin depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} differ "
                "in length: give one entry per stage"
            )
        if self.num_classes < 0:
            raise ValueError(f"Swin num_classes={self.num_classes} is negative: 0 is no head")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, dict]:
        """images [B, H, W, C] -> (logits [B, num_classes] or, with num_classes=0, the pooled
        features [B, 8C], aux with "stage1".."stage4" and "pre_logits")."""
        if images.ndim != 4:
            raise ValueError(f"Swin takes images [B, H, W, C], got shape {tuple(images.shape)}")
        p = self.patch_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = functools.partial(
            nn.LayerNorm, epsilon=LN_EPS, dtype=jnp.float32, param_dtype=self.param_dtype
        )
        x = nn.Conv(self.embed_dim, (p, p), (p, p), name="patch_embed", **kw)(images)
        x = norm(name="patch_norm")(x).astype(x.dtype)
        rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
        aux: dict[str, jax.Array] = {}
        block = 0
        for stage, (depth, heads) in enumerate(zip(self.depths, self.num_heads, strict=True)):
            if stage:
                x = PatchMerging(name=f"merge{stage + 1}", **kw)(x)
            for i in range(depth):
                x = SwinBlock(
                    heads,
                    self.window,
                    shifted=i % 2 == 1,
                    mlp_ratio=self.mlp_ratio,
                    drop_path_rate=rates[block],
                    name=f"stage{stage + 1}_block{i}",
                    **self.shared_fields(),
                )(x, train=train)
                block += 1
            aux[f"stage{stage + 1}"] = x
        x = norm(name="norm")(x)
        x = x.mean(axis=(1, 2))
        aux["pre_logits"] = x
        if not self.num_classes:
            return x, aux
        return nn.Dense(self.num_classes, name="head", **kw)(x).astype(jnp.float32), aux

    def layer_index(self, path: str) -> int | None:
        """BEiT's layer id of a parameter for layer-wise lr decay (train/optim.py): 0 for the
        patch embedding, 1 + the block's position over all stages for a block, the id of the
        previous stage's last block for a patch merging, None above the blocks (norm, head)."""
        return swin_layer_index(path, tuple(self.depths))


def swin_layer_index(path: str, depths: tuple[int, ...]) -> int | None:
    """`Swin.layer_index` for a model with these `depths` (see there)."""
    top = path.split("/")[0]
    if top.startswith(("patch_embed", "patch_norm")):
        return 0
    stage_block = re.fullmatch(r"stage(\d+)_block(\d+)", top)
    if stage_block:
        stage, block = int(stage_block[1]) - 1, int(stage_block[2])
        return sum(depths[:stage]) + block + 1
    merge = re.fullmatch(r"merge(\d+)", top)
    if merge:
        return sum(depths[: int(merge[1]) - 1])
    return None


def swin_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`Swin` fields of `variant` ("T", "S", "B", "L"; None: class defaults) updated by the
    non-None overrides.

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(SWIN_VARIANTS, variant, overrides)
