"""SETR: Zheng, Lu, Zhao, Zhu, Luo, Wang, Fu, Feng, Xiang, Torr, Zhang 2021, "Rethinking Semantic
Segmentation from a Sequence-to-Sequence Perspective with Transformers" (CVPR 2021).

Encoder (sec. 3.1-3.2): the image is cut into p x p patches (p = 16), linearly embedded, given
learned position embeddings and encoded by L pre-LN Transformer layers (eqs. 1-3 of ViT): the
submodule "encoder" is an `attn_jax.models.vit.ViT` without head, built from the nested config
`encoder`, with the official ViT parameter names, so ViT weights map onto `encoder/embedding` and
`encoder/Transformer`. No class token is prepended (pool "gap"): a segmenter never reads it. The
final tokens, layer-normed (eps 1e-6), are reshaped to a feature map Z [B, H/p, W/p, D].

Decoders (sec. 3.3, checked against the official fudan-zvg/SETR heads):
- "naive": 1x1 conv D -> C + norm + ReLU + 1x1 conv C -> K, bilinear to the input size.
- "pup" (progressive upsampling): log2(p) stages of 3x3 conv (C) + norm + ReLU, each followed by a
  bilinear x2; in the last stage the 1x1 classifier comes before the x2 (as the official head
  does), so the total upsampling is exactly p.
- "mla" (multi-level feature aggregation): the tokens of M = 4 evenly spaced layers (L k / 4,
  e.g. 6/12/18/24 for L = 24), each layer-normed and reshaped; 1x1 conv-norm-ReLU reduce to C,
  top-down cumulative addition from the deepest stream, 3x3 conv-norm-ReLU per stream, then per
  stream two 3x3 conv-norm-ReLU at C_mla (128) and a bilinear x4; the streams are concatenated
  (4 C_mla), classified by a 3x3 conv and bilinearly resized to the input size.
- auxiliary heads (official configs: layers 10/15/20/24, loss weight 0.4): a layer norm and a
  naive head on the tokens of each layer in `aux_layers`, returned in aux["aux_logits"] at the
  input size; the segmentation task weights their losses.

Norm: SETR uses synchronized BatchNorm. The train state here holds parameters only (no
`batch_stats` collection), and GroupNorm (Wu & He 2018) needs no running statistics, acts the same
in training and evaluation and does not depend on the per-device batch size, so the decoders use
GroupNorm with gcd(`norm_groups`, C) groups. Convolutions directly followed by a norm keep the bias
in naive/PUP and drop it in MLA, as in the official heads. Bilinear resizing uses half-pixel
centers (`jax.image.resize`, PyTorch's align_corners=False); the official MLA head's x4 uses
align_corners=True, a sub-pixel shift that only matters when porting trained decoder weights.

Swin backbone (`backbone="swin"`, `encoder` then holds Swin fields): the four stage maps of a
Swin Transformer (Liu et al. 2021, `attn_jax.models.swin`, strides 4/8/16/32 with its 4x4
patches), each layer-normed as dense Swin
backbones do, go through the same multi-level decoder: reduce to C, top-down addition (deeper
streams bilinearly resized to the next shallower map), 3x3 convs, two 3x3 conv-norm-ReLU at C_mla,
upsampling to the stride-4 map, concatenation, classifier, bilinear to the input size. The Swin's
final LayerNorm (`encoder/norm`) feeds only its pooled classifier features and stays unused here.

Variants (`SETR_VARIANTS`): "L/16" is SETR's encoder (ViT-L: D 1024, 24 layers, 16 heads, MLP
4096, Table 1 of Dosovitskiy et al. 2021), "S/16" and "B/16" the smaller ViTs, "digits" a tiny
encoder for the embedded digit scenes; "swin_T/S/B" the Swin sizes (Table 1 of Liu et al. 2021).
The decoder is chosen with `decoder=`; the paper's width C is 256 and C_mla 128.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.errors import UserError
from attn_jax.models.blocks import AttentionModel
from attn_jax.models.swin import Swin, swin_kwargs, swin_layer_index
from attn_jax.models.variants import VariantTable, check_fields, merge_fields, preset_kwargs
from attn_jax.models.vit import ViT, vit_kwargs, vit_layer_index

BACKBONES = ("vit", "swin")
DECODERS = ("naive", "pup", "mla")
SETR_AUX_LAYERS = (10, 15, 20, 24)  # official configs for ViT-L (in_index 9, 14, 19, 23)
SWIN_LN_EPS = 1e-5


class SegmentationShapeError(UserError, ValueError):
    """Images whose shape the segmentation model cannot take; the message names the fix."""


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """[B, h, w, C] -> [B, H, W, C], bilinear with half-pixel centers (align_corners=False)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), method="bilinear")


