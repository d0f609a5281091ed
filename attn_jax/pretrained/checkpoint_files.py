"""Reading reference checkpoints safely, and assigning their tensors to our parameter trees.

A Hugging Face style directory holds `config.json` and `model.safetensors` (or `pytorch_model.bin`,
or shards listed by `model.safetensors.index.json` / `pytorch_model.bin.index.json`); a timm
checkpoint is one `.safetensors`, `.pth` or `.bin` file. Reading never unpickles arbitrary objects:
safetensors first, else `torch.load(..., weights_only=True)`, which only rebuilds tensors and plain
containers (torch is needed for that path only).

Safetensors files are parsed here rather than by `safetensors.numpy`, which has no bfloat16 (the
dtype most recent checkpoints are published in). The format is an 8-byte little-endian header
length, a JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}} (plus an optional
"__metadata__"), then the tensors' bytes, offsets counted from the end of the header. Reading it
ourselves also lets a truncated download be named as such. Floating tensors narrower than 32 bits
(BF16, F16, F8) are widened to float32, which represents them exactly.

Converters fill our trees through a `TensorSource`, which remembers which tensors were used, so a
conversion that misses or leaves over tensors, or meets a wrong shape, fails with one line that
names them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.errors import UserError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Sharded checkpoints: {"weight_map": {tensor name: shard file}} beside the shards.
SHARD_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class PretrainedError(UserError, ValueError):
    """A checkpoint directory or file that cannot be converted; one line naming problem and fix."""


@dataclasses.dataclass
class Pretrained:
    """A converted checkpoint: everything needed to run it on an image.

    Attributes:
      model: the Linen module (one of attn_jax.models).
      variables: {"params": ...} plus any other collections (DETR's frozen "batch_stats").
      preprocess: an `ImagePreprocessor` (preprocess.py): image (PIL image or uint8 [H, W, 3])
        -> the model's inputs for a batch of one, exactly as the checkpoint's reference processor
        computes them; its `batch(images)` gives the inputs of several.
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


def one_line(text: object, limit: int = 120) -> str:
    """A message (e.g. a library exception's) squeezed onto one line and cut to `limit` chars."""
    words = " ".join(str(text).split())
    return words if len(words) <= limit else words[: limit - 3] + "..."


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PretrainedError(
            f"{path} is not valid JSON ({one_line(e, 80)}); download it again"
        ) from None
    except OSError as e:
        raise PretrainedError(
            f"{path} cannot be read ({e.strerror or type(e).__name__}); check its permissions"
        ) from None


def read_config(directory: str | Path) -> dict[str, Any]:
    """The `config.json` of a Hugging Face style checkpoint directory.

    Raises:
      PretrainedError: no config.json, or one that is not a JSON object.
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise PretrainedError(
            f"{path} not found; --weights must be a directory holding config.json and "
            f"model.safetensors or pytorch_model.bin (e.g. from `huggingface-cli download`)"
        )
    config = _read_json_file(path)
    if not isinstance(config, dict):
        raise PretrainedError(
            f"{path} holds a JSON {type(config).__name__}, not an object of model settings; "
            "download the checkpoint's config.json again"
        )
    return config


def read_json(directory: str | Path, name: str) -> dict[str, Any] | None:
    """An optional JSON file of the directory (e.g. preprocessor_config.json); None if absent.

    Raises:
      PretrainedError: a file that is not a JSON object.
    """
    path = Path(directory) / name
    if not path.is_file():
        return None
    value = _read_json_file(path)
    if not isinstance(value, dict):
        raise PretrainedError(
            f"{path} holds a JSON {type(value).__name__}, not an object; download it again"
        )
    return value


def weights_file(directory: str | Path) -> Path:
    """model.safetensors, else pytorch_model.bin, else a shard index, of a checkpoint directory.

    Raises:
      PretrainedError: none of them is there.
    """
    directory = Path(directory)
    for name in WEIGHT_FILES + SHARD_INDEX_FILES:
        if (directory / name).is_file():
            return directory / name
    raise PretrainedError(
        f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)} (or a sharded "
        f"{SHARD_INDEX_FILES[0]}); download the checkpoint's weight file next to its config.json"
    )


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{name: float32/int numpy array} of a .safetensors file, a torch pickle (weights only) or a
    shard index (*.index.json).

    A directory is resolved with `weights_file`. bfloat16/float16 tensors are widened to float32.

    Raises:
      PretrainedError: a missing, truncated or unreadable file, in one line.
    """
    path = Path(path)
    if path.is_dir():
        path = weights_file(path)
    if not path.is_file():
        raise PretrainedError(f"checkpoint file {path} does not exist")
    if path.name.endswith(".index.json"):
        return _read_shards(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return _read_torch(path)


def _read_shards(index: Path) -> dict[str, np.ndarray]:
    content = _read_json_file(index)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PretrainedError(
            f'{index} has no "weight_map" from tensor names to shard files; download it again'
        )
    shards = sorted({str(v) for v in weight_map.values()})
    for name in shards:
        if Path(name).name != name or name.endswith(".index.json"):
            raise PretrainedError(f"{index} names the shard {name!r}, which is not a weight file")
    missing = [name for name in shards if not (index.parent / name).is_file()]
    if missing:
        raise PretrainedError(
            f"{index} lists {len(shards)} shards but {len(missing)} are not in {index.parent} "
            f"({_names(missing, 3)}); download every shard"
        )
    tensors: dict[str, np.ndarray] = {}
    for name in shards:
        tensors.update(read_state_dict(index.parent / name))
    return tensors


def _safetensors_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # installed with jax; numpy itself has no bfloat16 or float8

    return {
        "F64": np.dtype("<f8"),
        "F32": np.dtype("<f4"),
        "F16": np.dtype("<f2"),
        "BF16": np.dtype(ml_dtypes.bfloat16),
        "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
        "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
        "I64": np.dtype("<i8"),
        "I32": np.dtype("<i4"),
        "I16": np.dtype("<i2"),
        "I8": np.dtype("i1"),
        "U64": np.dtype("<u8"),
        "U32": np.dtype("<u4"),
        "U16": np.dtype("<u2"),
        "U8": np.dtype("u1"),
        "BOOL": np.dtype("?"),
    }


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} of a .safetensors file, floating tensors narrower than 32 bits widened to
    float32 (the module docstring describes the format).

    Raises:
      PretrainedError: a file that is truncated, is not safetensors, or holds a dtype we cannot
        represent; one line naming the file and the fix.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            return _parse_safetensors(f, size, path)
    except OSError as e:
        raise PretrainedError(
            f"{path} cannot be read ({e.strerror or type(e).__name__}); check the file"
        ) from None


def _parse_safetensors(f: Any, size: int, path: Path) -> dict[str, np.ndarray]:
    def corrupt(problem: str) -> PretrainedError:
        return PretrainedError(
            f"{path} is not a complete safetensors file: {problem}; download it again"
        )

    prefix = f.read(8)
    if len(prefix) < 8:
        raise corrupt(f"it has {size} bytes, fewer than the 8 of the header length")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > size - 8:
        raise corrupt(
            f"the header length field says {header_len:,} bytes but the file has {size:,} "
            "(truncated, or another kind of file)"
        )
    try:
        header = json.loads(f.read(header_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise corrupt("its header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    dtypes = _safetensors_dtypes()
    data_start = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape = str(info["dtype"]), tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise corrupt(
                f"the entry of {name!r} has no valid dtype, shape and data_offsets"
            ) from None
        if dtype_name not in dtypes:
            raise PretrainedError(
                f"{path}: tensor {name!r} has dtype {dtype_name}, which cannot be read; "
                f"supported: {', '.join(dtypes)}"
            )
        dtype = dtypes[dtype_name]
        if (
            min(shape, default=0) < 0
            or begin < 0
            or end - begin != math.prod(shape) * dtype.itemsize
        ):
            raise corrupt(f"the offsets {begin}..{end} of {name!r} do not fit its shape {shape}")
        if data_start + end > size:
            raise PretrainedError(
                f"{path} is truncated: tensor {name!r} ends at byte {data_start + end:,} but the "
                f"file has {size:,} bytes; download it again"
            )
        f.seek(data_start + begin)
        buffer = bytearray(end - begin)  # writable arrays, unlike bytes
        f.readinto(buffer)
        array = np.frombuffer(buffer, dtype).reshape(shape)
        tensors[name] = _widen(array.astype(dtype.newbyteorder("=")))
    return tensors


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
            f"{one_line(e, 100)}); it is corrupt or holds more than tensors"
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
    # float16 and ml_dtypes' bfloat16 / float8 (kind "V" to numpy) all fit float32 exactly.
    if x.dtype.kind in "fV" and x.dtype.itemsize < 4:
        return x.astype(np.float32)
    return x


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
        """The tensor `name`, checked against `shape` if given; None (and recorded) if absent or
        of another shape."""
        if name not in self.tensors:
            self.missing.append(name)
            return None
        value = self.tensors[name]
        self.used.add(name)
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.mismatched.append(f"{name} {tuple(value.shape)} != expected {tuple(shape)}")
            # As if absent: converters reshape what they take, and a wrong shape would crash
            # there before `check` could name it.
            return None
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
