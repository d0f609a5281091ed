"""Presets: a model's variant name decoded by its table, then the config's fields on top."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def preset_kwargs(
    table: Mapping[str, Mapping[str, Any]],
    kind: str,
    variant: str | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The fields of `table[variant]` (none for variant None) updated by the overrides that are
    not None (None in a config means "unset": the preset's or the class default stays).

    Raises:
      ValueError: unknown variant, in one line naming `kind` and the valid variants.
    """
    if variant is None:
        kwargs: dict[str, Any] = {}
    elif variant in table:
        kwargs = dict(table[variant])
    else:
        raise ValueError(f"unknown {kind} variant {variant!r}; valid variants: {sorted(table)}")
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return kwargs