class ConvNormReLU(nn.Module):
    """conv -> GroupNorm -> ReLU, the decoders' repeated unit (conv + SyncBN + ReLU in SETR)."""

    features: int
    kernel: int = 3
    use_bias: bool = False
    norm_groups: int = 32
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            padding="SAME",
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        x = nn.GroupNorm(
            num_groups=math.gcd(self.norm_groups, self.features),
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="norm",
        )(x)
        return nn.relu(x)


class NaiveHead(nn.Module):
    """1x1 conv-norm-ReLU to `width`, 1x1 classifier, bilinear to `out_size`."""

    num_classes: int
    width: int = 256
    norm_groups: int = 32
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, out_size: tuple[int, int]) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvNormReLU(self.width, 1, True, self.norm_groups, name="conv_0", **kw)(z)
        x = nn.Conv(self.num_classes, (1, 1), name="cls", **kw)(x)
        return resize_bilinear(x, out_size)


class PUPHead(nn.Module):
    """Progressive upsampling: `stages` x [3x3 conv-norm-ReLU, x2], the classifier before the
    last x2. Returns (logits, the per-stage maps before their upsampling)."""

    num_classes: int
    stages: int
    width: int = 256
    norm_groups: int = 32
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, maps = z, []
        for i in range(self.stages):
            x = ConvNormReLU(self.width, 3, True, self.norm_groups, name=f"conv_{i}", **kw)(x)
            maps.append(x)
            if i == self.stages - 1:
                x = nn.Conv(self.num_classes, (1, 1), name="cls", **kw)(x)
            x = resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]))
        return x, tuple(maps)


class MultiLevelHead(nn.Module):
    """MLA decoder over maps ordered shallow -> deep (equal sizes for ViT, halving for Swin)."""

    num_classes: int
    width: int = 256
    head_width: int = 128
    norm_groups: int = 32
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, maps: Sequence[jax.Array], fuse_size: tuple[int, int], out_size: tuple[int, int]
    ) -> jax.Array:
        kw = dict(norm_groups=self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype)
        reduced = [
            ConvNormReLU(self.width, 1, name=f"reduce_{i}", **kw)(m) for i, m in enumerate(maps)
        ]
        # Top-down cumulative sum: each stream adds everything deeper than itself.
        summed = [reduced[-1]]
        for r in reversed(reduced[:-1]):
            summed.insert(0, r + resize_bilinear(summed[0], r.shape[1:3]))
        streams = []
        for i, s in enumerate(summed):
            s = ConvNormReLU(self.width, 3, name=f"fuse_{i}", **kw)(s)
            s = ConvNormReLU(self.head_width, 3, name=f"head_{i}_0", **kw)(s)
            s = ConvNormReLU(self.head_width, 3, name=f"head_{i}_1", **kw)(s)
            streams.append(resize_bilinear(s, fuse_size))
        x = jnp.concatenate(streams, axis=-1)  # [B, h_f, w_f, M * head_width]
        x = nn.Conv(
            self.num_classes,
            (3, 3),
            padding="SAME",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="cls",
        )(x)
        return resize_bilinear(x, out_size)


