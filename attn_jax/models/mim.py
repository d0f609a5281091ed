"""Masked image modeling with a ViT encoder: SimMIM and MAE.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu 2022, "SimMIM: A Simple Framework for Masked Image
Modeling" (CVPR 2022):
  sec. 3.1  random masking at a mask-unit size (32 px by default) independent of the model's patch
            size: ceil(units * ratio) units masked per image (ratio 0.6), upsampled to the patch
            grid (`simmim_mask`);
  sec. 3.2  the masked patch embeddings are replaced by a learned mask token and EVERY token goes
            through the encoder (`ViT(mask=...)`);
  sec. 3.3  the prediction head is a single linear layer: a 1x1 conv of the patch tokens to
            P*P*C values, rearranged into the image by PixelShuffle (`depth_to_space`);
  eq. 1     L = ||y_M - x_M||_1 / Omega(x_M), over masked pixels only (attn_jax/tasks/
            masked_image.py).
The official ViT-B configuration adds a shared relative position bias and layer scale (0.1) to the
encoder; this one keeps the absolute position embedding of our ViT, so the pretrained encoder
loads into `attn_jax.models.vit.ViT` unchanged.

He, Chen, Xie, Li, Dollar, Girshick 2022, "Masked Autoencoders Are Scalable Vision Learners"
(CVPR 2022):
  sec. 3 "Masking"      a random subset of patches is kept per image (75% removed) by sorting
                        uniform noise (`random_masking`);
  sec. 3 "MAE encoder"  the ViT sees the visible patches only, after the (fixed 2D sin-cos)
                        position embedding was added to all of them (`ViT(keep=...)`);
  sec. 3 "MAE decoder"  a narrow Transformer (512-d, 8 blocks) on the full set: the encoded
                        visible tokens and a shared learned mask token, put back in place
                        (`unshuffle`), with their own sin-cos position embedding;
  sec. 3 "Reconstruction target"  a linear layer predicts each patch's P*P*C pixels (`patchify`
                        order (row, column, channel)); the MSE loss on masked patches only, on
                        per-patch normalized pixels with `norm_pix_loss` (tasks/masked_image.py).
Parameter counts of the "B/16" preset (224 px, 3 channels) match the official models_mae.py:
encoder 85,647,360 trainable, decoder 26,008,320 (the sin-cos tables are constants, not counted).

Both models keep their encoder as the submodule "encoder", an `attn_jax.models.vit.ViT` with
`num_classes=0` built from the nested config `encoder` (ViT fields, or a ViT variant), so a
fine-tuning run loads `params["encoder"]` into a ViT classifier of the same fields
(`init_from_prefix="encoder"`). MAE's decoder blocks are `blocks.stack_blocks` with ViT's names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.positional import sincos_2d_posemb
from attn_jax.models.blocks import AttentionModel, stack_blocks
from attn_jax.models.variants import VariantTable, check_fields, merge_fields, preset_kwargs
from attn_jax.models.vit import (
    POSEMBS,
    VIT_BLOCK_NAMES,
    ViT,
    patchify,
    vit_kwargs,
    vit_layer_index,
)


# -- pure functions -------------------------------------------------------------------------------
def random_masking(
    key: jax.Array, batch: int, num_patches: int, mask_ratio: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """MAE's per-sample random masking by sorting uniform noise (small noise = kept).

    Args:
      key: PRNG key.
      batch: B.
      num_patches: N.
      mask_ratio: fraction removed; K = int(N * (1 - mask_ratio)) patches are kept per sample.

    Returns:
      (keep int32 [B, K] the kept patch indices in shuffled order, mask float32 [B, N] with 1 on
      removed patches, ids_restore int32 [B, N] the inverse permutation for `unshuffle`).
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    noise = jax.random.uniform(key, (batch, num_patches))
    ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
    ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
    # A patch's rank in the shuffle is ids_restore; the first num_keep ranks are kept.
    mask = (ids_restore >= num_keep).astype(jnp.float32)
    return ids_shuffle[:, :num_keep], mask, ids_restore


