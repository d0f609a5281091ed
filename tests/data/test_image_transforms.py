"""Batch transforms and the counter-based randomness behind shuffling and augmentation."""

from __future__ import annotations

import numpy as np

from attn_jax.data import transforms as T


def test_translate_moves_content_and_fills_zeros():
    images = np.zeros((2, 5, 5, 1), np.uint8)
    images[:, 2, 2] = 7
    images[:, 0, 0] = 9
    out = T.translate(images, np.array([[1, -1], [0, 0]]))
    assert out[0, 3, 1, 0] == 7 and out[0, 2, 2, 0] == 0
    assert (out[0, 0, :] == 0).all()  # the top row came from the padding; (0, 0) left the image
    np.testing.assert_array_equal(out[1], images[1])
    assert out.dtype == np.uint8


def test_flip_and_normalize():
    images = np.arange(2 * 2 * 3 * 1, dtype=np.uint8).reshape(2, 2, 3, 1)
    out = T.flip_left_right(images, np.array([True, False]))
    np.testing.assert_array_equal(out[0], images[0, :, ::-1])
    np.testing.assert_array_equal(out[1], images[1])
    x = T.normalize(np.full((1, 1, 1, 3), 255, np.uint8), 255.0, (0.5, 0.5, 0.0), (0.5, 0.25, 1.0))
    np.testing.assert_allclose(x[0, 0, 0], [1.0, 2.0, 1.0], rtol=1e-6)
    assert x.dtype == np.float32


def test_randomness_is_a_pure_function_of_key_and_counter():
    key = T.fold_key(0, 2)
    u = T.random_uniform(key, np.arange(1000), 3)
    assert u.shape == (1000, 3) and 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.02
    # Any subset of counters, in any order, gets the same numbers.
    np.testing.assert_array_equal(T.random_uniform(key, np.array([917, 3]), 3), u[[917, 3]])
    assert not np.array_equal(T.random_uniform(T.fold_key(1, 2), np.arange(1000), 3), u)
    assert len({T.fold_key(*w) for w in [(0,), (1,), (-1,), (0, 0), (0, 1), (1, 0)]}) == 6


def test_permutations_differ_by_key():
    a = T.random_permutation(T.fold_key(0, 1, 0), 1438)
    b = T.random_permutation(T.fold_key(0, 1, 1), 1438)
    assert sorted(a) == list(range(1438)) and sorted(b) == list(range(1438))
    assert np.mean(a == b) < 0.01
    np.testing.assert_array_equal(a, T.random_permutation(T.fold_key(0, 1, 0), 1438))


def test_uniform_shifts_cover_the_range_evenly():
    u = T.random_uniform(T.fold_key(3), np.arange(9000), 1)[:, 0]
    counts = np.bincount(T.uniform_shifts(u, 1) + 1)
    assert counts.shape == (3,) and counts.min() > 2800


def test_resize_keeps_channels():
    images = np.random.default_rng(0).integers(0, 17, (3, 8, 8, 1), dtype=np.uint8)
    assert T.resize(images, 16).shape == (3, 16, 16, 1)
    assert T.resize(images, 8) is images
