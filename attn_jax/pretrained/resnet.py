"""torchvision and timm ResNet state dicts as attn_jax ResNet variables.

He, Zhang, Ren, Sun 2016, "Deep Residual Learning for Image Recognition". The model is
attn_jax/models/resnet.py with `stem="imagenet"` and `padding="symmetric"`; torchvision's
`resnet18/34/50/101/152` and timm's plain `resnet*` share one layout, so one converter serves
both: `conv1`/`bn1` (7x7 stem), `layer{S}.{I}.conv{K}`/`bn{K}` (basic: K = 1, 2; bottleneck:
K = 1, 2, 3, the stride on the 3x3 convolution), `layer{S}.0.downsample.0/1` (the 1x1 projection
and its norm) and `fc` (the classifier, absent from a backbone). The architecture is read from the
tensors themselves (blocks per stage, bottleneck or basic, stem width, classes), so a state dict
needs no config.json.

Batch norms map onto either norm of ours that holds them: a trainable batch norm ("batch":
`weight`/`bias` -> params `scale`/`bias`, `running_mean`/`running_var` -> batch_stats
`mean`/`var`) or a frozen one ("frozen_batch": all four in batch_stats, DETR's backbone).
torch's `num_batches_tracked` has no counterpart and is dropped. Convolution kernels go from
torch's [O, I, kh, kw] to flax's [kh, kw, I, O], the classifier from [K, D] to [D, K].
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.pretrained.checkpoint_files import PretrainedError, TensorSource, read_state_dict

# Wrappers that training scripts leave in front of the names (DataParallel's "module.").
_PREFIXES = ("module.", "model.")
_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")


def canonical_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors without a wrapper prefix ("module.", "model.") common to all of them."""
    for prefix in _PREFIXES:
        if tensors and all(name.startswith(prefix) for name in tensors):
            return {name[len(prefix) :]: value for name, value in tensors.items()}
    return dict(tensors)


def is_resnet_state_dict(tensors: Mapping[str, np.ndarray]) -> bool:
    """Whether the names are those of a torchvision/timm ResNet (stem plus layer1)."""
    names = canonical_names(tensors)
    return "conv1.weight" in names and "layer1.0.conv1.weight" in names


def resnet_kwargs_from_tensors(tensors: Mapping[str, np.ndarray], where: str) -> dict[str, Any]:
    """attn_jax ResNet constructor kwargs of a ResNet state dict.

    Args:
      tensors: {name: array} of a torchvision or timm ResNet.
      where: what the tensors are (a path), for error messages.

    Returns:
      kwargs of `attn_jax.models.resnet.ResNet` (block, stage_sizes, width, stem, num_classes,
      norm "batch", padding "symmetric").

    Raises:
      PretrainedError: names that are not a plain ResNet's.
    """
    names = canonical_names(tensors)
    if not is_resnet_state_dict(names):
        raise PretrainedError(
            f"{where} is not a torchvision/timm ResNet state dict (no conv1.weight and "
            "layer1.0.conv1.weight); pass the .safetensors/.pth of a plain resnet18..152"
        )
    blocks: dict[int, set[int]] = {}
    for name in names:
        match = _BLOCK.match(name)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)) or any(
        blocks[s] != set(range(len(blocks[s]))) for s in stages
    ):
        raise PretrainedError(
            f"{where}: the ResNet stages {stages} (blocks {[sorted(blocks[s]) for s in stages]}) "
            "are not numbered 1..N with blocks 0..n-1; is this a ResNet state dict?"
        )
    fc = names.get("fc.weight")
    return dict(
        block="bottleneck" if "layer1.0.conv3.weight" in names else "basic",
        stage_sizes=tuple(len(blocks[s]) for s in stages),
        width=int(names["conv1.weight"].shape[0]),
        stem="imagenet",
        num_classes=0 if fc is None else int(fc.shape[0]),
        norm="batch",
        padding="symmetric",
    )


def _conv(source: TensorSource, name: str, shape_ohwi: tuple[int, int, int, int]) -> Any:
    """torch's [O, I, kh, kw] kernel -> flax's [kh, kw, I, O] (None if absent or misshaped)."""
    o, kh, kw, i = shape_ohwi
    weight = source.take(f"{name}.weight", (o, i, kh, kw))
    return None if weight is None else np.transpose(weight, (2, 3, 1, 0))