class SETR(AttentionModel):
    """SETR segmenter; `model.apply(params, images)` -> (logits [B, H, W, K], aux).

    Attributes:
      num_classes: K, background included.
      backbone: "vit" (SETR) or "swin" (multi-level decoder over Swin's four stages).
      encoder: the backbone's own fields, a nested config: ViT fields (`attn_jax.models.vit.ViT`;
        no class token, no head) or Swin fields (`attn_jax.models.swin.Swin`), each optionally
        with a "variant" of that family; default: ViT-L/16, SETR's encoder. ViT defaults here:
        exact GELU (SETR's PyTorch code), LayerNorm eps 1e-6; the patch side p is the ViT's (16
        in SETR) or Swin's embedding (4).
      decoder: "naive", "pup" or "mla" (Swin: "mla").
      mla_layers: the 1-based encoder layers the MLA decoder reads; None: L k / 4 for k = 1..4.
      aux_layers: 1-based encoder layers with an auxiliary naive head (SETR: `SETR_AUX_LAYERS`);
        () for none.
      decoder_width: C, the width of the naive/PUP convs and of the MLA streams (256).
      mla_width: C_mla, the width of the MLA per-stream heads (128).
      norm_groups: GroupNorm groups (gcd with the width is used).
      (and `blocks.AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype, handed
      down to the encoder; logits are returned in float32)
    """

    num_classes: int
    backbone: str = "vit"
    encoder: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"variant": "L/16"})
    decoder: str = "pup"
    mla_layers: tuple[int, ...] | None = None
    aux_layers: tuple[int, ...] = ()
    decoder_width: int = 256
    mla_width: int = 128
    norm_groups: int = 32

    def encoder_fields(self) -> dict[str, Any]:
        """The constructor fields of the backbone module (ViT or Swin) named "encoder"."""
        fields = dict(self.encoder)
        check_fields(Swin if self.backbone == "swin" else ViT, fields, "SETR's model.encoder")
        variant = fields.pop("variant", None)
        shared = dict(num_classes=0, **self.shared_fields())
        if self.backbone == "swin":
            return dict(swin_kwargs(variant, **merge_fields(SWIN_DEFAULTS, fields)), **shared)
        need_layers = self.decoder == "mla" or bool(self.aux_layers)
        fields = vit_kwargs(variant, **merge_fields(VIT_DEFAULTS, fields))
        return dict(fields, pool="gap", return_intermediates=need_layers, **shared)

    def layer_index(self, path: str) -> int | slice | None:
        """The encoder's layer ids (ViT's or Swin's) for layer-wise lr decay; the decoders sit
        above every layer."""
        top, _, rest = path.partition("/")
        if top != "encoder":
            return None
        if self.backbone == "swin":
            return swin_layer_index(rest, tuple(self.encoder_fields()["depths"]))
        return vit_layer_index(rest)

    @property
    def patch_size(self) -> int:
        """p: the ViT's patch side, or the side of Swin's patch embedding."""
        return int(self.encoder_fields()["patch_size"])

    @property
    def depth(self) -> int:
        """L, the ViT's number of layers (ViT backbone)."""
        return int(self.encoder_fields()["depth"])

    def __post_init__(self):
        # Checked at construction, so a bad config fails while it is read, not inside a trace.
        if self.backbone not in BACKBONES:
            raise ValueError(f"SETR backbone={self.backbone!r} is not one of {list(BACKBONES)}")
        if self.decoder not in DECODERS:
            raise ValueError(f"SETR decoder={self.decoder!r} is not one of {list(DECODERS)}")
        fields = self.encoder_fields()
        p = fields.get("patch_size")
        if not isinstance(p, int) or p < 1:
            raise ValueError(f"SETR encoder patch_size={p!r} must be a positive int")
        if self.backbone == "swin":
            if self.decoder != "mla":
                raise ValueError(
                    f"SETR backbone='swin' has a multi-level decoder only: set decoder='mla' "
                    f"(got {self.decoder!r})"
                )
            if self.aux_layers:
                raise ValueError("SETR aux_layers needs backbone='vit': set aux_layers=()")
            Swin(**fields, parent=None)  # Swin's own checks
        else:
            for required in ("hidden_size", "depth", "num_heads", "mlp_dim"):
                if fields.get(required) is None:
                    raise ValueError(
                        f"SETR encoder misses {required!r}: set model.encoder.{required} or "
                        "model.encoder.variant"
                    )
            if self.decoder == "pup" and (p < 2 or p & (p - 1)):
                raise ValueError(
                    f"SETR decoder='pup' upsamples x2 log2(p) times, so patch_size must be a "
                    f"power of two >= 2 (got {p}); use decoder='naive' or 'mla' for this patch size"
                )
            if fields["hidden_size"] % fields["num_heads"]:
                raise ValueError(
                    f"SETR hidden_size={fields['hidden_size']} is not divisible by "
                    f"num_heads={fields['num_heads']}"
                )
            depth = fields["depth"]
            for field in ("mla_layers", "aux_layers"):
                layers = getattr(self, field)
                if layers is not None and any(not 1 <= k <= depth for k in layers):
                    raise ValueError(
                        f"SETR {field}={tuple(layers)} must be 1-based layers in 1..{depth}"
                    )
            if self.decoder == "mla" and self.mla_layers is None and depth < 4:
                raise ValueError(
                    f"SETR decoder='mla' reads 4 evenly spaced layers and depth={depth} < 4: "
                    "set mla_layers explicitly or use depth >= 4"
                )
            ViT(**fields, parent=None)  # ViT's own checks
        super().__post_init__()

    @property
    def mla_layer_indices(self) -> tuple[int, ...]:
        """The 1-based encoder layers the MLA decoder reads (L k / 4, k = 1..4, by default)."""
        if self.mla_layers is not None:
            return tuple(int(k) for k in self.mla_layers)
        return tuple(self.depth * k // 4 for k in range(1, 5))

    def _check_images(self, images: jax.Array) -> None:
        if images.ndim != 4:
            raise SegmentationShapeError(
                f"SETR takes images [B, H, W, C], got shape {tuple(images.shape)}: add the batch "
                "and channel axes"
            )
        h, w = images.shape[1:3]
        p = self.patch_size
        if self.backbone == "vit" and (h % p or w % p):
            raise SegmentationShapeError(
                f"SETR with patch_size={p} needs image sides divisible by {p}, got images of "
                f"shape {tuple(images.shape)}: resize or pad them to "
                f"{-(-h // p) * p}x{-(-w // p) * p}, or pick a patch size dividing {h}x{w}"
            )

    def _layer_map(self, layers: dict[str, jax.Array], k: int, name: str, shape) -> jax.Array:
        """Layer k's tokens (1-based), layer-normed by their own LayerNorm, as a map."""
        x = nn.LayerNorm(
            epsilon=self.encoder_fields()["layernorm_epsilon"],
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name=name,
        )(layers[f"block{k - 1:02d}"])
        return x.reshape(shape)

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict]:
        """Segments a batch of images.

        Args:
          images: float [B, H, W, C]; with the ViT backbone H and W are multiples of p.
          train: enables dropout / stochastic depth (needs rngs={'dropout': key}).

        Returns:
          (logits [B, H, W, K] float32, aux) with aux["tokens"] the final normed tokens
          [B, N, D], aux["features"] the tuple of maps the decoder reads, aux["decoder_maps"]
          (PUP: the stage maps before each x2) and, with `aux_layers`, aux["aux_logits"].
        """
        self._check_images(images)
        out_size = tuple(images.shape[1:3])
        kw = dict(norm_groups=self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype)
        fields = self.encoder_fields()

        if self.backbone == "swin":
            _, stages = Swin(**fields, name="encoder")(images, train=train)
            features = tuple(
                nn.LayerNorm(
                    epsilon=SWIN_LN_EPS,
                    dtype=jnp.float32,
                    param_dtype=self.param_dtype,
                    name=f"stage{i + 1}_norm",
                )(stages[f"stage{i + 1}"])
                for i in range(len(fields["depths"]))
            )
            last = features[-1]
            aux: dict[str, Any] = {"tokens": last.reshape(last.shape[0], -1, last.shape[-1])}
            logits = MultiLevelHead(
                self.num_classes, self.decoder_width, self.mla_width, name="decoder", **kw
            )(features, fuse_size=features[0].shape[1:3], out_size=out_size)
            aux["features"] = features
            return logits.astype(jnp.float32), aux

        _, enc = ViT(**fields, name="encoder")(images, train=train)
        p = self.patch_size
        gh, gw = images.shape[1] // p, images.shape[2] // p
        tokens = enc["tokens"]  # [B, N, D] after the final LayerNorm, no class token
        z = tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[-1])
        aux = {"tokens": tokens}
        if self.decoder == "naive":
            features = (z,)
            logits = NaiveHead(self.num_classes, self.decoder_width, name="decoder", **kw)(
                z, out_size
            )
        elif self.decoder == "pup":
            features = (z,)
            stages = int(math.log2(p))
            logits, maps = PUPHead(
                self.num_classes, stages, self.decoder_width, name="decoder", **kw
            )(z)
            aux["decoder_maps"] = maps
            assert logits.shape[1:3] == out_size, (logits.shape, out_size)
        else:
            # The last layer's tokens already went through the encoder's final LayerNorm; the
            # other levels get a LayerNorm of their own, as in the official MLA backbone.
            features = tuple(
                z if k == self.depth else self._layer_map(enc, k, f"mla_norm_{i}", z.shape)
                for i, k in enumerate(self.mla_layer_indices)
            )
            fuse = (4 * z.shape[1], 4 * z.shape[2])
            logits = MultiLevelHead(
                self.num_classes, self.decoder_width, self.mla_width, name="decoder", **kw
            )(features, fuse_size=fuse, out_size=out_size)
        aux["features"] = features

        if self.aux_layers:
            aux["aux_logits"] = tuple(
                NaiveHead(self.num_classes, self.decoder_width, name=f"aux_head_{i}", **kw)(
                    self._layer_map(enc, k, f"aux_norm_{i}", z.shape), out_size
                ).astype(jnp.float32)
                for i, k in enumerate(self.aux_layers)
            )
        return logits.astype(jnp.float32), aux


