"""Heatmaps that explain a ViT's predictions from its attention weights.

The model runs once with its attention weights sown (`ViT(..., sow_weights=True)`, collection
'intermediates', one [B, H, T, T] array per block); from them, with attn_jax.attention.rollout:

  rollout.png  the input image and, over it, the attention rollout relevance of each patch
               (Abnar and Zuidema 2020, "Quantifying Attention Flow in Transformers", sec. 3)
               upsampled bilinearly to the image, titled with the predicted label
  heads.png    the last layer's attention of the class token to the patches, one panel per head
  parts.png    the patches TransFG's part selection module picks, one per head (He et al. 2022,
               "TransFG: A Transformer Architecture for Fine-Grained Recognition", sec. 3.2),
               and with `top_k_parts` the k patches of highest rollout relevance

With a batch of several images each figure has one row (or block of rows) per image. Three entry
points share this code: `explain_classification` for a converted checkpoint (attn_jax.pretrained),
`explain_vit` for any ViT of this codebase given (model, params, images), and `explain_workdir` for
a ViT trained by `launch.py train` (restores its checkpoint and explains test images).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention import rollout as rollout_lib
from attn_jax.errors import UserError
from attn_jax.figures.explanations import plot_explanations
from attn_jax.models.vit import ViT


class ExplainError(UserError, ValueError):
    """A model, image or option that cannot be explained; the message is one line."""


@dataclasses.dataclass
class ViTExplanation:
    """What the heatmaps are drawn from, as numpy arrays.

    Attributes:
      logits: [B, C] the model's outputs.
      attention: [L, B, H, T, T] the sown attention weights, layer 1 first.
      relevance: [B, gh, gw] rollout relevance of each patch, max 1 per image.
      head_maps: [B, H, gh, gw] last layer's attention from the class token (or, without one,
        the mean query) to each patch, per head.
      parts: [B, H] TransFG part selection, token indices in [1, N] (patch p is token p + 1);
        None for models without a class token or with a single block.
      top_parts: [B, k] the k most relevant patches by rollout, token indices in [1, N]; None
        unless `top_k_parts` was given.
      grid_hw: (gh, gw) patch grid.
      patch_hw: (ph, pw) patch size in pixels.
      class_token: whether token 0 is a class token.
    """

    logits: np.ndarray
    attention: np.ndarray
    relevance: np.ndarray
    head_maps: np.ndarray
    parts: np.ndarray | None
    top_parts: np.ndarray | None
    grid_hw: tuple[int, int]
    patch_hw: tuple[int, int]
    class_token: bool


def _block_index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def stack_attention(intermediates: Mapping[str, Any], depth: int) -> jax.Array:
    """The sown attention weights of a ViT's 'intermediates' as one [L, B, H, T, T] array.

    Handles both layouts of `attn_jax.models.vit.Encoder`: one subtree per block
    ('encoderblock_0', ...; ordered by block number, not by name) and, with `scan=True`, one
    'encoderblock' subtree whose weights already carry the leading depth axis.
    """
    encoder = intermediates["Transformer"]
    if "encoderblock" in encoder:  # nn.scan stacked the sown tuple's entry on axis 0
        (weights,) = encoder["encoderblock"]["MultiHeadDotProductAttention_1"]["attention"]
        return weights
    names = sorted((k for k in encoder if k.startswith("encoderblock_")), key=_block_index)
    assert len(names) == depth, (names, depth)
    return jnp.stack(
        [encoder[name]["MultiHeadDotProductAttention_1"]["attention"][0] for name in names]
    )


def _variables(params: Mapping[str, Any]) -> dict[str, Any]:
    """Accepts a bare parameter tree or a variables dict {"params": ..., ...}."""
    if "params" in params:
        return dict(params)
    return {"params": params}


def _check_inputs(model: Any, images: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if not isinstance(model, ViT):
        raise ExplainError(
            f"attention explanations need an attn_jax ViT (attn_jax.models.vit.ViT), got "
            f"{type(model).__name__}; use a ViT checkpoint or config"
        )
    shape = tuple(np.shape(images))
    size = model.patch_size
    patch_hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if len(shape) != 4 or shape[1] < patch_hw[0] or shape[2] < patch_hw[1]:
        raise ExplainError(
            f"images must be a batch [B, H, W, C] at least one {patch_hw[0]}x{patch_hw[1]} patch "
            f"large, got shape {shape}; add a batch axis with images[None] for a single image"
        )
    grid_hw = (shape[1] // patch_hw[0], shape[2] // patch_hw[1])
    return grid_hw, patch_hw


@functools.partial(jax.jit, static_argnums=0)
def _sown_forward(model: ViT, variables: dict[str, Any], images: jax.Array):
    """(logits, attention [L, B, H, T, T]); compiled once per model (modules hash by fields)."""
    (logits, _), state = model.apply(
        variables, images, train=False, sow_weights=True, mutable=["intermediates"]
    )
    return logits, stack_attention(state["intermediates"], model.depth)


def _check_fits(params: Mapping[str, Any], images: Any, grid_hw, class_token: bool) -> None:
    """Channels and token count of the images against the parameters: one line, not a trace."""
    channels = np.shape(params["embedding"]["kernel"])[2]
    if np.shape(images)[-1] != channels:
        raise ExplainError(
            f"images have {np.shape(images)[-1]} channels but the model's patch embedding takes "
            f"{channels}; preprocess the images as for training"
        )
    tokens = np.shape(params["Transformer"]["posembed_input"]["pos_embedding"])[1]
    patches = tokens - int(class_token)
    if grid_hw[0] * grid_hw[1] != patches:
        h, w = np.shape(images)[1:3]
        raise ExplainError(
            f"{h}x{w} images make a {grid_hw[0]}x{grid_hw[1]} patch grid but the model's position "
            f"embedding has {patches} patches; resize the images to the model's input size"
        )


def explain_arrays(
    model: ViT,
    params: Mapping[str, Any],
    images: Any,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    top_k_parts: int | None = None,
) -> ViTExplanation:
    """Runs the ViT with its attention sown and computes rollout, head maps and parts.

    Args:
      model: an attn_jax ViT (any pool; "gap"/"flatten" models have no class token and use the
        mean query row instead, see `rollout.class_token_relevance`).
      params: its parameters, bare or as variables {"params": ...}.
      images: float [B, H, W, C], preprocessed as the model expects.
      head_fusion: head fusion of the rollout ("mean", "max", "min").
      discard_ratio: fraction of the weakest fused weights the rollout discards, in [0, 1).
      top_k_parts: also select the k patches of highest rollout relevance.

    Returns:
      a `ViTExplanation`.
    """
    grid_hw, patch_hw = _check_inputs(model, images)
    if head_fusion not in rollout_lib.HEAD_FUSIONS:
        raise ExplainError(
            f"head_fusion={head_fusion!r} is not one of {list(rollout_lib.HEAD_FUSIONS)}"
        )
    if not 0.0 <= discard_ratio < 1.0:
        raise ExplainError(f"discard_ratio must lie in [0, 1), got {discard_ratio}")
    num_patches = grid_hw[0] * grid_hw[1]
    if top_k_parts is not None and not 1 <= top_k_parts <= num_patches:
        raise ExplainError(
            f"top_k_parts={top_k_parts} must lie in [1, {num_patches}] (the patches of the image)"
        )
    variables = _variables(params)
    _check_fits(variables["params"], images, grid_hw, model.class_token)

    logits, weights = _sown_forward(model, variables, jnp.asarray(images, jnp.float32))
    class_token = model.class_token
    tokens = weights.shape[-1]
    assert tokens == num_patches + int(class_token), (tokens, grid_hw, class_token)
    rollout = rollout_lib.attention_rollout(
        weights, head_fusion=head_fusion, discard_ratio=discard_ratio
    )
    relevance = rollout_lib.class_token_relevance(rollout, grid_hw, class_token=class_token)
    head_maps = rollout_lib.per_head_maps(weights[-1], grid_hw, class_token=class_token)
    # TransFG's selection reads the class token's row and multiplies the first L-1 layers.
    parts = None
    if class_token and model.depth >= 2:
        parts = np.asarray(rollout_lib.transfg_part_selection(weights))
    top_parts = None
    if top_k_parts is not None:
        top_parts = np.asarray(rollout_lib.top_k_parts(relevance, top_k_parts))
    return ViTExplanation(
        logits=np.asarray(logits),
        attention=np.asarray(weights),
        relevance=np.asarray(relevance),
        head_maps=np.asarray(head_maps),
        parts=parts,
        top_parts=top_parts,
        grid_hw=grid_hw,
        patch_hw=patch_hw,
        class_token=class_token,
    )


def upsample_to_pixels(maps: np.ndarray, patch_hw: tuple[int, int]) -> np.ndarray:
    """[..., gh, gw] patch maps -> [..., gh * ph, gw * pw] by bilinear interpolation.

    Patch centres keep their values (half-pixel centres, as cv2.resize, which vit-explain uses);
    the pixels the patch embedding drops at the right and bottom edges are not covered.
    """
    gh, gw = maps.shape[-2:]
    ph, pw = patch_hw
    shape = (*maps.shape[:-2], gh * ph, gw * pw)
    return np.asarray(jax.image.resize(jnp.asarray(maps, jnp.float32), shape, method="linear"))


def _display(images: np.ndarray) -> np.ndarray:
    """Images for imshow in [0, 1]: uint8 divided by 255; float images that leave [0, 1] (after a
    normalization) min-max scaled per image; single-channel images lose the channel axis."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if images.max() > 1.0 or images.min() < 0.0:
        low = images.min(axis=(1, 2, 3), keepdims=True)
        high = images.max(axis=(1, 2, 3), keepdims=True)
        images = (images - low) / np.maximum(high - low, 1e-12)
    if images.shape[-1] == 1:
        images = images[..., 0]
    return images


