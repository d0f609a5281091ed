"""Query-key-value and Bahdanau additive attention (Bahdanau, Cho & Bengio 2015, eqs. 5-6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.additive import (
    AdditiveAttention,
    additive_attention,
    additive_scores,
    masked_softmax,
    qkv_attention,
)

B, TQ, TK, D, A = 2, 3, 5, 4, 6
RNG = np.random.default_rng(0)
Q = RNG.standard_normal((B, TQ, D)).astype(np.float32)
K = RNG.standard_normal((B, TK, D)).astype(np.float32)
V = RNG.standard_normal((B, TK, 7)).astype(np.float32)
# Batch 0 may attend keys 0..2, batch 1 only key 0.
KEY_MASK = np.arange(TK)[None, :] < np.array([3, 1])[:, None]


def softmax_ref(logits, mask):
    logits = np.where(mask, logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_qkv_attention_matches_formula_and_masks_exactly():
    context, weights = qkv_attention(jnp.asarray(Q), jnp.asarray(K), jnp.asarray(V), KEY_MASK)
    logits = np.einsum("bqd,bkd->bqk", Q.astype(np.float64), K)  # q K^T, no scale
    w_ref = softmax_ref(logits, KEY_MASK[:, None, :])
    np.testing.assert_allclose(weights, w_ref, atol=1e-6)
    np.testing.assert_allclose(context, w_ref @ V, atol=1e-5)
    assert np.all(np.asarray(weights)[~np.broadcast_to(KEY_MASK[:, None], weights.shape)] == 0.0)
    np.testing.assert_array_equal(weights[1, :, 0], 1.0)  # a single allowed key takes it all


def test_fully_masked_row_gives_zeros_not_nan():
    mask = np.ones((B, TQ, TK), bool)
    mask[0, 1] = False
    w = masked_softmax(jnp.asarray(RNG.standard_normal((B, TQ, TK)), jnp.float32), mask)
    np.testing.assert_array_equal(w[0, 1], 0.0)
    np.testing.assert_allclose(np.sum(w, -1)[mask.any(-1)], 1.0, atol=1e-6)


def test_additive_scores_formula():
    qp = RNG.standard_normal((B, TQ, A)).astype(np.float32)
    kp = RNG.standard_normal((B, TK, A)).astype(np.float32)
    v_a = RNG.standard_normal(A).astype(np.float32)
    scores = additive_scores(jnp.asarray(qp), jnp.asarray(kp), jnp.asarray(v_a))
    for b in range(B):
        for i in range(TQ):
            for j in range(TK):
                expected = v_a @ np.tanh(qp[b, i] + kp[b, j])  # v_a^T tanh(W_a s + U_a h)
                np.testing.assert_allclose(scores[b, i, j], expected, rtol=1e-5, atol=1e-5)
    context, weights = additive_attention(
        jnp.asarray(qp), jnp.asarray(kp), jnp.asarray(V), jnp.asarray(v_a), KEY_MASK
    )
    w_ref = softmax_ref(np.asarray(scores, np.float64), KEY_MASK[:, None, :])
    np.testing.assert_allclose(weights, w_ref, atol=1e-6)
    np.testing.assert_allclose(context, w_ref @ V, atol=1e-5)


@pytest.fixture(scope="module")
def module_and_params():
    model = AdditiveAttention(A)
    params = model.init(jax.random.key(0), jnp.asarray(Q[:, 0]), jnp.asarray(K), KEY_MASK)
    return model, params


def test_module_by_hand(module_and_params):
    model, params = module_and_params
    p = params["params"]
    assert set(p) == {"query", "key", "v"}  # W_a, U_a, v_a; no biases, as in appendix A.1.2
    w_a, u_a, v_a = (
        np.asarray(x, np.float64) for x in (p["query"]["kernel"], p["key"]["kernel"], p["v"])
    )
    context, weights = model.apply(params, jnp.asarray(Q), jnp.asarray(K), KEY_MASK)
    scores = np.tanh((Q @ w_a)[:, :, None, :] + (K @ u_a)[:, None, :, :]) @ v_a
    w_ref = softmax_ref(scores, KEY_MASK[:, None, :])
    np.testing.assert_allclose(weights, w_ref, atol=1e-6)
    np.testing.assert_allclose(context, w_ref @ K, atol=1e-5)  # keys are the values (h_j)


def test_single_query_and_precomputed_keys(module_and_params):
    model, params = module_and_params
    ctx_seq, w_seq = model.apply(params, jnp.asarray(Q), jnp.asarray(K), KEY_MASK)
    keys = model.apply(params, jnp.asarray(K), method="project_keys")
    for i in range(TQ):
        # One decoder step with U_a h_j computed once per sequence equals the full computation.
        ctx, w = model.apply(
            params, jnp.asarray(Q[:, i]), jnp.asarray(K), KEY_MASK, projected_keys=keys
        )
        assert ctx.shape == (B, D) and w.shape == (B, TK)
        np.testing.assert_allclose(w, w_seq[:, i], atol=1e-6)
        np.testing.assert_allclose(ctx, ctx_seq[:, i], atol=1e-6)


def test_padding_keys_changes_nothing(module_and_params):
    model, params = module_and_params
    ctx, w = model.apply(params, jnp.asarray(Q), jnp.asarray(K), KEY_MASK)
    extra = RNG.standard_normal((B, 4, D)).astype(np.float32) * 10
    k2 = np.concatenate([K, extra], axis=1)
    m2 = np.concatenate([KEY_MASK, np.zeros((B, 4), bool)], axis=1)
    ctx2, w2 = model.apply(params, jnp.asarray(Q), jnp.asarray(k2), m2)
    np.testing.assert_allclose(ctx2, ctx, atol=1e-6)
    np.testing.assert_allclose(w2[..., :TK], w, atol=1e-6)
    np.testing.assert_array_equal(w2[..., TK:], 0.0)
