"""Variants: a model family's named presets, one table per family citing the paper's table, and
the one function that decodes a variant name with a config's fields on top.

    VIT_VARIANTS = VariantTable(
        "ViT", "Dosovitskiy et al. 2021, Table 1", presets={"B/16": {...}, ...},
        sizes={"B": {...}}, suffixes={"gap": {...}},
    )
    kwargs = VIT_VARIANTS.decode("B/32", {"num_classes": 10})

A table is a read-only mapping from preset name to fields. Families whose papers name a size and
a patch separately (ViT's "B/16") also give `sizes` (and optional `suffixes`), and any
"<size>/<patch>[-suffix]..." decodes, e.g. "S/8-gap", without being a preset; the presets are the
names whose published parameter counts tests/models/test_param_counts.py asserts.

Overrides whose value is None leave the preset's (or the class default) in place, since a config
leaves a field unset with None; a Mapping override merges into the preset's Mapping (a nested
sub-model config such as SETR's `encoder`) instead of replacing it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

_SIZE_PATCH = re.compile(r"(?P<size>[^/]+)/(?P<patch>\d+)(?P<suffixes>(?:-[a-z]+)*)")


def merge_fields(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by the `overrides` that are not None, Mapping values merged recursively."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = merge_fields(merged[key], value)
        elif isinstance(value, Mapping):
            value = merge_fields({}, value)
        merged[key] = value
    return merged


@dataclasses.dataclass(frozen=True)
class VariantTable(Mapping):
    """The presets of one model family (module docstring).

    Attributes:
      kind: the family's name in error messages ("ViT", "swin").
      source: where the presets come from (the paper and its table).
      presets: {variant name: constructor fields}.
      sizes: for "<size>/<patch>" names, {size: fields}; the patch goes to `patch_field`.
      suffixes: for "-<suffix>" endings of such names, {suffix: fields}.
      patch_field: the field that receives <patch>.
    """

    kind: str
    source: str
    presets: Mapping[str, Mapping[str, Any]]
    sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    suffixes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    patch_field: str = "patch_size"

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self.presets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.presets)

    def __len__(self) -> int:
        return len(self.presets)

    def __hash__(self) -> int:
        return hash((self.kind, self.source))

    def fields(self, variant: str) -> dict[str, Any] | None:
        """The fields of `variant` (a preset or a "<size>/<patch>[-suffix]" name), else None."""
        if variant in self.presets:
            return dict(self.presets[variant])
        match = _SIZE_PATCH.fullmatch(variant) if self.sizes else None
        if match is None or match["size"] not in self.sizes:
            return None
        fields = dict(self.sizes[match["size"]], **{self.patch_field: int(match["patch"])})
        for suffix in filter(None, match["suffixes"].split("-")):
            if suffix not in self.suffixes:
                return None
            fields.update(self.suffixes[suffix])
        return fields

    def decode(self, variant: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor fields of `variant` (None: none) updated by `overrides`.

        Raises:
          ValueError: an unknown variant, in one line naming the valid ones.
        """
        if variant is None:
            return merge_fields({}, overrides)
        fields = self.fields(variant)
        if fields is None:
            grammar = ""
            if self.sizes:
                ends = "".join(f"[-{s}]" for s in self.suffixes)
                grammar = f" or '<size>/<patch>{ends}' with size in {list(self.sizes)}"
            raise ValueError(
                f"unknown {self.kind} variant {variant!r}; valid variants: {sorted(self)}{grammar}"
            )
        return merge_fields(fields, overrides)


def check_fields(module: type, fields: Mapping[str, Any], where: str) -> None:
    """Raises a one-line ValueError naming the keys of `fields` that `module` (a Linen module
    class) has no field for, e.g. a Swin field in the ViT encoder config of a SETR."""
    valid = [f.name for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    unknown = sorted(set(fields) - set(valid) - {"variant"})
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} in {where} (a {module.__name__}); valid fields: {valid}"
        )


def preset_kwargs(
    table: VariantTable, variant: str | None, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """`table.decode(variant, overrides)`: the one decoder every model's `*_kwargs` calls."""
    return table.decode(variant, overrides)


__all__ = ["VariantTable", "check_fields", "merge_fields", "preset_kwargs"]
