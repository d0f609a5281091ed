"""timm Swin Transformer checkpoints as attn_jax Swin.

Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows" (ICCV 2021). The model is attn_jax/models/swin.py; this module maps a timm
(or official Microsoft repository) state dict onto it.

The details where a port can silently differ were checked against timm 1.x and need no model
change: the patch-merging concatenation x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]
(timm's reshape-permute reproduces the official order), the relative position index
(dy + M - 1) * (2M - 1) + (dx + M - 1) with offsets query minus key, the shifted-window mask
(timm adds -100 to the logits, we mask: exp(-100) is below float32's resolution next to the kept
terms), LayerNorm eps 1e-5 everywhere, exact erf GELU, q scaled by Dh^-1/2, no shift in a stage
whose map is no larger than the window, final LayerNorm then average pooling.

The architecture is read from the tensors themselves (embed dim and patch size from the patch
Conv, depths from the block indices, heads from the bias tables, window from their (2M - 1)^2 rows,
MLP ratio from fc1, classes from the head), so a bare state dict converts too; a timm hub
directory's config.json adds the input size, the preprocessing (`pretrained_cfg`) and label names.

Tensor names: timm 1.x (`layers.S.downsample` at the start of stages 1.., `head.fc`) and the
official repository / timm < 0.9 (`layers.S.downsample` at the end of stages 0..2, `head`, with
`relative_position_index` and `attn_mask` buffers, which are recomputed and ignored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.pretrained.checkpoint_files import (
    Pretrained,
    PretrainedError,
    TensorSource,
    read_config,
    read_state_dict,
    weights_file,
)

# timm's default_cfg of the ImageNet Swin checkpoints, for a bare state dict.
DEFAULT_PRETRAINED_CFG = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "crop_pct": 0.9,
    "crop_mode": "center",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")
_OFFICIAL_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")
_BUFFERS = ("relative_position_index", "attn_mask", "num_batches_tracked")


def canonical_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors under timm 1.x names, whichever of the two namings they came with.

    The official naming puts stage S's patch merging after its blocks as `layers.S.downsample`;
    timm 1.x puts the same layer before stage S + 1's blocks as `layers.{S+1}.downsample`. A
    `layers.0.downsample` exists only in the official naming, which decides it.
    """
    tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    official = any(k.startswith("layers.0.downsample.") for k in tensors)
    out = {}
    for name, value in tensors.items():
        if official:
            name = _OFFICIAL_DOWNSAMPLE.sub(lambda m: f"layers.{int(m[1]) + 1}.downsample.", name)
            if name.startswith("head.") and not name.startswith("head.fc."):
                name = "head.fc." + name.removeprefix("head.")
        out[name] = value
    return out


