"""scaled_dot_product_attention: Vaswani et al. 2017 eq. 1, masking semantics, every implementation
agrees, and the choice of implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention import (
    AttentionConfigError,
    causal_mask,
    choose_implementation,
    dot_product_attention_weights,
    mask_to_bias,
    padding_mask,
    scaled_dot_product_attention,
)

B, TQ, TK, H, DH = 2, 5, 7, 3, 4

# One compiled function per configuration instead of op-by-op dispatch: keeps the file fast.
sdpa = jax.jit(
    scaled_dot_product_attention,
    static_argnames=(
        "dropout_rate",
        "deterministic",
        "return_weights",
        "is_causal",
        "implementation",
    ),
)


@pytest.fixture(scope="module")
def qkv():
    rng = np.random.default_rng(0)  # NumPy: random data without compiling PRNG kernels
    q = rng.standard_normal((B, TQ, H, DH), np.float32)
    k = rng.standard_normal((B, TK, H, DH), np.float32)
    v = rng.standard_normal((B, TK, H, DH), np.float32)
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


@pytest.fixture(scope="module")
def mask():
    """Random mask with row 1 of batch 0, head 2 fully masked and every other row non-empty."""
    m = np.random.default_rng(1).random((B, H, TQ, TK)) < 0.6
    m[..., 0] = True
    m[0, 2, 1, :] = False
    return jnp.asarray(m)


def reference(q, k, v, mask=None, bias=None):
    """Textbook eq. 1 in float64 NumPy; fully-masked rows give zeros."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    if mask is None:
        mask = np.ones_like(logits, dtype=bool)
    mask = np.broadcast_to(np.asarray(mask), logits.shape)
    logits = np.where(mask, logits, -np.inf)
    row_max = np.max(np.where(mask, logits, -1e300), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(logits - row_max), 0.0)
    w = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bhqk,bkhd->bqhd", w, v), w


def both_paths(q, k, v, **kwargs):
    fused = sdpa(q, k, v, implementation="xla", **kwargs)
    explicit, weights = sdpa(q, k, v, return_weights=True, **kwargs)
    return fused, explicit, weights


def test_matches_equation_1(qkv):
    q, k, v = qkv
    fused, explicit, weights = both_paths(q, k, v)
    ref_out, ref_w = reference(q, k, v)
    np.testing.assert_allclose(fused, ref_out, atol=1e-5)
    np.testing.assert_allclose(explicit, ref_out, atol=1e-5)
    np.testing.assert_allclose(weights, ref_w, atol=1e-6)
    assert weights.shape == (B, H, TQ, TK)


def test_fused_and_explicit_paths_agree_with_mask_bias_and_causal(qkv, mask):
    q, k, v = qkv
    bias = jnp.asarray(np.random.default_rng(2).standard_normal((1, H, TQ, TK)), jnp.float32)
    for kwargs in (
        dict(mask=mask),
        dict(bias=bias),
        dict(mask=mask, bias=bias),
        dict(is_causal=True),
        dict(mask=mask, is_causal=True),
    ):
        fused, explicit, _ = both_paths(q, k, v, **kwargs)
        full_mask = kwargs.get("mask")
        if kwargs.get("is_causal"):
            full_mask = (
                causal_mask(TQ, TK) if full_mask is None else full_mask & causal_mask(TQ, TK)
            )
        ref_out, _ = reference(q, k, v, full_mask, kwargs.get("bias"))
        np.testing.assert_allclose(fused, explicit, atol=1e-5, err_msg=str(list(kwargs)))
        np.testing.assert_allclose(fused, ref_out, atol=1e-5, err_msg=str(list(kwargs)))


