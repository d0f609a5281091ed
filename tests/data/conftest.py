"""Shared fixtures of the data tests: one session-wide tfds data dir with sklearn_digits prepared
(and digit_scenes for the tests that ask for it), so that no test writes to ~/tensorflow_datasets
and each build happens once."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax import data


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tfds"))
    data.prepare("sklearn_digits", path)
    return path


@pytest.fixture(scope="session")
def digits_cfg(data_dir) -> dict:
    return {**data.DEFAULT_DATA_CONFIG, "name": "sklearn_digits", "data_dir": data_dir}


@pytest.fixture(scope="session")
def digits_arrays():
    """scikit-learn's digits as (uint8 images [1797, 8, 8, 1], labels [1797])."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8)[..., None], d.target.astype(np.int32)


@pytest.fixture(scope="session")
def scenes_dir(data_dir) -> str:
    """The session data dir with digit_scenes prepared too (a few seconds, once)."""
    data.prepare("digit_scenes", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def scenes(scenes_dir) -> dict[str, list[dict]]:
    """Every stored digit_scenes example of both splits, decoded, in stored order."""
    from attn_jax.data.digit_scenes import digit_scenes_dataset_builder as ds

    sources = ds.Builder(data_dir=scenes_dir).as_data_source()
    return {name: src.__getitems__(list(range(len(src)))) for name, src in sources.items()}
