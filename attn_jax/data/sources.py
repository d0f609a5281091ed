"""Where examples come from: preparing embedded datasets, opening tfds array_record data sources,
and reading batches of examples from them (or from an in-memory copy of a small split).

Embedded datasets prepare themselves on first use. Parallel runs of a sweep may start together,
so preparation holds an exclusive lock file in the data dir; tfds writes into a temporary folder
and renames it into place, so readers never see half a dataset. Catalog datasets are never
downloaded here: a missing one is a `DatasetNotFoundError` naming the command that prepares it.

Reading needs no TensorFlow: tfds' array_record data sources parse the tf.Example protos with
protobuf and decode `Image` features with PIL. For ImageNet we ask tfds for the encoded bytes
(`tfds.decode.SkipDecoding`) and decode them ourselves, at reduced size where the crop allows.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import functools
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core.utils import tqdm_utils

from attn_jax.data.color_digits import color_digits_dataset_builder
from attn_jax.data.dates import dates_dataset_builder
from attn_jax.data.digit_captions import digit_captions_dataset_builder
from attn_jax.data.digit_scenes import digit_scenes_dataset_builder
from attn_jax.data.distorted_digits import distorted_digits_dataset_builder
from attn_jax.data.errors import DataConfigError, DatasetNotFoundError
from attn_jax.data.registry import DatasetEntry, get_entry
from attn_jax.data.reverse import reverse_dataset_builder
from attn_jax.data.sklearn_digits import sklearn_digits_dataset_builder
from attn_jax.data.translated_digits import translated_digits_dataset_builder

_EMBEDDED_BUILDERS = {  # by tfds name: several registry entries may read one builder
    "sklearn_digits": sklearn_digits_dataset_builder.Builder,
    "digit_scenes": digit_scenes_dataset_builder.Builder,
    "digit_captions": digit_captions_dataset_builder.Builder,  # configs: "name/config"
    "color_digits": color_digits_dataset_builder.Builder,  # configs digits/scenes/digits_random
    "translated_digits": translated_digits_dataset_builder.Builder,
    "distorted_digits": distorted_digits_dataset_builder.Builder,
    "dates": dates_dataset_builder.Builder,
    "reverse": reverse_dataset_builder.Builder,
}
# Catalog builders that tfds does not register on import (its translate datasets).
_CATALOG_MODULES = {"wmt14_translate/de-en": "tensorflow_datasets.translate.wmt14"}


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (tfds' own default)."""
    return os.path.expanduser(os.fspath(data_dir or tfds_constants.get_default_data_dir()))


# -- splits ---------------------------------------------------------------------------------------
def split_ranges(entry: DatasetEntry, split: str) -> list[tuple[str, int, int]]:
    """[(split name, start, stop)] of a tfds split expression such as "train" or "train[:90%]".

    Counts come from the registry, so this needs no data.

    Raises:
        DataConfigError: unknown split name or a slice outside the split.
    """
    infos = {
        name: tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
        for name, n in entry.splits.items()
    }
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    except (ValueError, AssertionError) as e:
        reason = str(e).splitlines()[0].rstrip(".") if str(e) else type(e).__name__
        raise DataConfigError(
            f"cannot read split {split!r} of {entry.name}: {reason} (its splits: "
            f"{', '.join(entry.splits)}; tfds slices such as "
            f"'{next(iter(entry.splits))}[:90%]' work too)"
        ) from None
    return [
        (i.splitname, i.from_ or 0, entry.splits[i.splitname] if i.to is None else i.to)
        for i in instructions
    ]


def split_size(entry: DatasetEntry, split: str) -> int:
    return sum(stop - start for _, start, stop in split_ranges(entry, split))


# -- preparing ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_tfds():
    """Silences tfds' progress bars and banners (on stdout, where the launcher prints results) and
    its absl warnings about folders that do not exist yet (we report missing data ourselves)."""
    previous_bar = getattr(tqdm_utils, "_active", True)  # private: tfds has no getter for it
    absl_logger = logging.getLogger("absl")
    previous_level = absl_logger.level
    tfds.display_progress_bar(False)
    absl_logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        absl_logger.setLevel(previous_level)
        tfds.display_progress_bar(previous_bar)


def _embedded_builder(entry: DatasetEntry, **kwargs: Any) -> tfds.core.DatasetBuilder:
    """The builder of an embedded dataset; a tfds name "builder/config" selects a config."""
    name, _, config = entry.tfds_name.partition("/")
    return _EMBEDDED_BUILDERS[name](config=config or None, **kwargs)


def _embedded_dir(entry: DatasetEntry, data_dir: str) -> Path:
    """The versioned folder of an embedded dataset; tfds renames it into place when complete."""
    version = _EMBEDDED_BUILDERS[entry.tfds_name.partition("/")[0]].VERSION
    return Path(data_dir) / entry.tfds_name / str(version)


def _catalog_state(entry: DatasetEntry, data_dir: str) -> str:
    """'array_record', 'other_format' (prepared, but not for random access) or 'missing'."""
    builder_dir = Path(data_dir) / entry.tfds_name
    if not builder_dir.is_dir():
        return "missing"
    found = "missing"
    file_prefix = entry.tfds_name.split("/")[0]  # "wmt14_translate/de-en" -> wmt14_translate-*
    for info in builder_dir.glob("**/dataset_info.json"):
        if any(info.parent.glob(f"{file_prefix}-*.array_record-*")):
            return "array_record"
        found = "other_format"
    return found