def _label(logits: np.ndarray, labels: Sequence[str] | None) -> str:
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
    k = int(np.argmax(probs))
    name = labels[k] if labels is not None and k < len(labels) else f"class {k}"
    return f"{name} (p={probs[k]:.3g})"


def write_explanation_plots(
    explanation: ViTExplanation,
    display_images: np.ndarray,
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Writes rollout.png, heads.png and (when there are parts to show) parts.png.

    Args:
      explanation: from `explain_arrays`.
      display_images: [B, H, W] or [B, H, W, C] images in [0, 1] to draw under the heatmaps, in
        the model input's pixel grid.
      out_dir: created if missing.
      labels: class names by index for the titles.

    Returns:
      the written paths.
    """
    ex = explanation
    maps = {
        "titles": [_label(ex.logits[i], labels) for i in range(ex.logits.shape[0])],
        "relevance_px": upsample_to_pixels(ex.relevance, ex.patch_hw),
        "heads_px": upsample_to_pixels(ex.head_maps, ex.patch_hw),
        "parts": ex.parts,
        "top_parts": ex.top_parts,
        "grid_hw": ex.grid_hw,
        "patch_hw": ex.patch_hw,
    }
    return plot_explanations(maps, display_images, out_dir)


def explain_vit(
    model: ViT,
    params: Mapping[str, Any],
    images: Any,
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    *,
    top_k_parts: int | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    display_images: Any = None,
) -> list[Path]:
    """Explains a ViT of this codebase on a batch of images: writes the PNGs into `out_dir`.

    Args:
      model: an attn_jax ViT, e.g. `build_model(config.model)` of a training experiment.
      params: its parameters (bare, or variables {"params": ...}).
      images: float [B, H, W, C], preprocessed as the model expects.
      out_dir: where rollout.png, heads.png and parts.png go.
      labels: class names by index.
      top_k_parts: also mark the k patches of highest rollout relevance in parts.png.
      head_fusion: head fusion of the rollout.
      discard_ratio: fraction of the weakest fused weights the rollout discards.
      display_images: what to draw under the heatmaps, [B, H, W(, C)] in the input's pixel grid;
        default: `images` (min-max scaled per image where they leave [0, 1]).

    Returns:
      the written paths.
    """
    explanation = explain_arrays(
        model,
        params,
        images,
        head_fusion=head_fusion,
        discard_ratio=discard_ratio,
        top_k_parts=top_k_parts,
    )
    shown = _display(images if display_images is None else display_images)
    if shown.shape[:3] != tuple(np.shape(images))[:3]:
        raise ExplainError(
            f"display_images {tuple(np.shape(display_images))} do not match the model inputs "
            f"{tuple(np.shape(images))} in batch, height and width"
        )
    return write_explanation_plots(explanation, shown, out_dir, labels)


def explain_classification(
    pretrained: Any,
    image: Any,
    out_dir: str | Path,
    *,
    top_k_parts: int | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> list[Path]:
    """Explains a converted ViT checkpoint's prediction on one image (`predict classify --explain`).

    Args:
      pretrained: an `attn_jax.pretrained.Pretrained` whose model is a ViT.
      image: a PIL image, a uint8 [H, W, 3] array or an image file path.
      out_dir: where rollout.png, heads.png and parts.png go.
      top_k_parts: also mark the k patches of highest rollout relevance.
      head_fusion: head fusion of the rollout.
      discard_ratio: fraction of the weakest fused weights the rollout discards.

    Returns:
      the written paths.
    """
    if isinstance(image, str | Path):
        from PIL import Image

        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except OSError as e:
            raise ExplainError(
                f"cannot read image {image} ({e}); pass a JPEG or PNG file"
            ) from None
    inputs = pretrained.preprocess(image)
    return explain_vit(
        pretrained.model,
        pretrained.variables,
        inputs["image"],
        out_dir,
        pretrained.labels,
        top_k_parts=top_k_parts,
        head_fusion=head_fusion,
        discard_ratio=discard_ratio,
    )


def restore_workdir(
    workdir: str | Path, *, step: int | None = None, best: bool = False
) -> tuple[Any, Any, Any]:
    """The model, parameters and config of a `launch.py train` workdir's checkpoint.

    Args:
      workdir: the training run's directory (config.json, checkpoints/).
      step: a kept step (default: the latest).
      best: the best checkpoint by the config's target metric instead.

    Returns:
      (model, params, config).
    """
    from attn_jax import config as config_lib
    from attn_jax.train import loop
    from attn_jax.train.checkpoint import restore_for_evaluation
    from attn_jax.train.optim import make_optimizer

    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise ExplainError(f"{workdir} has no config.json; pass the workdir of a training run")
    config = config_lib.load_json(workdir / "config.json")
    exp = loop.build_experiment(config)
    # The train state's structure (optimizer state included) is what the checkpoint holds; it is
    # restored onto this one device, whatever mesh the run trained on.
    tx, _ = make_optimizer(config.optim, exp.total_steps)
    init_fn = loop.make_init_fn(exp.model, tx, exp.init_inputs())
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        jax.eval_shape(init_fn, jax.random.key(0)),
    )
    _, params, _ = restore_for_evaluation(workdir, config, abstract, step=step, best=best)
    return exp.model, params, config


def explain_workdir(
    workdir: str | Path,
    out_dir: str | Path | None = None,
    *,
    num_images: int = 4,
    step: int | None = None,
    best: bool = False,
    top_k_parts: int | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> list[Path]:
    """Explains a trained ViT of this codebase on the first images of its eval split.

    Args:
      workdir: a `launch.py train` run of a ViT experiment (e.g. vit_digits).
      out_dir: default `<workdir>/plots/explain`.
      num_images: how many eval images (one row each).
      step: checkpoint step (default: the latest); `best`: the best checkpoint instead.
      top_k_parts, head_fusion, discard_ratio: as in `explain_vit`.

    Returns:
      the written paths.
    """
    from attn_jax import data as data_lib

    model, params, config = restore_workdir(workdir, step=step, best=best)
    if not isinstance(model, ViT):
        raise ExplainError(
            f"{workdir} trained a {type(model).__name__}, not a ViT; attention explanations "
            f"need a ViT experiment such as experiments/vit_digits.py"
        )
    if num_images < 1:
        raise ExplainError(f"num_images must be at least 1, got {num_images}")
    batches = data_lib.make_dataset(
        config.data,
        config.data.eval_split,
        train=False,
        global_batch_size=num_images,
        seed=config.seed,
    )
    images = np.asarray(next(iter(batches))["image"])
    out_dir = Path(workdir) / "plots" / "explain" if out_dir is None else Path(out_dir)
    return explain_vit(
        model,
        params,
        images,
        out_dir,
        top_k_parts=top_k_parts,
        head_fusion=head_fusion,
        discard_ratio=discard_ratio,
    )


__all__ = [
    "ExplainError",
    "ViTExplanation",
    "explain_arrays",
    "explain_classification",
    "explain_vit",
    "explain_workdir",
    "restore_workdir",
    "stack_attention",
    "upsample_to_pixels",
    "write_explanation_plots",
]