# -- variants -------------------------------------------------------------------------------------
# SETR's encoder defaults: no class token, exact GELU (SETR's PyTorch ViT), no head.
VIT_DEFAULTS: dict[str, Any] = dict(gelu_approximate=False, layernorm_epsilon=1e-6)
SWIN_DEFAULTS: dict[str, Any] = dict(patch_size=4, window=7)


def _swin(size: str) -> dict[str, Any]:
    # The rate of dense-prediction Swin backbones (ADE20K recipes).
    return dict(backbone="swin", decoder="mla", encoder=dict(variant=size, drop_path_rate=0.3))


SETR_VARIANTS = VariantTable(
    "setr",
    "Zheng et al. 2021, sec. 4 (ViT-L/16 encoder, C = 256); ViT sizes of Dosovitskiy et al. 2021, "
    "Table 1; Swin sizes of Liu et al. 2021, Table 1",
    {
        "S/16": dict(backbone="vit", encoder=dict(variant="S/16")),
        "B/16": dict(backbone="vit", encoder=dict(variant="B/16")),
        "L/16": dict(backbone="vit", encoder=dict(variant="L/16")),  # SETR's encoder
        # A few seconds per epoch on a CPU for the embedded digit scenes.
        "digits": dict(
            backbone="vit",
            encoder=dict(patch_size=4, hidden_size=64, depth=4, num_heads=4, mlp_dim=128),
            decoder_width=64,
            mla_width=32,
            norm_groups=8,
        ),
        "swin_T": _swin("T"),
        "swin_S": _swin("S"),
        "swin_B": _swin("B"),
        "swin_digits": dict(
            backbone="swin",
            decoder="mla",
            encoder=dict(
                patch_size=2,
                window=4,
                embed_dim=32,
                depths=(2, 2, 2, 2),
                num_heads=(2, 2, 4, 4),
                drop_path_rate=0.0,
            ),
            decoder_width=64,
            mla_width=32,
            norm_groups=8,
        ),
    },
)


def setr_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """`SETR` fields of `variant` (see `SETR_VARIANTS`; None: class defaults, i.e. an encoder
    from the config's `encoder` with PUP) updated by the non-None overrides (a nested `encoder`
    merges into the variant's).

    Raises:
      ValueError: unknown variant, in one line naming the valid ones.
    """
    return preset_kwargs(SETR_VARIANTS, variant, overrides)