def unshuffle(x_shuffled: jax.Array, ids_restore: jax.Array) -> jax.Array:
    """Puts tokens [B, N, D] given in shuffled order back in patch order (MAE's decoder)."""
    return jnp.take_along_axis(x_shuffled, ids_restore[:, :, None], axis=1)


def simmim_mask(
    key: jax.Array,
    batch: int,
    image_hw: tuple[int, int],
    patch_size: int,
    mask_patch_size: int,
    mask_ratio: float,
) -> jax.Array:
    """SimMIM's random mask: whole mask units of mask_patch_size px, upsampled to the patch grid.

    Args:
      key: PRNG key.
      batch: B.
      image_hw: (H, W) of the images.
      patch_size: P, the model's patch size.
      mask_patch_size: side of a mask unit in pixels; a multiple of P that divides H and W.
      mask_ratio: ceil(units * mask_ratio) units are masked in every image.

    Returns:
      bool [B, (H / P) * (W / P)], True = masked, patches in row-major order.

    Raises:
      ValueError: mask_patch_size not a multiple of P, or not dividing the image.
    """
    h, w = image_hw
    m = mask_patch_size
    if m % patch_size:
        raise ValueError(
            f"mask_patch_size={m} is not a multiple of patch_size={patch_size}: pick a multiple"
        )
    if h % m or w % m:
        raise ValueError(
            f"mask_patch_size={m} does not divide the {h}x{w} image: pick a divisor of both sides"
        )
    rows, cols = h // m, w // m
    units = rows * cols
    count = math.ceil(units * mask_ratio)
    # Rank of each unit in a random permutation; the `count` lowest ranks are masked.
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch, units)), axis=1), axis=1)
    coarse = (ranks < count).reshape(batch, rows, cols)
    scale = m // patch_size
    fine = jnp.repeat(jnp.repeat(coarse, scale, axis=1), scale, axis=2)  # [B, H/P, W/P]
    return fine.reshape(batch, -1)


def depth_to_space(x: jax.Array, r: int) -> jax.Array:
    """PyTorch's PixelShuffle(r) for channels-last maps: [B, h, w, C*r*r] -> [B, h*r, w*r, C].

    Input channel c*r*r + i*r + j goes to output channel c at pixel (h*r + i, w*r + j), the
    order SimMIM's 1x1-conv decoder is trained with.
    """
    b, h, w, crr = x.shape
    c = crr // (r * r)
    assert c * r * r == crr, (x.shape, r)
    x = x.reshape(b, h, w, c, r, r)
    x = jnp.einsum("bhwcij->bhiwjc", x)
    return x.reshape(b, h * r, w * r, c)


def unpatchify(
    patches: jax.Array, patch_size: int, grid: tuple[int, int] | None = None
) -> jax.Array:
    """Inverse of `attn_jax.models.vit.patchify`: [B, N, P*P*C] -> [B, gh*P, gw*P, C].

    Args:
      patches: per-patch vectors ordered (row, column, channel).
      patch_size: P.
      grid: (gh, gw) with gh * gw = N; None: a square grid.
    """
    b, n, ppc = patches.shape
    if grid is None:
        side = math.isqrt(n)
        assert side * side == n, f"{n} patches do not form a square grid: pass grid"
        grid = (side, side)
    gh, gw = grid
    p = patch_size
    c = ppc // (p * p)
    x = patches.reshape(b, gh, gw, p, p, c)
    x = jnp.einsum("bhwpqc->bhpwqc", x)
    return x.reshape(b, gh * p, gw * p, c)


def upsample_patch_mask(mask: jax.Array, grid: tuple[int, int], patch_size: int) -> jax.Array:
    """A patch mask [B, N] as a pixel mask [B, gh*P, gw*P, 1] of the same dtype."""
    b = mask.shape[0]
    x = mask.reshape(b, grid[0], grid[1])
    x = jnp.repeat(jnp.repeat(x, patch_size, axis=1), patch_size, axis=2)
    return x[..., None]


