"""Reading reference checkpoints safely, and assigning their tensors to our parameter trees.

A Hugging Face style directory holds `config.json` and `model.safetensors` (or `pytorch_model.bin`);
a timm checkpoint is one `.safetensors`, `.pth` or `.bin` file. Reading never unpickles arbitrary
objects: safetensors first, else `torch.load(..., weights_only=True)`, which only rebuilds tensors
and plain containers (torch is needed for that path only).

Converters fill our trees through a `TensorSource`, which remembers which tensors were used, so a
conversion that misses or leaves over tensors, or meets a wrong shape, fails with one line that
names them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.errors import UserError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class PretrainedError(UserError, ValueError):
    """A checkpoint directory or file that cannot be converted; one line naming problem and fix."""


@dataclasses.dataclass
class Pretrained:
    """A converted checkpoint: everything needed to run it on an image.

    Attributes:
      model: the Linen module (one of attn_jax.models).
      variables: {"params": ...} plus any other collections (DETR's frozen "batch_stats").
      preprocess: image (PIL image or uint8 [H, W, 3]) -> the model's inputs for a batch of one,
        exactly as the checkpoint's reference processor computes them (see preprocess.py).
      kind: "classify", "detect" or "contrastive".
      labels: class names by index (id2label), where the checkpoint has them.
      config: the source config.json.
      extras: family-specific pieces (e.g. CLIP's tokenizer).
    """

    model: Any
    variables: dict[str, Any]
    preprocess: Callable[[Any], dict[str, np.ndarray]]
    kind: str
    labels: list[str] | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


def _names(names: Iterable[str], limit: int = 6) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_config(directory: str | Path) -> dict[str, Any]:
    """The `config.json` of a Hugging Face style checkpoint directory."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise PretrainedError(
            f"{path} not found; --weights must be a directory holding config.json and "
            f"model.safetensors or pytorch_model.bin (e.g. from `huggingface-cli download`)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{path} is not valid JSON ({e}); download it again") from None


def read_json(directory: str | Path, name: str) -> dict[str, Any] | None:
    """An optional JSON file of the directory (e.g. preprocessor_config.json); None if absent."""
    path = Path(directory) / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{path} is not valid JSON ({e}); download it again") from None


def weights_file(directory: str | Path) -> Path:
    """model.safetensors, else pytorch_model.bin, of a checkpoint directory."""
    directory = Path(directory)
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise PretrainedError(
        f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}; download the "
        f"checkpoint's weight file next to its config.json"
    )


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{name: float32/int numpy array} of a .safetensors file or a torch pickle (weights only).

    A directory is resolved with `weights_file`. bfloat16/float16 tensors are widened to float32.
    """
    path = Path(path)
    if path.is_dir():
        path = weights_file(path)
    if not path.is_file():
        raise PretrainedError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable file is a corrupt download
            raise PretrainedError(
                f"{path} cannot be read as safetensors ({type(e).__name__}: {str(e)[:100]}); "
                "download it again"
            ) from None
        return {k: _widen(v) for k, v in tensors.items()}
    return _read_torch(path)


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise PretrainedError(
            f"{path} is a torch pickle and reading it needs torch (pip install torch); a "
            "model.safetensors file needs no torch"
        ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise PretrainedError(
            f"{path} cannot be loaded with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e)[:100]}); it is corrupt or holds more than tensors"
        ) from None
    # timm / training scripts nest the weights under one of these keys.
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise PretrainedError(f"{path} holds a {type(obj).__name__}, not a state dict")
    out = {}
    for name, tensor in obj.items():
        if hasattr(tensor, "detach"):
            if tensor.dtype in (torch.bfloat16, torch.float16):
                tensor = tensor.float()
            out[name] = tensor.detach().cpu().numpy()
    return out


def _widen(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype == np.float16 else x


class TensorSource:
    """The tensors of one checkpoint, handed out by name; remembers what was taken.

    Args:
      tensors: {name: array}.
      where: what the tensors are (a path), for error messages.
      ignore: name prefixes or suffixes that a conversion may legitimately leave over (buffers
        such as BatchNorm's num_batches_tracked, position ids).
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], where: str, ignore: Iterable[str] = ()):
        self.tensors = dict(tensors)
        self.where = where
        self.ignore = tuple(ignore)
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.mismatched: list[str] = []

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The tensor `name`, checked against `shape` if given; None (and recorded) if absent."""
        if name not in self.tensors:
            self.missing.append(name)
            return None
        value = self.tensors[name]
        self.used.add(name)
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.mismatched.append(f"{name} {tuple(value.shape)} != expected {tuple(shape)}")
        return value

    def check(self) -> None:
        """Raises one PretrainedError line if tensors were missing, misshaped or left over."""
        extra = [
            n
            for n in self.tensors
            if n not in self.used and not any(n.startswith(p) or n.endswith(p) for p in self.ignore)
        ]
        problems = []
        if self.missing:
            problems.append(f"missing {len(self.missing)}: {_names(self.missing)}")
        if self.mismatched:
            problems.append(f"wrong shape {len(self.mismatched)}: {_names(self.mismatched, 3)}")
        if extra:
            problems.append(f"unused {len(extra)}: {_names(extra)}")
        if problems:
            raise PretrainedError(
                f"{self.where} does not match the model its config.json describes ("
                + "; ".join(problems)
                + "); check that the directory holds the matching config.json and weights"
            )
