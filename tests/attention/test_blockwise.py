"""blockwise_dot_product_attention: the plain path's values and gradients, in linear memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.blockwise import blockwise_dot_product_attention
from attn_jax.attention.dot_product import scaled_dot_product_attention
from attn_jax.attention.masks import padding_mask

B, H, DH = 2, 2, 4
TOL = 1e-4


def plain(q, k, v, mask=None, bias=None, is_causal=False):
    out, _ = scaled_dot_product_attention(
        q, k, v, mask=mask, bias=bias, is_causal=is_causal, return_weights=True
    )
    return out


def value_and_grads(attend, q, k, v, bias, cot):
    """Output and d(sum(out * cot)) / d(q, k, v, bias) in one compiled call."""

    def loss(q, k, v, bias):
        out = attend(q, k, v, bias)
        return jnp.sum(out * cot), out

    grads, out = jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, bias)
    return out, grads


def inputs(tq, tk, seed=0):
    rng = np.random.default_rng(seed)  # NumPy: random data without compiling PRNG kernels
    q = rng.standard_normal((B, tq, H, DH), np.float32)
    k = rng.standard_normal((B, tk, H, DH), np.float32)
    v = rng.standard_normal((B, tk, H, DH), np.float32)
    cot = rng.standard_normal((B, tq, H, DH), np.float32)
    return tuple(jnp.asarray(x) for x in (q, k, v, cot))


def random_mask(tq, tk, seed=1):
    """[B, H, Tq, Tk] mask with query 3 of batch 0, head 1 fully masked out."""
    m = np.random.default_rng(seed).random((B, H, tq, tk)) < 0.6
    m[0, 1, 3, :] = False
    return jnp.asarray(m)


def key_padding(tq, tk):
    del tq  # one mask row serves every query: [B, 1, 1, Tk], nothing quadratic
    valid = np.ones((B, tk), bool)
    valid[1, tk // 2 :] = False  # the second sequence is half padding
    return padding_mask(jnp.asarray(valid))  # [B, 1, 1, Tk]


CASES = {
    # name: (Tq, Tk, block, mask builder, bias shape builder, is_causal); lengths are not multiples
    # of the block unless said otherwise, and each case combines features to keep compiles few.
    "tq_ne_tk_relative_bias": (21, 37, 8, None, lambda tq, tk: (1, H, tq, tk), False),
    "causal": (37, 37, 16, None, None, True),
    "causal_tq_ne_tk_key_bias": (19, 37, 8, None, lambda tq, tk: (B, 1, 1, tk), True),
    "key_padding": (23, 29, 8, key_padding, None, False),
    "full_mask_empty_row_bias_causal": (
        37,
        37,
        16,
        random_mask,
        lambda tq, tk: (B, H, tq, tk),
        True,
    ),
    "one_block": (9, 9, 64, None, None, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_plain_path_in_value_and_gradients(case):
    tq, tk, block, make_mask, bias_shape, causal = CASES[case]
    q, k, v, cot = inputs(tq, tk)
    mask = None if make_mask is None else make_mask(tq, tk)
    bias = None
    if bias_shape is not None:
        bias = jnp.asarray(
            np.random.default_rng(2).standard_normal(bias_shape(tq, tk)), jnp.float32
        )
    ours = functools.partial(
        blockwise_dot_product_attention, is_causal=causal, block_q=block, block_k=block
    )
    ref = functools.partial(plain, is_causal=causal)

    @jax.jit
    def both(q, k, v, bias, mask):
        return (
            value_and_grads(lambda *a: ours(*a[:3], bias=a[3], mask=mask), q, k, v, bias, cot),
            value_and_grads(lambda *a: ref(*a[:3], bias=a[3], mask=mask), q, k, v, bias, cot),
        )

    (out, grads), (ref_out, ref_grads) = both(q, k, v, bias, mask)
    assert out.shape == (B, tq, H, DH)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref_out, atol=TOL, rtol=TOL)
    for name, g, r in zip(("q", "k", "v", "bias"), grads, ref_grads, strict=True):
        if r is None:
            assert g is None
            continue
        assert g.shape == r.shape, name
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, r, atol=TOL, rtol=TOL, err_msg=name)
    if make_mask is random_mask:  # the fully-masked row: zero output and no gradient through it
        assert np.all(np.asarray(out)[0, 3, 1] == 0.0)
        assert np.all(np.asarray(grads[0])[0, 3, 1] == 0.0)
    if make_mask is key_padding:  # padded keys get no gradient
        assert np.all(np.asarray(grads[1])[1, tk // 2 :] == 0.0)


def test_vmap_of_value_and_gradients_equals_the_plain_path():
    q, k, v, cot = inputs(13, 13)
    qs, ks, vs = (jnp.stack([x, 2.0 * x]) for x in (q, k, v))  # [2, B, T, H, Dh]
    ours = functools.partial(blockwise_dot_product_attention, is_causal=True, block_q=4, block_k=4)
    ref = functools.partial(plain, is_causal=True)

    def batched(attend):
        def one(q, k, v):  # one [B, T, H, Dh] problem; bias None
            return value_and_grads(lambda q, k, v, _: attend(q, k, v), q, k, v, None, cot)

        return jax.jit(jax.vmap(one))(qs, ks, vs)

    (out, grads), (ref_out, ref_grads) = batched(ours), batched(ref)
    assert out.shape == qs.shape
    np.testing.assert_allclose(out, ref_out, atol=TOL, rtol=TOL)
    for g, r in zip(grads[:3], ref_grads[:3], strict=True):
        np.testing.assert_allclose(g, r, atol=TOL, rtol=TOL)


def test_bfloat16_inputs_keep_float32_statistics():
    q, k, v, _ = inputs(40, 40)
    out = jax.jit(functools.partial(blockwise_dot_product_attention, block_q=16, block_k=16))(
        *(x.astype(jnp.bfloat16) for x in (q, k, v))
    )
    assert out.dtype == jnp.bfloat16
    ref = plain(q, k, v)
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)


def _grad_temp_bytes(attend, t: int) -> int:
    """Scratch memory XLA plans for value and gradients of attention over t tokens (no run)."""
    x = jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v)), argnums=(0, 1, 2)))
    return grad.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def test_backward_memory_grows_linearly_with_length():
    ours = functools.partial(blockwise_dot_product_attention, block_q=64, block_k=64)
    small, large = _grad_temp_bytes(ours, 512), _grad_temp_bytes(ours, 2048)
    weights = 2 * 2048**2 * 4  # one [H, T, T] float32 array at 2048 tokens: 32 MiB
    # 4x the tokens: at most ~4x the scratch (a quadratic path needs 16x), and far below the
    # weights, which the plain path keeps (several times over) for its backward pass.
    assert large <= 5 * small
    assert large < weights / 16
    assert _grad_temp_bytes(plain, 2048) > weights  # the check can tell quadratic from linear