def _mask_key(module: nn.Module) -> jax.Array:
    # Without a "mask" stream (a FLOPs count, a bare apply) a fixed key keeps the call
    # deterministic; at init flax falls back to the "params" stream by itself.
    if module.has_rng("mask") or module.has_rng("params"):
        return module.make_rng("mask")
    return jax.random.key(0)


def _check_patch_grid(model: str, images: jax.Array, patch_size: int) -> tuple[int, int]:
    _, h, w, _ = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"{model} needs image sides divisible by patch_size={patch_size}, got {h}x{w}: "
            "resize the images (data.image_size) or change the patch size"
        )
    return h // patch_size, w // patch_size


# -- models ---------------------------------------------------------------------------------------
class _MaskedViT(AttentionModel):
    """What the two models share: the encoder, a ViT given by the nested config `encoder`.

    `encoder` holds ViT fields (and optionally a ViT "variant"); `num_classes` is 0 (no head), and
    the attention function and implementation and the dtypes are the model's own, so that one
    config line reaches the encoder and the decoder alike.
    """

    encoder: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    # The encoder defaults of the method (class attribute, not a field).
    ENCODER_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def encoder_fields(self) -> dict[str, Any]:
        """The fields of the encoder ViT; a classifier with these (and num_classes) fine-tunes
        from this model's `params["encoder"]`."""
        fields = dict(self.encoder)
        check_fields(ViT, fields, f"{type(self).__name__}'s model.encoder")
        variant = fields.pop("variant", None)
        fields = vit_kwargs(variant, **merge_fields(self.ENCODER_DEFAULTS, fields))
        return dict(fields, num_classes=0, **self.shared_fields())

    def layer_index(self, path: str) -> int | slice | None:
        """The encoder's layer ids (`vit_layer_index`) for layer-wise lr decay; the decoder sits
        above every layer."""
        top, _, rest = path.partition("/")
        return vit_layer_index(rest) if top == "encoder" else None

    @property
    def patch_size(self) -> int:
        """The encoder's patch side P (square patches)."""
        return int(self.encoder_fields()["patch_size"])

    def _check_encoder(self) -> None:
        fields = self.encoder_fields()
        for required in ("patch_size", "hidden_size", "depth", "num_heads", "mlp_dim"):
            if fields.get(required) is None:
                raise ValueError(
                    f"{type(self).__name__} encoder misses {required!r}: set "
                    f"model.encoder.{required} or model.encoder.variant"
                )
        if fields.get("posemb", "learned") not in POSEMBS:
            raise ValueError(
                f"{type(self).__name__} encoder posemb={fields['posemb']!r} is not one of "
                f"{list(POSEMBS)}"
            )
        ViT(**fields, parent=None)  # the ViT's own checks, while the config is read


