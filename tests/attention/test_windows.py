"""Swin's window attention (Liu et al. 2021, sec. 3.2): partition, relative position index, the
window-as-large-as-the-map equivalence with global attention, and the shifted-window mask."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.windows import (
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_merge,
    window_partition,
)


def test_partition_is_row_major_windows_and_merge_inverts_it():
    x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
    windows = window_partition(x, 4)  # 2 x 3 windows of 16 tokens per image
    assert windows.shape == (2 * 6, 16, 3)
    np.testing.assert_array_equal(windows[1].reshape(4, 4, 3), x[0, 0:4, 4:8])  # 2nd window
    np.testing.assert_array_equal(windows[6 + 3].reshape(4, 4, 3), x[1, 4:8, 0:4])
    np.testing.assert_array_equal(window_merge(windows, 4, 8, 12), x)
    with pytest.raises(ValueError, match="not a multiple of the window 5; pad it first"):
        window_partition(x, 5)


@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_relative_position_index_matches_a_brute_force_construction(window):
    tokens = list(itertools.product(range(window), range(window)))
    expected = np.zeros((window**2, window**2), np.int64)
    table = {}  # every distinct offset gets its own row, the same row wherever it occurs
    for i, (yi, xi) in enumerate(tokens):
        for j, (yj, xj) in enumerate(tokens):
            offset = (yi - yj, xi - xj)
            expected[i, j] = table.setdefault(
                offset, (offset[0] + window - 1) * (2 * window - 1) + offset[1] + window - 1
            )
    index = relative_position_index(window)
    np.testing.assert_array_equal(index, expected)
    assert len(np.unique(index)) == (2 * window - 1) ** 2  # every row of the table is used


def _global_attention(params, x, num_heads):
    """Plain multi-head self-attention over all H*W tokens with the bias read by brute force."""
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    qkv = jnp.einsum("btc,cshd->btshd", tokens, params["qkv"]["kernel"]) + params["qkv"]["bias"]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    pos = list(itertools.product(range(h), range(w)))
    table = params["relative_position_bias_table"]
    bias = jnp.stack(
        [
            jnp.stack([table[(yi - yj + h - 1) * (2 * w - 1) + xi - xj + w - 1] for yj, xj in pos])
            for yi, xi in pos
        ]
    )  # [T, T, heads]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(c // num_heads)
    logits = logits + jnp.transpose(bias, (2, 0, 1))[None]
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)
    out = jnp.einsum("bqhd,hdc->bqc", out, params["proj"]["kernel"]) + params["proj"]["bias"]
    return out.reshape(b, h, w, c)


def test_a_window_as_large_as_the_map_is_global_attention_with_the_same_bias():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 12))
    model = WindowAttention(num_heads=3, window=6)
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    # A non-trivial table, so that a wrong index would show.
    params["relative_position_bias_table"] = jax.random.normal(
        jax.random.key(2), params["relative_position_bias_table"].shape
    )
    np.testing.assert_allclose(
        jax.jit(model.apply)({"params": params}, x), _global_attention(params, x, 3), atol=1e-5
    )


def _dependencies(model, params, x):
    """dep[p, q]: the output at token p depends on the input at token q (exact zeros in the
    Jacobian: masked weights are exactly zero after the softmax)."""
    jac = jax.jit(jax.jacfwd(lambda x: model.apply({"params": params}, x)))(x)  # [1,H,W,C,1,H,W,C]
    h, w = x.shape[1:3]
    return np.asarray(jnp.any(jac[0] != 0, axis=(2, 6)).reshape(h * w, h * w))


def test_shifted_windows_never_attend_across_the_wrap_around():
    h = w = 8
    window, shift = 4, 2
    x = jax.random.normal(jax.random.key(0), (1, h, w, 8))
    model = WindowAttention(num_heads=2, window=window, shift=shift)
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    dep = _dependencies(model, params, x)
    pos = np.array(list(itertools.product(range(h), range(w))))
    rolled_window = ((pos - shift) % h) // window  # the window of each token after the roll
    same_window = np.all(rolled_window[:, None] == rolled_window[None], axis=-1)
    near = np.all(np.abs(pos[:, None] - pos[None]) < window, axis=-1)  # neighbours in the image
    np.testing.assert_array_equal(dep, same_window & near)
    assert (same_window & ~near).any()  # the shift did make far tokens share windows

    # The wording: perturb a token's wrap-around partners; its output does not move.
    p = 0  # the top-left token shares its rolled window with the bottom and right borders
    partners = np.flatnonzero(same_window[p] & ~near[p])
    noisy = x.reshape(h * w, -1).at[partners].add(100.0).reshape(x.shape)
    apply = jax.jit(model.apply)
    out, out_noisy = (apply({"params": params}, v) for v in (x, noisy))
    np.testing.assert_array_equal(out[0, 0, 0], out_noisy[0, 0, 0])
    assert not np.allclose(out, out_noisy)


def test_shifted_window_mask_has_the_papers_regions():
    mask = shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16) and mask.dtype == bool
    assert mask[0].all()  # the top-left window holds no wrapped tokens
    assert not mask[3].all() and (mask[3] == mask[3].T).all() and mask[3].diagonal().all()
    # The bottom-right window holds four regions of 2 x 2 tokens each: 4 x 4 allowed pairs each.
    assert mask[3].sum() == 4 * 16


def test_bad_shapes_are_one_line_errors():
    x = jnp.zeros((1, 8, 8, 6))
    with pytest.raises(ValueError, match="channels 6 are not a multiple of the 4 heads"):
        WindowAttention(num_heads=4, window=4).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"shift 4 must lie in \[0, window 4\)"):
        WindowAttention(num_heads=2, window=4, shift=4).init(jax.random.key(0), x)


def test_mask_counts_match_the_official_construction():
    # Reference numbers of the official img_mask construction (FAITHFULNESS.md, Swin): masked
    # pairs per window for H=W=4, M=2, s=1, and Swin-T stage 1 (56x56, M=7, s=3).
    masked = (~shifted_window_mask(4, 4, 2, 1)).sum(axis=(1, 2))
    np.testing.assert_array_equal(masked, [0, 8, 8, 12])
    stage1 = ~shifted_window_mask(56, 56, 7, 3)
    assert stage1.any(axis=(1, 2)).sum() == 15 and stage1.sum() == 18_240
    np.testing.assert_array_equal(
        relative_position_index(2), [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    )