@pytest.mark.parametrize("implementation", ["xla", "explicit", "blockwise", "auto"])
def test_every_implementation_is_equation_1_with_mask_bias_and_causal(qkv, mask, implementation):
    q, k, v = qkv
    bias = jnp.asarray(np.random.default_rng(2).standard_normal((1, H, TQ, TK)), jnp.float32)
    for kwargs in (dict(mask=mask, bias=bias), dict(mask=mask, is_causal=True)):
        out = sdpa(q, k, v, implementation=implementation, **kwargs)
        full_mask = mask & causal_mask(TQ, TK) if kwargs.get("is_causal") else mask
        ref_out, _ = reference(q, k, v, full_mask, kwargs.get("bias"))
        np.testing.assert_allclose(out, ref_out, atol=1e-5, err_msg=str(list(kwargs)))
        assert bool(jnp.all(out[0, 1, 2] == 0.0))  # the fully masked row


def test_choice_of_implementation():
    q = jnp.zeros((1, 4, 2, 8))
    assert choose_implementation("xla", q, q, q, need_weights=True) == "explicit"
    assert choose_implementation("blockwise", q, q, q) == "blockwise"
    assert choose_implementation(None, q, q, q) == choose_implementation("auto", q, q, q)
    if jax.default_backend() == "cpu":
        from attn_jax.attention.dot_product import CPU_DEFAULT

        assert choose_implementation("auto", q, q, q) == CPU_DEFAULT
        with pytest.raises(AttentionConfigError, match="needs an NVIDIA GPU") as err:
            choose_implementation("cudnn", q, q, q)
        assert "\n" not in str(err.value)
    with pytest.raises(AttentionConfigError, match="unknown attention implementation 'flash'"):
        choose_implementation("flash", q, q, q)


def test_masked_keys_get_exactly_zero_weight_and_rows_sum_to_one(qkv, mask):
    q, k, v = qkv
    weights = jax.jit(dot_product_attention_weights)(q, k, mask=mask)
    assert bool(jnp.all(jnp.where(mask, 0.0, weights) == 0.0))
    sums = weights.sum(-1)
    has_key = mask.any(-1)
    np.testing.assert_allclose(jnp.where(has_key, sums, 1.0), 1.0, atol=1e-6)
    assert bool(jnp.all(jnp.where(has_key, 0.0, sums) == 0.0))


def test_fully_masked_row_gives_zeros_not_nan_on_both_paths(qkv, mask):
    q, k, v = qkv
    fused, explicit, weights = both_paths(q, k, v, mask=mask)
    for out in (fused, explicit):
        assert not bool(jnp.any(jnp.isnan(out)))
        assert bool(jnp.all(out[0, 1, 2] == 0.0))
    assert bool(jnp.all(weights[0, 2, 1] == 0.0))

    def loss(q, return_weights):
        out = sdpa(q, k, v, mask=mask, return_weights=return_weights)
        return jnp.sum((out[0] if return_weights else out) ** 2)

    for return_weights in (False, True):
        grad = jax.jit(jax.grad(loss), static_argnums=1)(q, return_weights)
        assert bool(jnp.all(jnp.isfinite(grad)))


def test_fully_masked_row_through_bias_is_finite(qkv):
    q, k, v = qkv
    bias = mask_to_bias(padding_mask(jnp.zeros((B, TK), bool)))
    fused, explicit, weights = both_paths(q, k, v, bias=bias)
    for x in (fused, explicit, weights):
        assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_allclose(weights, 1.0 / TK, atol=1e-6)  # documented: uniform


def test_bfloat16_inputs_softmax_in_float32(qkv):
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv)
    fused, explicit, weights = both_paths(q, k, v)
    assert fused.dtype == explicit.dtype == weights.dtype == jnp.bfloat16
    ref_out, _ = reference(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    np.testing.assert_allclose(fused.astype(jnp.float32), ref_out, atol=3e-2)
    np.testing.assert_allclose(explicit.astype(jnp.float32), ref_out, atol=3e-2)
    logits_f32 = dot_product_attention_weights(q, k)
    assert logits_f32.dtype == jnp.float32


def test_dropout_only_when_not_deterministic(qkv):
    q, k, v = qkv
    plain = sdpa(q, k, v)
    same = sdpa(q, k, v, dropout_rate=0.5, deterministic=True)
    np.testing.assert_array_equal(plain, same)
    with pytest.raises(ValueError, match="dropout_rng"):
        sdpa(q, k, v, dropout_rate=0.5, deterministic=False)
    kwargs = dict(dropout_rate=0.5, deterministic=False, return_weights=True)
    a, w = sdpa(q, k, v, dropout_rng=jax.random.key(3), **kwargs)
    b, _ = sdpa(q, k, v, dropout_rng=jax.random.key(4), **kwargs)
    assert not np.allclose(a, b)
    assert not np.allclose(a, plain)
    # The weights are returned before dropout: they still form distributions.
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)


