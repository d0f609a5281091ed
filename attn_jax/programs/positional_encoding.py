"""The sinusoidal positional encoding of Vaswani et al. 2017, "Attention Is All You Need", sec.
3.5 (`attn_jax.attention.positional.sinusoidal_position_encoding`), drawn as the chapter draws it.

PE(pos, 2i) = sin(pos w_i), PE(pos, 2i + 1) = cos(pos w_i), w_i = 1 / 10000^(2i / d). The dot
product of two positions is

    PE(p) . PE(q) = sum_i [sin(p w_i) sin(q w_i) + cos(p w_i) cos(q w_i)] = sum_i cos((q - p) w_i),

a function of the offset q - p alone: the matrix of dot products is Toeplitz (constant along each
diagonal), symmetric in the offset, largest (d / 2) at offset 0 and falling off with |q - p|. That
is the relative-position structure sec. 3.5 gives as the reason for the choice ("PE_{pos+k} can
be represented as a linear function of PE_{pos}").

Writes into `<workdir>/plots/`: positional_encoding.png (heat map position x dimension, the
dot-product matrix, the dot product against the offset) and positional_encoding.txt (its caption).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from attn_jax.attention.positional import sinusoidal_position_encoding
from attn_jax.errors import UserError
from attn_jax.figures.chapter import plot_positional_encoding

FIGURE = "positional_encoding.png"


class PositionalEncodingConfigError(UserError, ValueError):
    """A bad field of the positional-encoding figure's config; one line."""


def positional_encoding_arrays(length: int, d_model: int) -> dict[str, np.ndarray]:
    """What the figure draws (d_model even: an odd width ends with a lone sine channel, whose
    products sin(p w) sin(q w) depend on p and q, not on q - p alone).

    Returns:
      {"encoding" [L, D], "dot_products" [L, L], "offsets" [2L - 1] (-(L - 1) .. L - 1),
       "offset_dot" [2L - 1] (PE(i) . PE(i + k) from the closed form sum_i cos(k w_i))}.
    """
    pe = np.asarray(sinusoidal_position_encoding(length, d_model), np.float64)
    offsets = np.arange(-(length - 1), length)
    # one frequency per (sin, cos) channel pair
    rates = 1.0 / np.power(10_000.0, np.arange(0, d_model, 2) / d_model)
    offset_dot = np.cos(offsets[:, None] * rates[None, :]).sum(-1)
    return {
        "encoding": pe,
        "dot_products": pe @ pe.T,
        "offsets": offsets,
        "offset_dot": offset_dot,
    }


def toeplitz_deviation(matrix: np.ndarray) -> float:
    """The largest |M[i, j] - M[i + 1, j + 1]| relative to the largest |M|: 0 for a Toeplitz
    matrix."""
    matrix = np.asarray(matrix)
    return float(np.abs(matrix[1:, 1:] - matrix[:-1, :-1]).max() / np.abs(matrix).max())


def run(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Draws the figure. Config fields: `length` (positions), `d_model` (dimensions).

    Returns:
      {"files": paths written, "length", "d_model", "toeplitz_deviation" (`toeplitz_deviation` of
       the float32 table's dot products), "max_dot" (at offset 0: d_model / 2)}.
    """
    length, d_model = int(config.get("length", 64)), int(config.get("d_model", 128))
    if length < 2 or d_model < 2 or d_model % 2:
        raise PositionalEncodingConfigError(
            f"length={length} must be at least 2 and d_model={d_model} an even number >= 2 "
            "(sin and cos channels in pairs)"
        )
    arrays = positional_encoding_arrays(length, d_model)
    out = Path(workdir) / "plots"
    deviation = toeplitz_deviation(arrays["dot_products"])
    caption = (
        f"Sinusoidal positional encoding (Vaswani et al. 2017, sec. 3.5), {length} positions x "
        f"{d_model} dimensions. Left: PE(pos, i). Middle: the dot products PE(i) . PE(j) depend "
        f"only on j - i (Toeplitz: constant along each diagonal to {deviation:.0e} of the largest "
        "value, float32 rounding). Right: "
        "the dot product against the offset."
    )
    png = plot_positional_encoding(arrays, out / FIGURE, caption)
    text = out / FIGURE.replace(".png", ".txt")
    text.write_text(caption + "\n")
    return {
        "files": [str(png), str(text)],
        "length": length,
        "d_model": d_model,
        "toeplitz_deviation": deviation,
        "max_dot": float(arrays["dot_products"].max()),
    }
