"""The registry of attention functions: registration, lookup, one-line errors, and Swin's window
attention as the core's attention over windows with a bias and a mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from attn_jax.attention import (
    AttentionConfigError,
    MultiHeadAttention,
    WindowAttention,
    attention_names,
    get_attention,
    register_attention,
    scaled_dot_product_attention,
)

CALLS: list[dict] = []


@register_attention("spy")
def spy(q, k, v, **kwargs):
    """The default attention, recording what it was called with (traced shapes)."""
    CALLS.append(
        dict(
            q=q.shape,
            mask=None if kwargs["mask"] is None else kwargs["mask"].shape,
            bias=None if kwargs["bias"] is None else kwargs["bias"].shape,
            implementation=kwargs["implementation"],
        )
    )
    return scaled_dot_product_attention(q, k, v, **kwargs)


def test_registered_names_resolve_and_names_are_unique():
    assert {"dot_product", "spy"} <= set(attention_names())
    assert get_attention("spy") is spy
    assert get_attention(None) is scaled_dot_product_attention
    assert get_attention(spy) is spy
    register_attention("spy")(spy)  # the same function again is fine
    with pytest.raises(ValueError, match="'spy' is already registered"):
        register_attention("spy")(scaled_dot_product_attention)


def test_an_unknown_name_is_a_one_line_error_at_construction():
    with pytest.raises(AttentionConfigError, match="did you mean 'spy'") as err:
        MultiHeadAttention(num_heads=2, attention_fn="spi")
    assert "\n" not in str(err.value) and "register_attention" in str(err.value)
    with pytest.raises(AttentionConfigError, match="unknown attention implementation 'fast'"):
        WindowAttention(num_heads=2, window=2, implementation="fast")


def test_window_attention_is_the_cores_attention_with_a_bias_and_a_shift_mask():
    CALLS.clear()
    x = jnp.zeros((2, 4, 6, 8))  # 2 x 3 windows of 2 x 2 tokens
    attention = WindowAttention(
        num_heads=2, window=2, shift=1, attention_fn="spy", implementation="xla"
    )
    jax.eval_shape(lambda: attention.init_with_output(jax.random.key(0), x))
    (call,) = {tuple(sorted(c.items())): c for c in CALLS}.values()
    assert call["q"] == (2 * 6, 4, 2, 4)  # [B * nW, M^2, heads, Dh]
    assert call["bias"] == (1, 2, 4, 4)  # the relative position bias, per head
    assert call["mask"] == (2 * 6, 1, 4, 4)  # the shifted-window regions
    assert call["implementation"] == "xla"