def _batch_norm(
    source: TensorSource, name: str, width: int, frozen: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, batch_stats) of one torch BatchNorm2d, in the layout of `frozen` or not."""
    values = {
        ours: source.take(f"{name}.{theirs}", (width,))
        for ours, theirs in (
            ("scale", "weight"),
            ("bias", "bias"),
            ("mean", "running_mean"),
            ("var", "running_var"),
        )
    }
    if frozen:
        return {}, values
    return {"scale": values["scale"], "bias": values["bias"]}, {
        "mean": values["mean"],
        "var": values["var"],
    }


def convert_resnet_backbone(
    source: TensorSource,
    prefix: str,
    *,
    block: str,
    stage_sizes: tuple[int, ...],
    width: int = 64,
    frozen: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stem and stages of a torch ResNet under `prefix` as our (params, batch_stats).

    Args:
      source: the checkpoint's tensors; what is taken is recorded there.
      prefix: the names' prefix ("" for a torchvision state dict, DETR's
        "model.backbone.conv_encoder.model").
      block: "basic" or "bottleneck".
      stage_sizes: blocks per stage.
      width: the stem's and stage 1's width.
      frozen: the layout of a frozen batch norm (all four vectors in batch_stats) rather than a
        trainable one.

    Returns:
      (params, batch_stats) of the ResNet module without its head, numpy arrays; a missing or
      misshaped tensor leaves None in its place and is recorded in `source`.
    """
    at = f"{prefix}." if prefix else ""
    bottleneck = block == "bottleneck"
    params: dict[str, Any] = {
        "stem_conv": {"kernel": _conv(source, f"{at}conv1", (width, 7, 7, 3))}
    }
    stats: dict[str, Any] = {}

    def norm(tree_params: dict, tree_stats: dict, ours: str, theirs: str, channels: int) -> None:
        p, s = _batch_norm(source, f"{at}{theirs}", channels, frozen)
        if p:
            tree_params[ours] = p
        tree_stats[ours] = s

    norm(params, stats, "stem_norm", "bn1", width)
    channels = width
    for s, num_blocks in enumerate(stage_sizes, start=1):
        inner = width * 2 ** (s - 1)
        out_channels = 4 * inner if bottleneck else inner
        for i in range(num_blocks):
            theirs = f"layer{s}.{i}"
            if bottleneck:
                convs = [(inner, 1, channels), (inner, 3, inner), (out_channels, 1, inner)]
            else:
                convs = [(inner, 3, channels), (inner, 3, inner)]
            block_params: dict[str, Any] = {}
            block_stats: dict[str, Any] = {}
            for k, (o, size, i_ch) in enumerate(convs, start=1):
                block_params[f"conv{k}"] = {
                    "kernel": _conv(source, f"{at}{theirs}.conv{k}", (o, size, size, i_ch))
                }
                norm(block_params, block_stats, f"norm{k}", f"{theirs}.bn{k}", o)
            # Our block projects its shortcut exactly where torch's has a downsample.
            if i == 0 and (channels != out_channels or s > 1):
                block_params["shortcut_conv"] = {
                    "kernel": _conv(
                        source, f"{at}{theirs}.downsample.0", (out_channels, 1, 1, channels)
                    )
                }
                norm(
                    block_params,
                    block_stats,
                    "shortcut_norm",
                    f"{theirs}.downsample.1",
                    out_channels,
                )
            params[f"stage{s}_block{i}"] = block_params
            stats[f"stage{s}_block{i}"] = block_stats
            channels = out_channels
    return params, stats


def convert_resnet_tensors(
    tensors: Mapping[str, np.ndarray], where: str, *, frozen: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A torchvision/timm ResNet state dict as (ResNet kwargs, variables).

    Args:
      tensors: {name: array}.
      where: what the tensors are (a path), for error messages.
      frozen: put the batch norms in the layout of `norm="frozen_batch"` (kwargs then say so).

    Returns:
      (kwargs of `ResNet`, {"params": ..., "batch_stats": ...} as numpy arrays); the classifier
      `fc` becomes `head` where the state dict has one.

    Raises:
      PretrainedError: not a ResNet, or missing, misshaped or unused tensors, in one line.
    """
    names = canonical_names(tensors)
    kwargs = resnet_kwargs_from_tensors(names, where)
    source = TensorSource(names, where, ignore=("num_batches_tracked",))
    params, stats = convert_resnet_backbone(
        source,
        "",
        block=kwargs["block"],
        stage_sizes=kwargs["stage_sizes"],
        width=kwargs["width"],
        frozen=frozen,
    )
    if kwargs["num_classes"]:
        last = kwargs["width"] * 2 ** (len(kwargs["stage_sizes"]) - 1)
        last *= 4 if kwargs["block"] == "bottleneck" else 1
        weight = source.take("fc.weight", (kwargs["num_classes"], last))
        bias = source.take("fc.bias", (kwargs["num_classes"],))
        params["head"] = {"kernel": None if weight is None else weight.T, "bias": bias}
    source.check()
    if frozen:
        kwargs["norm"] = "frozen_batch"
    return kwargs, {"params": params, "batch_stats": stats}


def load_resnet_variables(path: str | Path, *, frozen: bool = False) -> dict[str, Any]:
    """The variables of a ResNet state dict file (.safetensors, .pth, .bin) or a timm directory
    holding one; see `convert_resnet_tensors`.

    Raises:
      PretrainedError: an unreadable file or a state dict that is not a plain ResNet's.
    """
    path = Path(path)
    tensors = read_state_dict(path)
    return convert_resnet_tensors(tensors, str(path), frozen=frozen)[1]


__all__ = [
    "canonical_names",
    "convert_resnet_backbone",
    "convert_resnet_tensors",
    "is_resnet_state_dict",
    "load_resnet_variables",
    "resnet_kwargs_from_tensors",
]
