"""Named attention functions: the one place a new attention reaches every model from.

An attention function has the signature of `dot_product.scaled_dot_product_attention`:

    fn(q, k, v, *, mask, bias, dropout_rate, dropout_rng, deterministic, return_weights,
       implementation, is_causal) -> out  or  (out, weights)

with q, k, v [B, T, H, Dh], masks and biases broadcastable to [B, H, Tq, Tk] (True = may attend),
and returns [B, Tq, H, Dv] (plus the weights [B, H, Tq, Tk] when `return_weights`). Registered
under a name, it is what `MultiHeadAttention(attention_fn=name)` and
`WindowAttention(attention_fn=name)` call, and so what a model config selects with
`model.attention_fn=<name>` in ViT, Swin, DETR, CLIP, the Transformer, SETR, SimMIM and MAE:

    @register_attention("tempered")
    def tempered(q, k, v, **kwargs):
        return scaled_dot_product_attention(q / 2.0, k, v, **kwargs)

The function receives `implementation` (the model's `attention_impl`) and may pass it on to
`scaled_dot_product_attention`, which chooses the path (docs/extending.md walks through it).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from attn_jax.attention.dot_product import AttentionConfigError, scaled_dot_product_attention

AttentionFn = Callable[..., Any]
DEFAULT_ATTENTION = "dot_product"

_ATTENTION_FNS: dict[str, AttentionFn] = {DEFAULT_ATTENTION: scaled_dot_product_attention}


def register_attention(name: str) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator that registers an attention function under `name` (module docstring).

    Raises:
      ValueError: `name` is already taken by another function.
    """

    def register(fn: AttentionFn) -> AttentionFn:
        if _ATTENTION_FNS.get(name, fn) is not fn:
            raise ValueError(f"attention function {name!r} is already registered")
        _ATTENTION_FNS[name] = fn
        return fn

    return register


def attention_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_ATTENTION_FNS)


def check_attention_fn(attention_fn: str | AttentionFn | None) -> None:
    """Raises AttentionConfigError (one line, the valid names) for an unregistered name."""
    if isinstance(attention_fn, str) and attention_fn not in _ATTENTION_FNS:
        near = difflib.get_close_matches(attention_fn, _ATTENTION_FNS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise AttentionConfigError(
            f"unknown model.attention_fn {attention_fn!r}{hint}: registered attention functions "
            f"are {attention_names()} (attn_jax.attention.registry.register_attention adds one)"
        )


def get_attention(attention_fn: str | AttentionFn | None) -> AttentionFn:
    """The function registered as `attention_fn`, a callable as it is, None as the default."""
    if attention_fn is None:
        return _ATTENTION_FNS[DEFAULT_ATTENTION]
    if callable(attention_fn):
        return attention_fn
    check_attention_fn(attention_fn)
    return _ATTENTION_FNS[attention_fn]


__all__ = [
    "DEFAULT_ATTENTION",
    "attention_names",
    "check_attention_fn",
    "get_attention",
    "register_attention",
]
