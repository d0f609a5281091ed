"""Masked image modeling: the reconstruction losses of SimMIM and MAE (labels are ignored).

SimMIM (Xie et al. 2022, eq. 1): L1 between the reconstruction and the (dataset-normalized)
pixels, over the masked pixels only, as its official code writes it:

    L = sum(|x - y| * M) / (sum(M) + 1e-5) / C        M: [B, H, W, 1] pixel mask, C channels

MAE (He et al. 2022, sec. 3 "Reconstruction target"): mean squared error per patch over its P*P*C
values (the `patchify` order (row, column, channel)), averaged over the removed patches only;
with `norm_pix_loss` the target of each patch is its pixels normalized by the patch's own mean
and UNBIASED variance (torch.var, ddof=1): t = (x - mean) / sqrt(var + 1e-6).

Padded examples of an evaluation batch (mask False) count for nothing. Evaluation draws its
masks from a fixed key, so the evaluation loss of a checkpoint is a deterministic number;
training draws them from the step's key (`fold_in(rng, ...)`), so the train step is the generic one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.models.mim import MAE, SimMIM, patchify, unpatchify, upsample_patch_mask

# The figure kind of `figure_data` (attn_jax.figures draws it into <kind>.png).
RECONSTRUCTIONS_FIGURE = "reconstructions"
RECONSTRUCTIONS_FILE = f"{RECONSTRUCTIONS_FIGURE}.png"
METHODS = ("simmim", "mae")
_MASK_PURPOSE = 0x4D41534B  # folded into the step key: the mask stream differs from dropout's


# -- losses (pure) --------------------------------------------------------------------------------
def simmim_loss(images: jax.Array, reconstruction: jax.Array, pixel_mask: jax.Array) -> jax.Array:
    """SimMIM's masked L1 (module docstring).

    Args:
      images: [B, H, W, C] targets.
      reconstruction: [B, H, W, C].
      pixel_mask: [B, H, W, 1] (or [B, H, W, C]) weights, 1 on masked pixels.

    Returns:
      the scalar loss (0 when nothing is masked).
    """
    c = images.shape[-1]
    diff = jnp.abs(images.astype(jnp.float32) - reconstruction.astype(jnp.float32))
    weights = jnp.broadcast_to(pixel_mask.astype(jnp.float32), diff.shape[:-1] + (1,))
    return (diff * weights).sum() / (weights.sum() + 1e-5) / c


def mae_targets(images: jax.Array, patch_size: int, norm_pix_loss: bool) -> jax.Array:
    """[B, N, P*P*C] patch targets; normalized per patch with `norm_pix_loss`."""
    target = patchify(images.astype(jnp.float32), patch_size)
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, keepdims=True, ddof=1)  # torch.var's default is unbiased
        target = (target - mean) / jnp.sqrt(var + 1e-6)
    return target


def denormalize_patches(pred: jax.Array, images: jax.Array, patch_size: int) -> jax.Array:
    """Maps norm_pix predictions [B, N, P*P*C] back to pixels with the mean and unbiased variance
    of the input patch each one replaces (for display: the target statistics of the masked
    patches are unknown to the model)."""
    patches = patchify(images.astype(jnp.float32), patch_size)
    mean = patches.mean(axis=-1, keepdims=True)
    var = patches.var(axis=-1, keepdims=True, ddof=1)
    return pred.astype(jnp.float32) * jnp.sqrt(var + 1e-6) + mean


def mae_patch_losses(
    images: jax.Array, pred: jax.Array, patch_size: int, norm_pix_loss: bool
) -> jax.Array:
    """[B, N] mean squared error of each patch over its P*P*C values."""
    target = mae_targets(images, patch_size, norm_pix_loss)
    return jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)


def mae_loss(
    images: jax.Array,
    pred: jax.Array,
    mask: jax.Array,
    patch_size: int,
    norm_pix_loss: bool,
) -> jax.Array:
    """MAE's loss: the per-patch MSE averaged over the patches with mask 1 (removed) only.

    Args:
      images: [B, H, W, C].
      pred: [B, N, P*P*C] in `patchify` order.
      mask: [B, N], 1 = removed (counts), 0 = visible.
      patch_size: P.
      norm_pix_loss: normalize each target patch by its mean and unbiased variance.

    Returns:
      the scalar loss (0 when no patch counts).
    """
    per_patch = mae_patch_losses(images, pred, patch_size, norm_pix_loss)
    mask = mask.astype(jnp.float32)
    count = mask.sum()
    return jnp.where(count > 0, (per_patch * mask).sum() / jnp.maximum(count, 1e-12), 0.0)


# -- the task -------------------------------------------------------------------------------------
class MaskedImageModeling:
    """Pretraining by reconstructing masked pixels: SimMIM or MAE models on image batches
    {"image" [B, H, W, C], "mask" bool [B]}; any "label" is ignored.

    Args:
      num_classes: ignored (the trainer passes the dataset's).
      method: "simmim" (model `SimMIM`, L1 on masked pixels) or "mae" (model `MAE`, MSE on
        removed patches).
      norm_pix_loss: MAE only: per-patch normalized targets (the paper's default).
      eval_mask_seed: the key of the evaluation masks.
      num_plot_examples: images in the figure of `figure_data`.
    """

    evaluation = "reconstruction"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("loss",)  # configs: target_metric="test/loss", target_mode="min"
    curve_metrics = ("loss",)

    def __init__(
        self,
        num_classes: int = 0,
        method: str = "simmim",
        norm_pix_loss: bool = True,
        eval_mask_seed: int = 0,
        num_plot_examples: int = 8,
    ):
        del num_classes
        if method not in METHODS:
            raise ValueError(f"masked_image method={method!r} is not one of {list(METHODS)}")
        self.method = method
        self.norm_pix_loss = bool(norm_pix_loss)
        self.eval_mask_seed = int(eval_mask_seed)
        self.num_plot_examples = int(num_plot_examples)

    @staticmethod
    def init_inputs(spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: an image batch of size 1."""
        if spec.image_shape is None:
            raise ValueError(f"dataset {spec.name!r} has no images; masked_image needs images")
        return (jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32),)

    def _check_model(self, model) -> None:
        expected = {"simmim": SimMIM, "mae": MAE}[self.method]
        if not isinstance(model, expected):
            raise ValueError(
                f"task method={self.method!r} needs model {self.method!r}, got "
                f"{type(model).__name__}: set task.method to match config.model.name"
            )

    def _sums(self, model, images, out, aux, weights) -> dict[str, jax.Array]:
        """Loss numerator and denominator over the counted pixels/patches of real examples."""
        if self.method == "simmim":
            m = aux["pixel_mask"].astype(jnp.float32) * weights[:, None, None, None]
            diff = jnp.abs(images.astype(jnp.float32) - out.astype(jnp.float32))
            return {"loss": (diff * m).sum() / images.shape[-1], "count": m.sum()}
        per_patch = mae_patch_losses(images, out, model.patch_size, self.norm_pix_loss)
        m = aux["mask"].astype(jnp.float32) * weights[:, None]
        return {"loss": (per_patch * m).sum(), "count": m.sum()}

    def _apply(self, model, params, images, mask_key, *, train: bool, dropout_key=None):
        self._check_model(model)
        rngs = {"mask": mask_key}
        if dropout_key is not None:
            rngs["dropout"] = dropout_key
        return model.apply({"params": params}, images, train=train, rngs=rngs)

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The reconstruction loss of the batch's real examples, and {"loss"}."""
        images = batch["image"]
        mask_key = jax.random.fold_in(rng, _MASK_PURPOSE)
        out, aux = self._apply(model, params, images, mask_key, train=train, dropout_key=rng)
        weights = batch["mask"].astype(jnp.float32)
        if self.method == "simmim":
            loss = simmim_loss(images, out, aux["pixel_mask"] * weights[:, None, None, None])
        else:
            loss = mae_loss(
                images, out, aux["mask"] * weights[:, None], model.patch_size, self.norm_pix_loss
            )
        return loss, {"loss": loss}

    def _eval_key(self) -> jax.Array:
        return jax.random.key(self.eval_mask_seed)

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the batch (the loss numerator and the counted pixels or patches), with the
        fixed evaluation masks."""
        images = batch["image"]
        out, aux = self._apply(model, params, images, self._eval_key(), train=False)
        return self._sums(model, images, out, aux, batch["mask"].astype(jnp.float32))

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        count = float(sums["count"])
        return {"loss": float(sums["loss"]) / count if count > 0 else 0.0}

    # -- figures ---------------------------------------------------------------------------------
    def reconstruct(self, model, params, images: np.ndarray) -> dict[str, np.ndarray]:
        """What the reconstruction figure draws, as arrays [B, H, W, C] (pixel_mask [B, H, W, 1]).

        "reconstruction" is the model's output for every pixel, "pasted" the reconstruction on the
        masked pixels and the input on the visible ones (MAE's figures). MAE with
        `norm_pix_loss` predicts normalized patches: each is mapped back with the mean and
        variance of the input patch it replaces, the display the MAE authors describe.
        """

        def run(p, x):
            out, aux = self._apply(model, p, x, self._eval_key(), train=False)
            if self.method == "simmim":
                return out, aux["pixel_mask"]
            pm = model.patch_size
            gh, gw = x.shape[1] // pm, x.shape[2] // pm
            pred = out.astype(jnp.float32)
            if self.norm_pix_loss:
                pred = denormalize_patches(pred, x, pm)
            return unpatchify(pred, pm, (gh, gw)), upsample_patch_mask(aux["mask"], (gh, gw), pm)

        recon, pixel_mask = jax.jit(run)(params, jnp.asarray(images, jnp.float32))
        recon, pixel_mask = np.asarray(recon), np.asarray(pixel_mask, np.float32)
        return {
            "image": np.asarray(images, np.float32),
            "pixel_mask": pixel_mask,
            "reconstruction": recon,
            "pasted": np.where(pixel_mask > 0, recon, images),
        }

    def figure_data(self, model, params, batch: dict[str, Any], vocab) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"reconstructions": `reconstruct` of the
        first real examples of `batch`}; {} when the batch holds no real example."""
        del vocab  # images have none
        chosen = np.flatnonzero(np.asarray(batch["mask"]))[: self.num_plot_examples]
        if chosen.size == 0:
            return {}
        arrays = self.reconstruct(model, params, np.asarray(batch["image"])[chosen])
        return {RECONSTRUCTIONS_FIGURE: arrays}


__all__ = [
    "METHODS",
    "MaskedImageModeling",
    "denormalize_patches",
    "mae_loss",
    "mae_patch_losses",
    "mae_targets",
    "simmim_loss",
]
