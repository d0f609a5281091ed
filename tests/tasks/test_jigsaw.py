"""The jigsaw task: the permutation set has the minimal Hamming distance the module claims,
shuffling moves tiles as documented and unshuffling undoes it, evaluation puzzles do not depend on
the batching, and a model with the wrong number of outputs is a one-line error."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.errors import UserError
from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.tasks.jigsaw import (
    Jigsaw,
    hamming_distances,
    max_hamming_permutations,
    shuffle_tiles,
    unshuffle_tiles,
)


def _min_distance(perms: np.ndarray) -> int:
    d = hamming_distances(perms)
    np.fill_diagonal(d, perms.shape[1] + 1)
    return int(d.min())


@pytest.mark.parametrize(
    "tiles, count, distance",
    # 2x2: 4 permutations pairwise disjoint (a Latin square), 12 at distance 3 (the size of the
    # largest such code, A4), all 24 at 2; 3x3: 9 pairwise disjoint ones.
    [(4, 4, 4), (4, 12, 3), (4, 24, 2), (9, 9, 9)],
)
def test_permutation_set_has_the_claimed_minimal_hamming_distance(tiles, count, distance):
    perms = max_hamming_permutations(tiles, count, seed=3)
    assert perms.shape == (count, tiles)
    assert all(sorted(p) == list(range(tiles)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == count
    assert _min_distance(perms) == distance


def test_permutation_set_is_fixed_by_its_seed():
    a = max_hamming_permutations(4, 12, seed=0)
    np.testing.assert_array_equal(a, max_hamming_permutations(4, 12, seed=0))
    everything = max_hamming_permutations(4, 24, seed=0)
    assert {tuple(p) for p in everything.tolist()} == set(itertools.permutations(range(4)))


def test_bad_permutation_requests_are_user_errors():
    with pytest.raises(UserError, match="between 1 and 24"):
        max_hamming_permutations(4, 25)
    with pytest.raises(UserError, match="grid 1 to 3"):
        max_hamming_permutations(16, 10)


def test_shuffled_tile_t_is_original_tile_perm_t_and_unshuffle_restores():
    grid, side = 2, 8
    images = jnp.arange(3 * side * side * 2, dtype=jnp.float32).reshape(3, side, side, 2)
    perms = jnp.asarray([[1, 0, 3, 2], [3, 2, 1, 0], [2, 3, 0, 1]], jnp.int32)
    shuffled = shuffle_tiles(images, perms, grid)
    t = side // grid
    for b in range(3):
        for pos in range(grid * grid):
            src = int(perms[b, pos])
            r, c = divmod(pos, grid)
            sr, sc = divmod(src, grid)
            np.testing.assert_array_equal(
                shuffled[b, r * t : (r + 1) * t, c * t : (c + 1) * t],
                images[b, sr * t : (sr + 1) * t, sc * t : (sc + 1) * t],
            )
    np.testing.assert_array_equal(unshuffle_tiles(shuffled, perms, grid), images)


def test_unshuffle_with_the_labels_permutation_is_the_identity_for_every_label():
    task = Jigsaw(grid=2, num_permutations=24)
    images = jax.random.normal(jax.random.key(0), (24, 8, 8, 1))
    labels = jnp.arange(24)
    shuffled = task.shuffle(images, labels)
    perms = jnp.asarray(task.permutations)[labels]
    np.testing.assert_array_equal(unshuffle_tiles(shuffled, perms, 2), images)
    # Every non-identity permutation really moves pixels.
    moved = jnp.any(shuffled != images, axis=(1, 2, 3))
    identity = jnp.all(perms == jnp.arange(4), axis=-1)
    np.testing.assert_array_equal(moved, ~identity)


@pytest.fixture(scope="module")
def tiny():
    model = build_model(
        dict(
            name="vit",
            num_classes=24,
            patch_size=2,
            hidden_size=16,
            depth=1,
            num_heads=2,
            mlp_dim=32,
            posemb="sincos2d",
        )
    )
    task = build_task({"name": "jigsaw", "grid": 2, "num_permutations": 24}, num_classes=10)
    spec = SimpleNamespace(name="sklearn_digits", image_shape=(8, 8, 1))
    (inputs,) = task.init_inputs(spec)
    params = model.init(jax.random.key(0), jnp.zeros(inputs.shape))["params"]
    return model, task, params


def test_evaluation_puzzles_do_not_depend_on_the_batching(tiny):
    model, task, params = tiny
    images = jax.random.normal(jax.random.key(1), (10, 8, 8, 1))
    labels = task.eval_labels(images)
    np.testing.assert_array_equal(task.eval_labels(images[::-1]), labels[::-1])
    assert len(set(np.asarray(labels).tolist())) > 3  # not one fixed puzzle
    mask = jnp.ones(10, bool)
    sums = jax.jit(lambda p, batch: task.eval_sums(model, p, batch))  # as the loop runs it
    whole = sums(params, {"image": images, "mask": mask})
    halves = [
        sums(params, {"image": images[s], "mask": mask[s]}) for s in (slice(0, 5), slice(5, 10))
    ]
    for key in ("loss", "accuracy", "count"):
        np.testing.assert_allclose(whole[key], sum(h[key] for h in halves), rtol=1e-5)


def test_loss_is_cross_entropy_of_the_drawn_permutation_and_padding_counts_nothing(tiny):
    model, task, params = tiny
    images = jax.random.normal(jax.random.key(2), (6, 8, 8, 1))
    mask = jnp.asarray([True, True, True, True, False, False])
    loss, metrics = task.loss(model, params, {"image": images, "mask": mask}, jax.random.key(5))
    assert np.isfinite(float(loss)) and 0.0 <= float(metrics["accuracy"]) <= 1.0
    # A fresh model is near chance: ln 24.
    assert abs(float(loss) - np.log(24)) < 0.5
    garbage = images.at[4:].set(100.0)
    again, _ = task.loss(model, params, {"image": garbage, "mask": mask}, jax.random.key(5))
    np.testing.assert_allclose(again, loss, rtol=1e-6)


def test_a_head_of_the_wrong_size_is_a_one_line_error(tiny):
    _, task, _ = tiny
    model = build_model(
        dict(name="vit", num_classes=10, patch_size=2, hidden_size=16, depth=1, num_heads=2,
             mlp_dim=32, posemb="sincos2d")
    )  # fmt: skip
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    batch = {"image": jnp.zeros((2, 8, 8, 1)), "mask": jnp.ones(2, bool)}
    with pytest.raises(UserError, match="model.num_classes=24") as e:
        task.loss(model, params, batch, jax.random.key(0))
    assert "\n" not in str(e.value)


def test_a_grid_that_does_not_divide_the_images_is_a_one_line_error():
    task = Jigsaw(grid=3, num_permutations=2)
    with pytest.raises(UserError, match="task.grid"):
        task.init_inputs(SimpleNamespace(name="sklearn_digits", image_shape=(8, 8, 1)))
