"""The embedded sklearn_digits tfds builder: the documented split, unchanged values, the registry's
normalization constants, and preparation that happens once and is safe for parallel processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from attn_jax import data
from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import Builder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def splits(data_dir):
    sources = Builder(data_dir=data_dir).as_data_source()
    return {name: src.__getitems__(list(range(len(src)))) for name, src in sources.items()}


def test_split_sizes_ids_and_rule(splits):
    assert len(splits["train"]) == 1438 and len(splits["test"]) == 359
    train_ids = [int(ex["id"]) for ex in splits["train"]]
    test_ids = [int(ex["id"]) for ex in splits["test"]]
    assert not set(train_ids) & set(test_ids)
    assert sorted(train_ids + test_ids) == list(range(1797))
    assert all(i % 5 == 4 for i in test_ids) and all(i % 5 != 4 for i in train_ids)
    # Each split keeps scikit-learn's order.
    assert train_ids == sorted(train_ids) and test_ids == sorted(test_ids)


def test_examples_are_sklearns_unchanged(splits, digits_arrays):
    images, labels = digits_arrays
    for split in ("train", "test"):
        for ex in splits[split]:
            i = int(ex["id"])
            assert ex["image"].dtype == np.uint8 and ex["image"].shape == (8, 8, 1)
            np.testing.assert_array_equal(ex["image"], images[i])
            assert int(ex["label"]) == labels[i]
    values = np.stack([ex["image"] for ex in splits["train"]])
    assert values.min() == 0 and values.max() == 16


def test_registry_matches_the_data(splits):
    entry = data.get_entry("sklearn_digits")
    assert entry.splits == {name: len(examples) for name, examples in splits.items()}
    x = np.stack([ex["image"] for ex in splits["train"]]).astype(np.float64) / 16
    np.testing.assert_allclose(entry.mean, [x.mean()], atol=1e-7)
    np.testing.assert_allclose(entry.std, [x.std()], atol=1e-7)


def test_metadata_from_the_builder_folder(data_dir):
    info = Builder(data_dir=data_dir).info
    assert "scikit-learn" in info.description and "Alpaydin" in info.citation
    assert info.features["label"].num_classes == 10
    assert info.file_format == tfds.core.FileFormat.ARRAY_RECORD


def test_prepare_happens_once(data_dir):
    info_file = data.prepare("sklearn_digits", data_dir) / "dataset_info.json"
    before = info_file.stat().st_mtime_ns
    assert data.is_prepared("sklearn_digits", data_dir)
    data.prepare("sklearn_digits", data_dir)
    assert info_file.stat().st_mtime_ns == before


def test_two_processes_preparing_at_once(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from attn_jax import data
        path = data.prepare("sklearn_digits", sys.argv[1])
        print(path)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert outs[0][0] == outs[1][0]  # the same versioned folder
    # Exactly one of them built it (the other found it under the lock).
    assert sum("preparing sklearn_digits" in err for _, err in outs) == 1
    sources = Builder(data_dir=str(tmp_path)).as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 1438, "test": 359}
    assert not list(tmp_path.glob("sklearn_digits/*incomplete*"))
