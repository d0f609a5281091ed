"""Recurrent cells and padding-aware recurrence over time.

Elman 1990, "Finding Structure in Time" (Cognitive Science 14), the simple recurrent network in
the notation of the attention survey this project follows:

    h^i = tau1(U^3 h^(i-1) + U^1 x^i),    o^i = tau2(U^2 h^i)

with tau1 = tanh and tau2 the identity by default (a softmax tau2 belongs to the loss). No biases,
as in the equation; `use_bias=True` adds them to U^1 and U^2.

Long short-term memory: Hochreiter & Schmidhuber 1997, "Long Short-Term Memory" (Neural
Computation 9), with the forget gate of Gers, Schmidhuber & Cummins 2000, "Learning to Forget:
Continual Prediction with LSTM":

    i = sigmoid(W_i x + R_i h + b_i)      f = sigmoid(W_f x + R_f h + b_f)
    g = tanh(W_g x + R_g h + b_g)         o = sigmoid(W_o x + R_o h + b_o)
    c' = f * c + i * g                    h' = o * tanh(c')

The four gates share one input kernel [D, 4H] and one recurrent kernel [H, 4H] (order i, f, g, o),
so a step is two matmuls; flax's `nn.LSTMCell` keeps eight per-gate Dense layers with the same
math (tests/models/test_rnn.py maps one onto the other).

Gated recurrent unit: Cho, van Merrienboer, Gulcehre, Bahdanau, Bougares, Schwenk & Bengio 2014,
"Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation"
(EMNLP 2014), in the form of Bahdanau, Cho & Bengio 2015, appendix A.1.1:

    r = sigmoid(W_r x + U_r h + b_r)      z = sigmoid(W_z x + U_z h + b_z)
    h~ = tanh(W x + U (r * h) + b)        h' = (1 - z) * h + z * h~

The reset gate acts on h before U, as in the paper; flax's `nn.GRUCell` (cuDNN's form) applies it
after U h, a different function, and names its update gate the other way round. The gates share
one input kernel [D, 3H] (order r, z, h~) and one recurrent kernel [H, 2H] (r, z); U is [H, H].

Bidirectional recurrence: Schuster & Paliwal 1997, "Bidirectional Recurrent Neural Networks"
(IEEE Trans. Signal Processing 45). Padding is handled by masking the carry: a padded step leaves
the state unchanged and outputs zeros. With right padding, the backward direction therefore meets
the padding first, keeps its initial state through it, and starts at the last real token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

CELLS = ("rnn", "lstm", "gru")

# An Elman or GRU carry is h [B, H]; an LSTM carry is (c, h), the order flax's cells use.
Carry = Any


def _stacked(init: Callable, n: int) -> Callable:
    """Initializer of [.., n * H] that applies `init` to each of the n [.., H] blocks."""

    def stacked_init(key, shape, dtype=jnp.float32):
        *lead, total = shape
        keys = jax.random.split(key, n)
        blocks = [init(k, (*lead, total // n), dtype) for k in keys]
        return jnp.concatenate(blocks, axis=-1)

    return stacked_init


class ElmanCell(nn.Module):
    """Elman step h^i = tau1(U^3 h^(i-1) + U^1 x^i); returns (h^i, o^i).

    Attributes:
      hidden_size: width of h.
      output_size: width of o^i = tau2(U^2 h^i); None returns o^i = h^i (no U^2), for models
        whose own output layer plays U^2.
      activation: tau1.
      output_activation: tau2; None = identity.
      use_bias: add biases to U^1 x and U^2 h (the equation has none).
    """

    hidden_size: int
    output_size: int | None = None
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh
    output_activation: Callable[[jax.Array], jax.Array] | None = None
    use_bias: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()
    recurrent_kernel_init: Callable = nn.initializers.orthogonal()

    @nn.compact
    def __call__(self, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        u3 = nn.Dense(
            self.hidden_size, use_bias=False, kernel_init=self.recurrent_kernel_init, name="U3"
        )
        u1 = nn.Dense(
            self.hidden_size, use_bias=self.use_bias, kernel_init=self.kernel_init, name="U1"
        )
        h = self.activation(u3(carry) + u1(x))
        if self.output_size is None:
            return h, h
        o = nn.Dense(self.output_size, use_bias=self.use_bias, name="U2")(h)
        if self.output_activation is not None:
            o = self.output_activation(o)
        return h, o

    def initial_carry(self, batch_size: int) -> jax.Array:
        """Zero state h^0 [B, H]."""
        return jnp.zeros((batch_size, self.hidden_size), jnp.float32)


class LSTMCell(nn.Module):
    """LSTM step with input, forget and output gates; carry (c, h), output h.

    Attributes:
      hidden_size: width of c and h.
      forget_bias: constant added to the forget-gate bias at initialization (0 as flax; 1 is the
        recommendation of Jozefowicz et al. 2015).
    """

    hidden_size: int
    forget_bias: float = 0.0
    kernel_init: Callable = nn.initializers.lecun_normal()
    recurrent_kernel_init: Callable = nn.initializers.orthogonal()

    @nn.compact
    def __call__(
        self, carry: tuple[jax.Array, jax.Array], x: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        c, h = carry
        n = self.hidden_size

        def bias_init(key, shape, dtype=jnp.float32):
            return jnp.zeros(shape, dtype).at[n : 2 * n].set(self.forget_bias)

        # Input and recurrent terms are summed, so one bias is enough.
        z = nn.Dense(
            4 * n, use_bias=False, kernel_init=_stacked(self.kernel_init, 4), name="input"
        )(x)
        z = z + nn.Dense(
            4 * n,
            use_bias=True,
            kernel_init=_stacked(self.recurrent_kernel_init, 4),
            bias_init=bias_init,
            name="recurrent",
        )(h)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    def initial_carry(self, batch_size: int) -> tuple[jax.Array, jax.Array]:
        """Zero state (c^0, h^0), each [B, H]."""
        zeros = jnp.zeros((batch_size, self.hidden_size), jnp.float32)
        return zeros, zeros


class GRUCell(nn.Module):
    """Gated recurrent unit step (module docstring); carry h, output h.

    Attributes:
      hidden_size: width of h.
    """

    hidden_size: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    recurrent_kernel_init: Callable = nn.initializers.orthogonal()

    @nn.compact
    def __call__(self, carry: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        n = self.hidden_size
        xs = nn.Dense(3 * n, kernel_init=_stacked(self.kernel_init, 3), name="input")(x)
        x_r, x_z, x_h = jnp.split(xs, 3, axis=-1)
        gates = nn.Dense(
            2 * n,
            use_bias=False,
            kernel_init=_stacked(self.recurrent_kernel_init, 2),
            name="recurrent_gates",
        )(carry)
        r = jax.nn.sigmoid(x_r + gates[..., :n])
        z = jax.nn.sigmoid(x_z + gates[..., n:])
        u = nn.Dense(n, use_bias=False, kernel_init=self.recurrent_kernel_init, name="recurrent")
        candidate = jnp.tanh(x_h + u(r * carry))
        h = (1.0 - z) * carry + z * candidate
        return h, h

    def initial_carry(self, batch_size: int) -> jax.Array:
        """Zero state h^0 [B, H]."""
        return jnp.zeros((batch_size, self.hidden_size), jnp.float32)


def make_cell(cell: str, hidden_size: int, **kwargs: Any) -> nn.Module:
    """The cell named `cell` ("rnn" = Elman, "lstm", "gru")."""
    if cell == "rnn":
        return ElmanCell(hidden_size, **kwargs)
    if cell == "lstm":
        return LSTMCell(hidden_size, **kwargs)
    if cell == "gru":
        return GRUCell(hidden_size, **kwargs)
    raise ValueError(f"cell={cell!r} is not one of {list(CELLS)}")


def hidden_state(carry: Carry) -> jax.Array:
    """h of a carry: the carry itself for an Elman or GRU cell, the second entry for an LSTM."""
    return carry[1] if isinstance(carry, tuple) else carry


def _masked_step(cell: nn.Module, carry: Carry, xs: tuple[jax.Array, jax.Array]):
    x, valid = xs
    new_carry, y = cell(carry, x)
    keep = valid[:, None]
    # A padded step must leave the state as it was, so that the final carry is the state at the
    # last real token and a reverse scan starts there.
    carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
    return carry, jnp.where(keep, y, jnp.zeros_like(y))


def scan_cell(
    cell: nn.Module,
    carry: Carry,
    inputs: jax.Array,
    valid: jax.Array | None = None,
    *,
    reverse: bool = False,
) -> tuple[Carry, jax.Array]:
    """Runs `cell` over the time axis with `nn.scan`, skipping padded steps.

    Args:
      cell: a bound cell module, called as cell(carry, x_t) -> (carry, y_t).
      carry: initial state.
      inputs: [B, T, D].
      valid: bool [B, T], True at real steps; None = all real.
      reverse: run from t = T-1 down to 0 (outputs stay aligned with the inputs).

    Returns:
      (carry after the last real step in scan order, outputs [B, T, H] with zeros at padding).
    """
    if valid is None:
        valid = jnp.ones(inputs.shape[:2], bool)
    scan = nn.scan(
        _masked_step,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=1,
        out_axes=1,
        reverse=reverse,
    )
    return scan(cell, carry, (inputs, jnp.asarray(valid, bool)))


class RNN(nn.Module):
    """One recurrent layer over a padded sequence; params live under 'cell'.

    Attributes:
      cell: "rnn" (Elman), "lstm" or "gru".
      hidden_size: state width.
      reverse: process the sequence from its end (the last real token first).
    """

    cell: str
    hidden_size: int
    reverse: bool = False

    @nn.compact
    def __call__(
        self, inputs: jax.Array, valid: jax.Array | None = None, initial_carry: Carry = None
    ) -> tuple[Carry, jax.Array]:
        """Args: inputs [B, T, D], valid bool [B, T] (None = all real), initial_carry (None =
        zeros). Returns (final carry, outputs [B, T, H], zero at padded steps)."""
        cell = make_cell(self.cell, self.hidden_size, name="cell")
        if initial_carry is None:
            initial_carry = cell.initial_carry(inputs.shape[0])
        return scan_cell(cell, initial_carry, inputs, valid, reverse=self.reverse)


class Bidirectional(nn.Module):
    """Forward and backward layers; outputs [forward_t; backward_t] per position.

    Attributes:
      cell: "rnn", "lstm" or "gru", both directions.
      hidden_size: state width of each direction.
    """

    cell: str
    hidden_size: int

    @nn.compact
    def __call__(
        self, inputs: jax.Array, valid: jax.Array | None = None
    ) -> tuple[jax.Array, tuple[Carry, Carry]]:
        """Args: inputs [B, T, D], valid bool [B, T] (real tokens first, then padding).

        Returns:
          (outputs [B, T, 2H] with zeros at padding, (forward carry at the last real token,
          backward carry at position 0)).
        """
        fwd_carry, fwd = RNN(self.cell, self.hidden_size, name="forward")(inputs, valid)
        bwd_carry, bwd = RNN(self.cell, self.hidden_size, reverse=True, name="backward")(
            inputs, valid
        )
        return jnp.concatenate([fwd, bwd], axis=-1), (fwd_carry, bwd_carry)


__all__ = [
    "CELLS",
    "RNN",
    "Bidirectional",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "hidden_state",
    "make_cell",
    "scan_cell",
]
