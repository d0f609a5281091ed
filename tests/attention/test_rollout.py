"""Attention rollout (Abnar and Zuidema 2020) and TransFG part selection (He et al. 2022): identity
in, identity out; row-stochastic output; the single-layer and two-layer cases by hand; head
permutation invariance; per-example discarding; part indices in [1, N] with first-index ties."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax.attention.rollout import (
    attention_rollout,
    class_token_relevance,
    discard_lowest,
    per_head_maps,
    top_k_parts,
    transfg_part_selection,
)


def random_weights(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Row-stochastic attention weights [L, B, H, T, T], far from uniform (numpy: no compiles)."""
    logits = 3.0 * np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def test_identity_attention_in_every_layer_rolls_out_to_the_identity():
    eye = np.broadcast_to(np.eye(7), (4, 2, 3, 7, 7))
    for fusion in ("mean", "max", "min"):
        np.testing.assert_allclose(
            attention_rollout(eye, head_fusion=fusion), np.broadcast_to(np.eye(7), (2, 7, 7))
        )


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.7])
def test_rollout_rows_sum_to_one(fusion, discard_ratio):
    rollout = attention_rollout(
        random_weights(0, (5, 3, 4, 9, 9)), head_fusion=fusion, discard_ratio=discard_ratio
    )
    assert rollout.shape == (3, 9, 9)
    assert bool(np.all(rollout >= 0))
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-5)


def test_single_layer_is_half_attention_plus_half_identity():
    weights = random_weights(1, (1, 2, 1, 6, 6))
    np.testing.assert_allclose(
        attention_rollout(weights), 0.5 * (weights[0, :, 0] + np.eye(6)), atol=1e-6
    )
    # Without the residual correction one layer is its own attention.
    np.testing.assert_allclose(
        attention_rollout(weights, residual=False), weights[0, :, 0], atol=1e-6
    )


def test_two_layers_by_hand():
    a1 = np.array([[0.5, 0.5], [0.2, 0.8]])
    a2 = np.array([[1.0, 0.0], [0.4, 0.6]])
    # A_hat_1 = [[.75, .25], [.1, .9]], A_hat_2 = [[1, 0], [.2, .8]]; the later layer on the left.
    expected = np.array([[0.75, 0.25], [0.23, 0.77]])
    np.testing.assert_allclose(
        attention_rollout(np.stack([a1, a2])[:, None, None]), expected[None], atol=1e-6
    )
    # Mean fusion of two heads whose average is a1 (resp. a2) gives the same rollout.
    d = np.array([[0.1, -0.1], [-0.2, 0.2]])
    heads = np.stack([np.stack([a1 + d, a1 - d]), np.stack([a2, a2])])[:, None]
    np.testing.assert_allclose(attention_rollout(heads), expected[None], atol=1e-6)
    # max fusion: layer 1 fuses to [[.6, .6], [.4, 1]], whose rows need renormalizing after + I:
    # A_hat_1 = [[1.6, .6] / 2.2, [.4, 2] / 2.4] = [[8/11, 3/11], [1/6, 5/6]].
    hat1 = np.array([[8 / 11, 3 / 11], [1 / 6, 5 / 6]])
    hat2 = np.array([[1.0, 0.0], [0.2, 0.8]])
    np.testing.assert_allclose(attention_rollout(heads, head_fusion="max")[0], hat2 @ hat1, 1e-6)


def test_mean_fusion_is_invariant_to_a_permutation_of_the_heads():
    weights = random_weights(2, (3, 2, 5, 8, 8))
    permuted = weights[:, :, [3, 0, 4, 1, 2]]
    np.testing.assert_allclose(attention_rollout(weights), attention_rollout(permuted), atol=1e-6)


def test_discarding_is_per_example_and_spares_the_diagonal():
    fused = random_weights(3, (2, 5, 5))
    # Example 1 is example 0 transposed, so their lowest entries lie at different places.
    fused[1] = fused[0].T
    kept = discard_lowest(fused, 0.5)
    for b in range(2):
        off = ~np.eye(5, dtype=bool)
        values = np.asarray(fused[b])[off]
        lowest = np.sort(values)[:10]  # floor(0.5 * 5 * 4) = 10 entries go
        zeroed = np.asarray(kept[b])[off] == 0
        assert zeroed.sum() == 10
        np.testing.assert_array_equal(np.sort(values[zeroed]), lowest)
        np.testing.assert_array_equal(np.diag(kept[b]), np.diag(fused[b]))
    assert not np.array_equal(kept[0] == 0, kept[1] == 0)
    np.testing.assert_array_equal(discard_lowest(fused, 0.0), fused)