def _prepared_version(entry: DatasetEntry, data_dir: str) -> str | None:
    """The newest version of a catalog dataset prepared as array_record in `data_dir`."""
    file_prefix = entry.tfds_name.split("/")[0]
    versions = []
    for info in (Path(data_dir) / entry.tfds_name).glob("*/dataset_info.json"):
        if tfds.core.Version.is_valid(info.parent.name) and any(
            info.parent.glob(f"{file_prefix}-*.array_record-*")
        ):
            versions.append(tfds.core.Version(info.parent.name))
    return str(max(versions)) if versions else None


def is_prepared(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether `name` is in `data_dir` ready to read (as array_record), looking only at files."""
    entry = get_entry(name)
    data_dir = resolve_data_dir(data_dir)
    if entry.embedded:
        return (_embedded_dir(entry, data_dir) / "dataset_info.json").is_file()
    return _catalog_state(entry, data_dir) == "array_record"


def _not_found(entry: DatasetEntry, data_dir: str) -> DatasetNotFoundError:
    problem = (
        "is prepared there but not as array_record (random access needs it)"
        if _catalog_state(entry, data_dir) == "other_format"
        else "is not prepared"
    )
    note = entry.prepare_note.format(data_dir=data_dir)
    return DatasetNotFoundError(
        f"dataset {entry.name} {problem} in data dir {data_dir}; prepare it with "
        f"`tfds build {entry.tfds_name} --data_dir={data_dir} --file_format=array_record` "
        f"(the build needs tensorflow installed, reading does not{note}), or set "
        "--config.data.data_dir to where it is"
    )


def prepare(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Makes sure `name` is ready to read from `data_dir`; returns its folder.

    Embedded datasets are built once, as array_record, safely when several processes start at
    the same time. Catalog datasets are only checked: they are prepared with `tfds build`.

    Raises:
        DatasetNotFoundError: a catalog dataset that is not prepared as array_record.
        DataConfigError: an unknown dataset name.
    """
    entry = get_entry(name)
    data_dir = resolve_data_dir(data_dir)
    if not entry.embedded:
        if _catalog_state(entry, data_dir) != "array_record":
            raise _not_found(entry, data_dir)
        return Path(data_dir) / entry.tfds_name
    version_dir = _embedded_dir(entry, data_dir)
    if is_prepared(name, data_dir):
        return version_dir
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    lock_name = f".{entry.tfds_name.replace('/', '-')}.prepare.lock"
    with open(Path(data_dir) / lock_name, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not is_prepared(name, data_dir):  # another process may have built it meanwhile
            print(f"preparing {entry.tfds_name} in {version_dir}", file=sys.stderr)
            with _quiet_tfds():
                builder = _embedded_builder(entry, data_dir=data_dir, file_format="array_record")
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(
                        compute_stats=tfds.download.ComputeStatsMode.SKIP
                    )
                )
    return version_dir


# -- opening and reading --------------------------------------------------------------------------
def open_source(entry: DatasetEntry, split: str, data_dir: str) -> Sequence[dict[str, Any]]:
    """The tfds random-access data source of `split` (a split expression), preparing embedded
    datasets first. Examples are dicts of numpy values; with `entry.decode_with_pil` the image is
    the encoded bytes."""
    split_ranges(entry, split)  # a clear error for bad splits before touching any file
    if entry.embedded:
        prepare(entry.name, data_dir)
        builder = _embedded_builder(entry, data_dir=data_dir)
        return builder.as_data_source(split=split)
    decoders = {"image": tfds.decode.SkipDecoding()} if entry.decode_with_pil else None
    if entry.tfds_name in _CATALOG_MODULES:
        importlib.import_module(_CATALOG_MODULES[entry.tfds_name])
    name = entry.tfds_name
    version = _prepared_version(entry, data_dir)
    if version is not None:
        # With a version, tfds builds the reader from the prepared files; without, from the
        # builder's code, and some builders' code (coco's `_info`) needs TensorFlow.
        name = f"{name}:{version}"
    try:
        with _quiet_tfds():
            return tfds.data_source(
                name, split=split, data_dir=data_dir, download=False, decoders=decoders
            )
    except (RuntimeError, AssertionError, OSError, ImportError) as e:
        # tfds reports a missing dataset as an unsupported file format (a RuntimeError subclass)
        # or a missing file, hence our own message; without prepared files it falls back to the
        # builder's code, which may need TensorFlow (coco).
        if isinstance(e, ImportError) and version is not None:
            raise
        raise _not_found(entry, data_dir) from e


def read_examples(source: Sequence[dict[str, Any]], indices: np.ndarray) -> list[dict[str, Any]]:
    """The examples at `indices`, in a batched read where the source supports one."""
    keys = [int(i) for i in indices]
    if not keys:
        return []
    if hasattr(source, "__getitems__"):
        return list(source.__getitems__(keys))
    return [source[k] for k in keys]


def stack_examples(examples: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, H, W, C], int32 labels [N]) of fixed-size decoded examples."""
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], np.int32)
    return images, labels


@functools.lru_cache(maxsize=8)
def load_split_arrays(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole split in memory as (uint8 images [N, H, W, C], int32 labels [N]), read-only.

    Cached per process: evaluation rebuilds its pipeline every time, and must not re-read.
    """
    entry = get_entry(name)
    if entry.image_shape is None:
        raise DataConfigError(
            f"cannot cache {name} in memory: its images vary in size; set --config.data.cache=false"
        )
    source = open_source(entry, split, data_dir)
    chunks = [np.arange(i, min(i + 1024, len(source))) for i in range(0, len(source), 1024)]
    # Decoding (PNG for cifar10) dominates; PIL and zlib release the GIL, so threads help.
    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(lambda idx: stack_examples(read_examples(source, idx)), chunks))
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, *entry.image_shape))
    labels = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0,), np.int32)
    images = images.astype(np.uint8, copy=False)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