def test_dropout_keeps_the_mean():
    """Inverted dropout: E[output] equals the output without dropout."""
    q = jnp.zeros((1, 1, 1, 2))
    k = jnp.zeros((1, 64, 1, 2))
    v = jnp.ones((1, 64, 1, 2))
    keys = jax.random.split(jax.random.key(5), 256)
    outs = jax.vmap(
        lambda key: scaled_dot_product_attention(
            q, k, v, dropout_rate=0.25, dropout_rng=key, deterministic=False
        )
    )(keys)
    np.testing.assert_allclose(outs.mean(), 1.0, atol=0.02)


@pytest.mark.parametrize(
    "tq,tk,case",
    [
        (5, 7, "none"),
        (5, 7, "key_padding"),
        (6, 8, "key_padding"),
        (5, 5, "causal"),
        (5, 7, "bias"),
    ],
)
def test_cudnn_path_pads_odd_lengths_and_broadcast_masks(monkeypatch, tq, tk, case):
    """The cuDNN path's padding (odd lengths) and mask broadcasting leave outputs and gradients
    those of the explicit path. Off a GPU the kernel is stood in by the xla one, after checking
    that the call meets jax's cuDNN rules (even lengths, a bias of full [.., Tq, Tk] extent)."""
    from attn_jax.attention import dot_product

    on_gpu = jax.default_backend() == "gpu"
    dtype = jnp.bfloat16 if on_gpu else jnp.float32
    if not on_gpu:
        real = jax.nn.dot_product_attention

        def cudnn_stand_in(q, k, v, *, bias=None, mask=None, implementation=None, **kw):
            assert implementation == "cudnn"
            assert q.shape[1] % 2 == 0 and k.shape[1] % 2 == 0, (q.shape, k.shape)
            for x in (bias, mask):
                assert x is None or x.shape[-2:] == (q.shape[1], k.shape[1]), x.shape
            return real(q, k, v, bias=bias, mask=mask, implementation="xla", **kw)

        monkeypatch.setattr(jax.nn, "dot_product_attention", cudnn_stand_in)
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, t, 2, 8)), dtype) for t in (tq, tk, tk))
    kwargs = {}
    if case == "key_padding":
        kwargs["mask"] = jnp.asarray(rng.random((2, 1, 1, tk)) > 0.3).at[..., 0].set(True)
    elif case == "causal":
        kwargs["is_causal"] = True
    elif case == "bias":
        kwargs["bias"] = jnp.asarray(rng.standard_normal((1, 2, tq, tk)), jnp.float32)

    def loss(impl, q, k, v):
        out = dot_product._cudnn_attention if impl == "cudnn" else None
        if out is not None:
            out = out(
                q,
                k,
                v,
                bias=kwargs.get("bias"),
                mask=kwargs.get("mask"),
                is_causal=kwargs.get("is_causal", False),
            )
        else:
            out = scaled_dot_product_attention(q, k, v, implementation="explicit", **kwargs)
        return jnp.sum(out.astype(jnp.float32) * jnp.arange(out.size).reshape(out.shape) / out.size)

    got = jax.jit(jax.value_and_grad(lambda *a: loss("cudnn", *a), argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(jax.value_and_grad(lambda *a: loss("explicit", *a), argnums=(0, 1, 2)))(q, k, v)
    tol = 5e-2 if on_gpu else 1e-5
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.float32(g), np.float32(w), atol=tol, rtol=tol)