class SimMIM(_MaskedViT):
    """SimMIM: mask-token ViT encoder and a linear (1x1 conv + PixelShuffle) pixel decoder.

    Attributes:
      encoder: the encoder's ViT fields (`_MaskedViT`); its pool is "token" (a class token,
        dropped before decoding, as the official ViT) or "gap" (no class token).
      mask_patch_size: side of a mask unit in pixels (32 in the paper), a multiple of the patch.
      mask_ratio: fraction of mask units masked (0.6).
    """

    mask_patch_size: int = 32
    mask_ratio: float = 0.6

    ENCODER_DEFAULTS: ClassVar[dict[str, Any]] = {"pool": "token", "posemb": "learned"}

    def __post_init__(self):
        self._check_encoder()
        pool = self.encoder_fields()["pool"]
        if pool not in ("token", "gap"):
            raise ValueError(f"SimMIM encoder pool={pool!r} is not one of ['token', 'gap']")
        if self.mask_patch_size % self.patch_size:
            raise ValueError(
                f"SimMIM mask_patch_size={self.mask_patch_size} is not a multiple of "
                f"patch_size={self.patch_size}: pick a multiple"
            )
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise ValueError(f"SimMIM mask_ratio={self.mask_ratio} is not in [0, 1]")
        super().__post_init__()

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False, mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Reconstructs the images from their masked versions.

        Args:
          images: float [B, H, W, C], sides divisible by mask_patch_size.
          train: enables dropout (rngs={'dropout': key}).
          mask: bool [B, N] over the patches (True = masked); None draws `simmim_mask` from the
            "mask" RNG stream.

        Returns:
          (reconstruction [B, H, W, C] of every pixel, float32, aux) with aux["mask"] [B, N],
          aux["pixel_mask"] float [B, H, W, 1] (1 = masked pixel, where the loss counts) and
          aux["tokens"] the encoded patch tokens [B, N, D].
        """
        b, h, w, c = images.shape
        p = self.patch_size
        gh, gw = _check_patch_grid("SimMIM", images, p)
        if mask is None:
            mask = simmim_mask(_mask_key(self), b, (h, w), p, self.mask_patch_size, self.mask_ratio)
        fields = self.encoder_fields()
        _, enc = ViT(**fields, name="encoder")(images, train=train, mask=mask)
        tokens = enc["tokens"][:, 1:] if fields["pool"] == "token" else enc["tokens"]
        z = tokens.reshape(b, gh, gw, tokens.shape[-1])
        z = nn.Conv(
            p * p * c, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype, name="decoder"
        )(z)
        reconstruction = depth_to_space(z, p).astype(jnp.float32)  # [B, H, W, C]
        pixel_mask = upsample_patch_mask(mask.astype(jnp.float32), (gh, gw), p)
        return reconstruction, {"mask": mask, "pixel_mask": pixel_mask, "tokens": tokens}


class MAE(_MaskedViT):
    """MAE: ViT encoder on the visible patches, a narrow Transformer decoder on all of them.

    Attributes:
      encoder: the encoder's ViT fields (`_MaskedViT`); it has a class token and, by default,
        the fixed 2D sin-cos position embedding. The decoder blocks take its LayerNorm epsilon
        and GELU.
      mask_ratio: fraction of patches removed (0.75).
      decoder_hidden_size: decoder width (512).
      decoder_depth: decoder blocks (8).
      decoder_num_heads: decoder attention heads (16).
      decoder_mlp_dim: decoder MLP width (2048 = 4 * 512).
    """

    mask_ratio: float = 0.75
    decoder_hidden_size: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_dim: int = 2048

    ENCODER_DEFAULTS: ClassVar[dict[str, Any]] = {"pool": "token", "posemb": "sincos2d"}

    def __post_init__(self):
        self._check_encoder()
        if self.encoder_fields()["pool"] != "token":
            raise ValueError("MAE's encoder keeps its class token: set model.encoder.pool=token")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(
                f"MAE mask_ratio={self.mask_ratio} is not in [0, 1): the encoder needs a patch"
            )
        if self.decoder_hidden_size % 4 or self.decoder_hidden_size % self.decoder_num_heads:
            raise ValueError(
                f"MAE decoder_hidden_size={self.decoder_hidden_size} must be divisible by 4 "
                f"(sin-cos table) and by decoder_num_heads={self.decoder_num_heads}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Predicts the pixels of every patch from a random 1 - mask_ratio of them.

        Args:
          images: float [B, H, W, C], sides divisible by the patch size.
          train: enables dropout (rngs={'dropout': key}); the mask comes from the "mask" stream.

        Returns:
          (pred [B, N, P*P*C] per patch in `patchify` order, float32, aux) with aux["mask"]
          float [B, N] (1 = removed: where the loss counts), aux["ids_restore"] [B, N],
          aux["keep"] [B, K] and aux["tokens"] the encoder's output [B, 1 + K, D] (class token
          first).
        """
        b, _, _, c = images.shape
        p = self.patch_size
        gh, gw = _check_patch_grid("MAE", images, p)
        n = gh * gw
        keep, mask, ids_restore = random_masking(_mask_key(self), b, n, self.mask_ratio)
        fields = self.encoder_fields()
        _, enc = ViT(**fields, name="encoder")(images, train=train, keep=keep)
        dense = dict(
            kernel_init=nn.initializers.xavier_uniform(),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        d = self.decoder_hidden_size
        x = nn.Dense(d, name="decoder_embed", **dense)(enc["tokens"])  # [B, 1 + K, Dd]
        mask_token = self.param(
            "decoder_mask_token", nn.initializers.normal(0.02), (1, 1, d), self.param_dtype
        )
        filler = jnp.broadcast_to(mask_token.astype(x.dtype), (b, n - keep.shape[1], d))
        patches = unshuffle(jnp.concatenate([x[:, 1:], filler], axis=1), ids_restore)
        x = jnp.concatenate([x[:, :1], patches], axis=1)  # [B, 1 + N, Dd]
        x = x + jnp.asarray(sincos_2d_posemb(gh, gw, d, class_token=True), x.dtype)
        eps = fields.get("layernorm_epsilon", 1e-6)
        x, _ = stack_blocks(
            x,
            depth=self.decoder_depth,
            block=dict(
                num_heads=self.decoder_num_heads,
                mlp_dim=self.decoder_mlp_dim,
                names=VIT_BLOCK_NAMES,
                activation="gelu_tanh" if fields.get("gelu_approximate", True) else "gelu",
                layernorm_epsilon=eps,
                mlp_bias_init=nn.initializers.normal(stddev=1e-6),
                train=train,
                **self.shared_fields(),
            ),
            name="decoderblock_{i}",
        )
        norm = nn.LayerNorm(
            epsilon=eps, dtype=jnp.float32, param_dtype=self.param_dtype, name="decoder_norm"
        )
        pred = nn.Dense(p * p * c, name="decoder_pred", **dense)(norm(x).astype(x.dtype))
        return pred[:, 1:].astype(jnp.float32), {  # the class token's row is dropped
            "mask": mask,
            "ids_restore": ids_restore,
            "keep": keep,
            "tokens": enc["tokens"],
        }


# -- variants -------------------------------------------------------------------------------------
# MAE: ViT-B/L/H encoders (exact GELU and LayerNorm eps 1e-6 as models_mae.py) with the paper's
# default decoder, 8 blocks of width 512 (sec. 4 / Table 1a, 1b).
_MAE_DECODER = dict(
    decoder_hidden_size=512, decoder_depth=8, decoder_num_heads=16, decoder_mlp_dim=2048
)
MAE_VARIANTS = VariantTable(
    "MAE",
    "He et al. 2022, sec. 4 and Table 1 (decoder); ViT sizes of Dosovitskiy et al. 2021, Table 1",
    {
        name: dict(
            encoder=dict(variant=name, posemb="sincos2d", gelu_approximate=False),
            **_MAE_DECODER,
            mask_ratio=0.75,
        )
        for name in ("B/16", "L/16", "H/14")
    },
)
# SimMIM with ViT-B/16 at 224 px: mask units of 32 px, ratio 0.6 (its ViT-B config).
SIMMIM_VARIANTS = VariantTable(
    "SimMIM",
    "Xie et al. 2022, sec. 4.1 (ViT-B/16, 32-px mask units, ratio 0.6)",
    {
        "B/16": dict(
            encoder=dict(variant="B/16", posemb="learned", gelu_approximate=False),
            mask_patch_size=32,
            mask_ratio=0.6,
        ),
    },
)


def mae_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """MAE constructor kwargs of a variant in `MAE_VARIANTS` (or None) with the non-None
    `overrides` on top (a nested `encoder` merges); raises ValueError for an unknown variant."""
    return preset_kwargs(MAE_VARIANTS, variant, overrides)


def simmim_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """SimMIM constructor kwargs of a variant in `SIMMIM_VARIANTS` (or None) with the non-None
    `overrides` on top (a nested `encoder` merges); raises ValueError for an unknown variant."""
    return preset_kwargs(SIMMIM_VARIANTS, variant, overrides)


__all__ = [
    "MAE",
    "MAE_VARIANTS",
    "SIMMIM_VARIANTS",
    "SimMIM",
    "depth_to_space",
    "mae_kwargs",
    "patchify",
    "random_masking",
    "simmim_kwargs",
    "simmim_mask",
    "unpatchify",
    "unshuffle",
    "upsample_patch_mask",
]