def test_relevance_and_head_maps_read_the_class_token_row_on_the_grid():
    weights = random_weights(4, (2, 2, 3, 7, 7))  # class token + 2x3 patches
    rollout = attention_rollout(weights)
    relevance = class_token_relevance(rollout, (2, 3))
    assert relevance.shape == (2, 2, 3)
    row = rollout[:, 0, 1:]
    np.testing.assert_allclose(
        relevance, (row / row.max(-1, keepdims=True)).reshape(2, 2, 3), atol=1e-6
    )
    assert np.allclose(relevance.max(axis=(1, 2)), 1.0)
    maps = per_head_maps(weights[-1], (2, 3))
    assert maps.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(maps, weights[-1, :, :, 0, 1:].reshape(2, 3, 2, 3))
    # Without a class token the mean query row stands in: the flow into mean pooling.
    no_cls = class_token_relevance(rollout[:, 1:, 1:], (2, 3), class_token=False)
    mean_row = rollout[:, 1:, 1:].mean(1)
    np.testing.assert_allclose(
        no_cls, (mean_row / mean_row.max(-1, keepdims=True)).reshape(2, 2, 3), atol=1e-6
    )
    with pytest.raises(ValueError, match="do not fill a 3x3 grid"):
        class_token_relevance(rollout, (3, 3))


def test_part_selection_multiplies_the_raw_attention_of_all_but_the_last_layer():
    weights = random_weights(5, (4, 2, 3, 10, 10))
    parts = transfg_part_selection(weights)
    assert parts.shape == (2, 3) and parts.dtype == np.int32
    assert bool(np.all((parts >= 1) & (parts <= 9)))
    w = np.asarray(weights, np.float64)
    product = w[2] @ w[1] @ w[0]  # layer 4 is the one TransFG feeds the parts to
    np.testing.assert_array_equal(parts, np.argmax(product[..., 0, 1:], axis=-1) + 1)
    # The last layer's weights do not matter.
    changed = weights.copy()
    changed[-1] = random_weights(6, (2, 3, 10, 10))
    np.testing.assert_array_equal(transfg_part_selection(changed), parts)


def test_part_selection_by_hand_and_its_ties():
    # Class token + 3 patches, one head; the raw product is used, not the rollout.
    a1 = np.array(
        [[0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    )
    a2 = np.array([[0.5, 0.0, 0.0, 0.5], [0.25] * 4, [0.25] * 4, [0.25] * 4])
    # Row 0 of a2 @ a1 = 0.5 * a1[0] + 0.5 * a1[3] = [.05, .1, .65, .2]: patch 2 (token 2).
    weights = np.stack([a1, a2, np.eye(4)])[:, None, None]
    np.testing.assert_array_equal(transfg_part_selection(weights), [[2]])
    uniform = np.full((3, 2, 4, 5, 5), 0.2)
    np.testing.assert_array_equal(transfg_part_selection(uniform), np.ones((2, 4)))
    with pytest.raises(ValueError, match="L >= 2"):
        transfg_part_selection(uniform[:1])


def test_top_k_parts_are_the_most_relevant_patches_as_tokens():
    relevance = np.array([[[0.1, 0.9, 0.3], [1.0, 0.3, 0.0]]])
    np.testing.assert_array_equal(top_k_parts(relevance, 3), [[4, 2, 3]])  # tie: lower patch
    with pytest.raises(ValueError, match=r"k=7 must lie in \[1, 6\]"):
        top_k_parts(relevance, 7)


def test_bad_inputs_are_one_line_errors():
    weights = random_weights(7, (2, 1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\[layers, batch, heads, tokens, tokens\]"):
        attention_rollout(weights[0])
    with pytest.raises(ValueError, match="head_fusion='median'"):
        attention_rollout(weights, head_fusion="median")
    with pytest.raises(ValueError, match=r"discard_ratio must lie in \[0, 1\)"):
        attention_rollout(weights, discard_ratio=1.0)
    with pytest.raises(ValueError, match="index the layer"):
        per_head_maps(weights, (1, 3))
