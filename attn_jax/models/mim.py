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
`num_classes=0`, so a fine-tuning run loads `params["encoder"]` into a ViT classifier of the same
fields (`init_from_prefix="encoder"`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attn_jax.attention.positional import sincos_2d_posemb
from attn_jax.models.vit import POSEMBS, EncoderBlock, ViT, patchify, vit_kwargs


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


def _check_posemb(model: nn.Module) -> None:
    if model.posemb not in POSEMBS:
        raise ValueError(
            f"{type(model).__name__} posemb={model.posemb!r} is not one of {list(POSEMBS)}"
        )


def _check_patch_grid(model: str, images: jax.Array, patch_size: int) -> tuple[int, int]:
    _, h, w, _ = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"{model} needs image sides divisible by patch_size={patch_size}, got {h}x{w}: "
            "resize the images (data.image_size) or change the patch size"
        )
    return h // patch_size, w // patch_size


# -- models ---------------------------------------------------------------------------------------
class _MaskedViT(nn.Module):
    """The encoder fields the two models share; they describe the ViT named "encoder"."""

    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    qkv_features: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    posemb: str = "sincos2d"
    layernorm_epsilon: float = 1e-6
    gelu_approximate: bool = True
    scan: bool = False
    remat: bool = False
    attention_implementation: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def encoder_fields(self) -> dict[str, Any]:
        """The fields of the encoder ViT; a classifier with these (and num_classes) fine-tunes
        from this model's `params["encoder"]`."""
        return dict(
            num_classes=0,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            qkv_features=self.qkv_features,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            pool="token",
            posemb=self.posemb,
            layernorm_epsilon=self.layernorm_epsilon,
            gelu_approximate=self.gelu_approximate,
            scan=self.scan,
            remat=self.remat,
            attention_implementation=self.attention_implementation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )


class SimMIM(_MaskedViT):
    """SimMIM: mask-token ViT encoder and a linear (1x1 conv + PixelShuffle) pixel decoder.

    Attributes (besides the encoder's ViT fields):
      mask_patch_size: side of a mask unit in pixels (32 in the paper), a multiple of patch_size.
      mask_ratio: fraction of mask units masked (0.6).
      pool: the encoder ViT's pool; "token" (a class token, dropped before decoding, as the
        official ViT) or "gap" (no class token).
    """

    mask_patch_size: int = 32
    mask_ratio: float = 0.6
    pool: str = "token"
    posemb: str = "learned"

    def __post_init__(self):
        _check_posemb(self)
        if self.pool not in ("token", "gap"):
            raise ValueError(f"SimMIM pool={self.pool!r} is not one of ['token', 'gap']")
        if self.mask_patch_size % self.patch_size:
            raise ValueError(
                f"SimMIM mask_patch_size={self.mask_patch_size} is not a multiple of "
                f"patch_size={self.patch_size}: pick a multiple"
            )
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise ValueError(f"SimMIM mask_ratio={self.mask_ratio} is not in [0, 1]")
        super().__post_init__()

    def encoder_fields(self) -> dict[str, Any]:
        return dict(super().encoder_fields(), pool=self.pool)

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
          (reconstruction [B, H, W, C] of every pixel, aux) with aux["mask"] [B, N],
          aux["pixel_mask"] float [B, H, W, 1] (1 = masked pixel, where the loss counts) and
          aux["tokens"] the encoded patch tokens [B, N, D].
        """
        b, h, w, c = images.shape
        gh, gw = _check_patch_grid("SimMIM", images, self.patch_size)
        if mask is None:
            mask = simmim_mask(
                _mask_key(self),
                b,
                (h, w),
                self.patch_size,
                self.mask_patch_size,
                self.mask_ratio,
            )
        _, enc = ViT(**self.encoder_fields(), name="encoder")(images, train=train, mask=mask)
        tokens = enc["tokens"][:, 1:] if self.pool == "token" else enc["tokens"]
        z = tokens.reshape(b, gh, gw, self.hidden_size)
        p = self.patch_size
        z = nn.Conv(
            p * p * c, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype, name="decoder"
        )(z)
        reconstruction = depth_to_space(z, p)  # [B, H, W, C]
        pixel_mask = upsample_patch_mask(mask.astype(jnp.float32), (gh, gw), p)
        return reconstruction, {"mask": mask, "pixel_mask": pixel_mask, "tokens": tokens}


class MAE(_MaskedViT):
    """MAE: ViT encoder on the visible patches, a narrow Transformer decoder on all of them.

    Attributes (besides the encoder's ViT fields; the encoder has a class token and, by
    default, the fixed 2D sin-cos position embedding):
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

    def __post_init__(self):
        _check_posemb(self)
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
          images: float [B, H, W, C], sides divisible by patch_size.
          train: enables dropout (rngs={'dropout': key}); the mask comes from the "mask" stream.

        Returns:
          (pred [B, N, P*P*C] per patch in `patchify` order, aux) with aux["mask"] float [B, N]
          (1 = removed: where the loss counts), aux["ids_restore"] [B, N], aux["keep"] [B, K]
          and aux["tokens"] the encoder's output [B, 1 + K, D] (class token first).
        """
        b, _, _, c = images.shape
        gh, gw = _check_patch_grid("MAE", images, self.patch_size)
        n = gh * gw
        keep, mask, ids_restore = random_masking(_mask_key(self), b, n, self.mask_ratio)
        _, enc = ViT(**self.encoder_fields(), name="encoder")(images, train=train, keep=keep)
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
        for i in range(self.decoder_depth):
            x, _ = EncoderBlock(
                num_heads=self.decoder_num_heads,
                mlp_dim=self.decoder_mlp_dim,
                layernorm_epsilon=self.layernorm_epsilon,
                gelu_approximate=self.gelu_approximate,
                attention_implementation=self.attention_implementation,
                train=train,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"decoderblock_{i}",
            )(x)
        x = nn.LayerNorm(
            epsilon=self.layernorm_epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="decoder_norm",
        )(x)
        p = self.patch_size
        pred = nn.Dense(p * p * c, name="decoder_pred", **dense)(x)[:, 1:]  # drop the class token
        return pred, {
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
MAE_VARIANTS: dict[str, dict[str, Any]] = {
    name: dict(
        vit_kwargs(name),
        **_MAE_DECODER,
        mask_ratio=0.75,
        posemb="sincos2d",
        gelu_approximate=False,
    )
    for name in ("B/16", "L/16", "H/14")
}
# SimMIM with ViT-B/16 at 224 px: mask units of 32 px, ratio 0.6 (its ViT-B config).
SIMMIM_VARIANTS: dict[str, dict[str, Any]] = {
    "B/16": dict(
        vit_kwargs("B/16"),
        mask_patch_size=32,
        mask_ratio=0.6,
        posemb="learned",
        gelu_approximate=False,
    ),
}


def _decode(
    table: dict[str, dict[str, Any]], model: str, variant: str | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if variant is not None:
        if variant not in table:
            raise ValueError(f"unknown {model} variant {variant!r}; valid: {sorted(table)}")
        kwargs.update(table[variant])
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs


def mae_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """MAE constructor kwargs of a variant in `MAE_VARIANTS` (or None) with the non-None
    `overrides` on top; raises ValueError for an unknown variant."""
    return _decode(MAE_VARIANTS, "MAE", variant, overrides)


def simmim_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """SimMIM constructor kwargs of a variant in `SIMMIM_VARIANTS` (or None) with the non-None
    `overrides` on top; raises ValueError for an unknown variant."""
    return _decode(SIMMIM_VARIANTS, "SimMIM", variant, overrides)


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
