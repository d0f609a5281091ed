"""Recurrent cells (Elman 1990; LSTM with forget gate) and the padding-aware scan over time."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models.rnn import (
    RNN,
    Bidirectional,
    ElmanCell,
    GRUCell,
    LSTMCell,
    hidden_state,
    make_cell,
    scan_cell,
)

B, T, D, H = 3, 6, 4, 5
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((B, T, D), np.float32))
# Real steps first, then padding; row 2 has a single real step.
LENGTHS = np.array([6, 4, 1])
VALID = jnp.asarray(np.arange(T)[None, :] < LENGTHS[:, None])


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def cell_params(cell: nn.Module, seed: int = 0):
    return cell.init(jax.random.key(seed), cell.initial_carry(B), X[:, 0])["params"]


def test_elman_equation_by_hand():
    cell = ElmanCell(H, output_size=7, output_activation=jax.nn.relu)
    params = cell_params(cell)
    u1, u2, u3 = (np.asarray(params[n]["kernel"], np.float64) for n in ("U1", "U2", "U3"))
    assert set(params) == {"U1", "U2", "U3"}  # no biases, as in the equation
    h_prev = RNG.standard_normal((B, H))
    x = np.asarray(X[:, 2], np.float64)
    h, o = cell.apply({"params": params}, jnp.asarray(h_prev, jnp.float32), X[:, 2])
    h_ref = np.tanh(h_prev @ u3 + x @ u1)  # h^i = tau1(U^3 h^(i-1) + U^1 x^i)
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    np.testing.assert_allclose(o, np.maximum(h_ref @ u2, 0.0), atol=1e-5)  # o^i = tau2(U^2 h^i)


def test_elman_without_output_layer_returns_h():
    cell = ElmanCell(H)
    params = cell_params(cell)
    assert set(params) == {"U1", "U3"}
    h, o = cell.apply({"params": params}, cell.initial_carry(B), X[:, 0])
    np.testing.assert_array_equal(h, o)


def test_lstm_equals_flax_cell_with_mapped_weights():
    ours = LSTMCell(H)
    params = cell_params(ours, seed=1)
    theirs = nn.LSTMCell(features=H)
    carry = (jnp.asarray(RNG.standard_normal((B, H)), jnp.float32),) * 2
    carry = (carry[0], jnp.tanh(carry[1] * 0.5))
    flax_params = theirs.init(jax.random.key(2), carry, X[:, 0])["params"]
    # Our fused kernels are the per-gate kernels concatenated in the order i, f, g, o.
    mapped = {
        "input": {"kernel": jnp.concatenate([flax_params[f"i{g}"]["kernel"] for g in "ifgo"], 1)},
        "recurrent": {
            "kernel": jnp.concatenate([flax_params[f"h{g}"]["kernel"] for g in "ifgo"], 1),
            "bias": jnp.concatenate([flax_params[f"h{g}"]["bias"] for g in "ifgo"], 0),
        },
    }
    assert jax.tree.map(jnp.shape, mapped) == jax.tree.map(jnp.shape, params)
    # Random biases so that a gate-order mix-up in the bias cannot hide behind zeros.
    bias = jnp.asarray(RNG.standard_normal(4 * H), jnp.float32)
    mapped["recurrent"]["bias"] = bias
    for k, g in enumerate("ifgo"):
        flax_params[f"h{g}"]["bias"] = bias[k * H : (k + 1) * H]
    for t in range(3):
        (c1, h1), y1 = ours.apply({"params": mapped}, carry, X[:, t])
        (c2, h2), y2 = theirs.apply({"params": flax_params}, carry, X[:, t])
        np.testing.assert_allclose(c1, c2, atol=1e-5)
        np.testing.assert_allclose(h1, h2, atol=1e-5)
        np.testing.assert_allclose(y1, y2, atol=1e-5)
        carry = (c1, h1)


def test_lstm_equations_by_hand():
    cell = LSTMCell(H, forget_bias=1.0)
    params = cell_params(cell)
    w = np.asarray(params["input"]["kernel"], np.float64)
    r = np.asarray(params["recurrent"]["kernel"], np.float64)
    b = np.asarray(params["recurrent"]["bias"], np.float64)
    np.testing.assert_array_equal(b[H : 2 * H], 1.0)  # forget bias
    c0, h0 = RNG.standard_normal((B, H)), RNG.standard_normal((B, H))
    x = np.asarray(X[:, 1], np.float64)
    z = x @ w + h0 @ r + b
    i, f, g, o = (
        sigmoid(z[:, :H]),
        sigmoid(z[:, H : 2 * H]),
        np.tanh(z[:, 2 * H : 3 * H]),
        sigmoid(z[:, 3 * H :]),
    )
    c_ref = f * c0 + i * g
    h_ref = o * np.tanh(c_ref)
    (c, h), _ = cell.apply(
        {"params": params}, (jnp.asarray(c0, jnp.float32), jnp.asarray(h0, jnp.float32)), X[:, 1]
    )
    np.testing.assert_allclose(c, c_ref, atol=1e-5)
    np.testing.assert_allclose(h, h_ref, atol=1e-5)


def test_gru_equations_by_hand():
    # Bahdanau et al. 2015, A.1.1: the reset gate multiplies h before U.
    cell = GRUCell(H)
    params = cell_params(cell)
    assert set(params) == {"input", "recurrent_gates", "recurrent"}
    w = np.asarray(params["input"]["kernel"], np.float64)  # [D, 3H]: r, z, candidate
    b = np.asarray(params["input"]["bias"], np.float64)
    ug = np.asarray(params["recurrent_gates"]["kernel"], np.float64)  # [H, 2H]: r, z
    u = np.asarray(params["recurrent"]["kernel"], np.float64)  # [H, H]
    assert (w.shape, ug.shape, u.shape) == ((D, 3 * H), (H, 2 * H), (H, H))
    b = b + RNG.standard_normal(b.shape)  # nonzero biases, so that their place is checked
    params = {**params, "input": {**params["input"], "bias": jnp.asarray(b, jnp.float32)}}
    h0 = RNG.standard_normal((B, H))
    x = np.asarray(X[:, 3], np.float64)
    xw = x @ w + b
    r = sigmoid(xw[:, :H] + h0 @ ug[:, :H])
    z = sigmoid(xw[:, H : 2 * H] + h0 @ ug[:, H:])
    candidate = np.tanh(xw[:, 2 * H :] + (r * h0) @ u)
    h_ref = (1 - z) * h0 + z * candidate
    h, y = cell.apply({"params": params}, jnp.asarray(h0, jnp.float32), X[:, 3])
    np.testing.assert_allclose(h, h_ref, atol=1e-5)
    np.testing.assert_array_equal(h, y)
    assert hidden_state(h) is h  # a GRU carry is h itself


def python_loop(cell, params, carry, xs, valid, reverse=False):
    """Reference recurrence: one cell call per step, padded steps keep the carry."""
    outs = [None] * xs.shape[1]
    steps = range(xs.shape[1] - 1, -1, -1) if reverse else range(xs.shape[1])
    for t in steps:
        new, y = cell.apply({"params": params}, carry, xs[:, t])
        keep = np.asarray(valid[:, t])[:, None]
        carry = jax.tree.map(lambda n, o, k=keep: np.where(k, n, o), new, carry)
        outs[t] = np.where(keep, y, 0.0)
    return carry, np.stack(outs, axis=1)


class Scanned(nn.Module):
    cell: str
    reverse: bool = False

    @nn.compact
    def __call__(self, xs, valid):
        cell = make_cell(self.cell, H, name="cell")
        return scan_cell(cell, cell.initial_carry(xs.shape[0]), xs, valid, reverse=self.reverse)


@pytest.mark.parametrize(
    "cell_type, reverse",
    [("rnn", False), ("rnn", True), ("lstm", False), ("lstm", True), ("gru", True)],
)
def test_scan_equals_python_loop(cell_type, reverse):
    model = Scanned(cell_type, reverse)
    params = model.init(jax.random.key(3), X, VALID)["params"]
    carry, outs = jax.jit(model.apply)({"params": params}, X, VALID)
    cell = make_cell(cell_type, H)
    ref_carry, ref_outs = python_loop(
        cell, params["cell"], cell.initial_carry(B), X, VALID, reverse
    )
    np.testing.assert_allclose(outs, ref_outs, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, ref_carry)
    assert np.all(np.asarray(outs)[~np.asarray(VALID)] == 0.0)


def test_rnn_final_state_is_state_at_last_real_token():
    model = RNN("lstm", H)
    params = model.init(jax.random.key(4), X, VALID)
    carry, outs = model.apply(params, X, VALID)
    last = np.asarray(outs)[np.arange(B), LENGTHS - 1]
    np.testing.assert_allclose(hidden_state(carry), last, atol=1e-6)
    # Garbage in the padded inputs changes nothing.
    noisy = jnp.where(VALID[..., None], X, 100.0)
    carry2, outs2 = model.apply(params, noisy, VALID)
    np.testing.assert_array_equal(outs2, outs)
    np.testing.assert_array_equal(hidden_state(carry2), hidden_state(carry))


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_bidirectional_backward_starts_at_last_real_token(cell_type):
    model = Bidirectional(cell_type, H)
    params = model.init(jax.random.key(5), X, VALID)["params"]
    outs, (fwd_carry, bwd_carry) = model.apply({"params": params}, X, VALID)
    assert outs.shape == (B, T, 2 * H)
    cell = make_cell(cell_type, H)
    bwd_params = params["backward"]["cell"]
    for row, length in enumerate(LENGTHS):
        # The backward direction by hand: the real tokens reversed, from a zero state.
        carry = jax.tree.map(lambda a: a[:1], cell.initial_carry(1))
        reversed_real = X[row : row + 1, :length][:, ::-1]
        for step in range(length):
            carry, y = cell.apply({"params": bwd_params}, carry, reversed_real[:, step])
            position = length - 1 - step
            np.testing.assert_allclose(outs[row, position, H:], y[0], atol=1e-5)
        # backward_h_1: the backward state at position 0, after all real tokens.
        np.testing.assert_allclose(hidden_state(bwd_carry)[row], hidden_state(carry)[0], atol=1e-5)
        np.testing.assert_allclose(
            hidden_state(fwd_carry)[row], outs[row, length - 1, :H], atol=1e-6
        )
        np.testing.assert_array_equal(outs[row, length:], 0.0)


def test_unknown_cell_is_one_line_error():
    with pytest.raises(ValueError, match=r"cell='elman' is not one of \['rnn', 'lstm', 'gru'\]"):
        make_cell("elman", H)