def swin_kwargs_from_tensors(tensors: Mapping[str, np.ndarray], where: str) -> dict[str, Any]:
    """attn_jax Swin fields read off a (canonically named) timm Swin state dict.

    Raises:
      PretrainedError: tensors that are not a Swin's (no patch embedding or no blocks).
    """
    proj = tensors.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        raise PretrainedError(
            f"{where} holds no patch_embed.proj.weight [C, 3, P, P]; it is not a timm Swin "
            "state dict (convert Swin checkpoints only)"
        )
    depths: dict[int, int] = {}
    for name in tensors:
        match = _BLOCK.match(name)
        if match:
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths or sorted(depths) != list(range(len(depths))):
        raise PretrainedError(
            f"{where} has no consecutive layers.S.blocks.B tensors; it is not a timm Swin "
            "state dict"
        )
    num_heads, window = [], None
    for stage in range(len(depths)):
        table = tensors.get(f"layers.{stage}.blocks.0.attn.relative_position_bias_table")
        if table is None:
            raise PretrainedError(
                f"{where} lacks layers.{stage}.blocks.0.attn.relative_position_bias_table"
            )
        side = int(round(np.sqrt(table.shape[0])))
        if side * side != table.shape[0] or side % 2 == 0:
            raise PretrainedError(
                f"{where}: a relative position bias table of {table.shape[0]} rows is not "
                "(2M - 1)^2 for a window M"
            )
        if window is not None and (side + 1) // 2 != window:
            raise PretrainedError(f"{where}: stages with different windows are not supported")
        window = (side + 1) // 2
        num_heads.append(int(table.shape[1]))
    embed_dim = int(proj.shape[0])
    fc1 = tensors.get("layers.0.blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / embed_dim if fc1 is not None else 4.0
    head = tensors.get("head.fc.weight")
    return dict(
        num_classes=int(head.shape[0]) if head is not None else 0,  # 0: no head
        patch_size=int(proj.shape[2]),
        embed_dim=embed_dim,
        depths=tuple(depths[s] for s in range(len(depths))),
        num_heads=tuple(num_heads),
        window=int(window),
        mlp_ratio=float(mlp_ratio),
        drop_path_rate=0.0,
    )


def convert_swin_tensors(
    tensors: Mapping[str, np.ndarray], kwargs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """{"params": ...} of our Swin from a canonically named timm Swin state dict.

    Raises:
      PretrainedError: one line naming missing, misshaped and unused tensors.
    """
    src = TensorSource(tensors, where, ignore=_BUFFERS)
    c0, p, m = kwargs["embed_dim"], kwargs["patch_size"], kwargs["window"]

    def linear(name: str, n_in: int, n_out: int, bias: bool = True) -> dict[str, Any]:
        w = src.take(f"{name}.weight", (n_out, n_in))
        out = {"kernel": None if w is None else np.ascontiguousarray(w.T)}
        if bias:
            out["bias"] = src.take(f"{name}.bias", (n_out,))
        return out

    def norm(name: str, c: int) -> dict[str, Any]:
        return {"scale": src.take(f"{name}.weight", (c,)), "bias": src.take(f"{name}.bias", (c,))}

    conv = src.take("patch_embed.proj.weight", (c0, 3, p, p))
    params: dict[str, Any] = {
        "patch_embed": {
            "kernel": None if conv is None else np.transpose(conv, (2, 3, 1, 0)),
            "bias": src.take("patch_embed.proj.bias", (c0,)),
        },
        "patch_norm": norm("patch_embed.norm", c0),
    }
    hidden = int(round(c0 * kwargs["mlp_ratio"]))
    c = c0
    for stage, (depth, heads) in enumerate(zip(kwargs["depths"], kwargs["num_heads"], strict=True)):
        if stage:
            params[f"merge{stage + 1}"] = {
                "norm": norm(f"layers.{stage}.downsample.norm", 4 * c),
                "reduction": linear(f"layers.{stage}.downsample.reduction", 4 * c, 2 * c, False),
            }
            c, hidden = 2 * c, 2 * hidden
        dh = c // heads
        for i in range(depth):
            b = f"layers.{stage}.blocks.{i}"
            qkv = linear(f"{b}.attn.qkv", c, 3 * c)
            proj = linear(f"{b}.attn.proj", c, c)
            params[f"stage{stage + 1}_block{i}"] = {
                "norm1": norm(f"{b}.norm1", c),
                "attn": {
                    "relative_position_bias_table": src.take(
                        f"{b}.attn.relative_position_bias_table", ((2 * m - 1) ** 2, heads)
                    ),
                    # torch's qkv output is ordered (3, heads, Dh), as our DenseGeneral features.
                    "qkv": {
                        "kernel": _reshape(qkv["kernel"], (c, 3, heads, dh)),
                        "bias": _reshape(qkv["bias"], (3, heads, dh)),
                    },
                    "proj": {
                        "kernel": _reshape(proj["kernel"], (heads, dh, c)),
                        "bias": proj["bias"],
                    },
                },
                "norm2": norm(f"{b}.norm2", c),
                "mlp": {
                    "fc1": linear(f"{b}.mlp.fc1", c, hidden),
                    "fc2": linear(f"{b}.mlp.fc2", hidden, c),
                },
            }
    params["norm"] = norm("norm", c)
    if kwargs["num_classes"]:
        params["head"] = linear("head.fc", c, kwargs["num_classes"])
    src.check()
    return {"params": params}


def _reshape(x: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if x is None else x.reshape(shape)


def _labels(config: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """timm's label_names (list, or {index: name}), described by label_descriptions if given."""
    names = config.get("label_names")
    if isinstance(names, Mapping):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (KeyError, ValueError):
            return None
    if not isinstance(names, list) or len(names) != num_classes:
        return None
    descriptions = config.get("label_descriptions") or {}
    return [str(descriptions.get(n, n)) for n in names]


def load_timm_swin(path: str | Path) -> Pretrained:
    """A timm Swin checkpoint as a kind "classify" `Pretrained`.

    Args:
      path: a timm hub-style directory (config.json with "architecture" and "pretrained_cfg",
        plus model.safetensors or pytorch_model.bin), or a bare state dict file (.safetensors,
        .pth, .bin), which gets timm's ImageNet Swin preprocessing at 224 px.

    `extras["forward"]` is the jitted `(variables, image [B, H, W, 3]) -> logits [B, classes]`.

    Raises:
      PretrainedError: unreadable files, a config of another architecture, or tensors that are
        not a Swin's or do not fit together (named).
    """
    path = Path(path)
    config: dict[str, Any] = {}
    if path.is_dir():
        config = read_config(path)
        architecture = str(config.get("architecture", ""))
        if not architecture.startswith("swin"):
            raise PretrainedError(
                f"{path / 'config.json'}: architecture {architecture!r} is not a timm Swin "
                "(swin_*); pass a Swin checkpoint"
            )
        if architecture.startswith("swinv2"):
            raise PretrainedError(
                f"{path / 'config.json'}: {architecture} (Swin V2) is not supported; only Swin V1"
            )
        path = weights_file(path)
    return swin_from_tensors(read_state_dict(path), config, where=str(path))


def swin_from_tensors(
    tensors: Mapping[str, np.ndarray], config: Mapping[str, Any] | None = None, where: str = ""
) -> Pretrained:
    """`load_timm_swin` from a state dict (either naming, numpy arrays) and the hub config.json
    (None or {}: timm's ImageNet Swin preprocessing, no label names)."""
    import jax
    import jax.numpy as jnp

    from attn_jax.models.swin import Swin
    from attn_jax.pretrained.preprocess import from_timm_pretrained_cfg
    from attn_jax.pretrained.vit import classifier_forward

    config = dict(config or {})
    where = where or "state dict"
    tensors = canonical_names(tensors)
    kwargs = swin_kwargs_from_tensors(tensors, where)
    if not kwargs["num_classes"]:
        raise PretrainedError(
            f"{where} has no head.fc (a feature extractor); classification needs the classifier"
        )
    variables = convert_swin_tensors(tensors, kwargs, where)
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
    pretrained_cfg = {**DEFAULT_PRETRAINED_CFG, **(config.get("pretrained_cfg") or {})}
    model = Swin(**kwargs)
    input_size = tuple(int(v) for v in pretrained_cfg["input_size"][1:])
    return Pretrained(
        model=model,
        variables=variables,
        preprocess=from_timm_pretrained_cfg(pretrained_cfg),
        kind="classify",
        labels=_labels(config, kwargs["num_classes"]),
        config=config,
        extras={"forward": classifier_forward(model), "image_size": input_size},
    )


__all__ = [
    "DEFAULT_PRETRAINED_CFG",
    "canonical_names",
    "convert_swin_tensors",
    "load_timm_swin",
    "swin_from_tensors",
    "swin_kwargs_from_tensors",
]
