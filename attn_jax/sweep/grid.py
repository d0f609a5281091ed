"""The search space of a sweep, from `--sweep config.KEY=...` axes.

An axis lists values (`config.optim.lr=1e-3,3e-4`: a grid axis, a categorical choice for a
sampler) or, for the Optuna backend's random and TPE samplers only, a range
(`config.optim.lr=loguniform:1e-4:1e-2`, `uniform:0:0.3`, `int:2:8`). Values stay the strings the
user typed until the trainer coerces them, so `1e-3` reaches `--config.optim.lr=1e-3` unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import re
from collections.abc import Sequence

import ml_collections

from attn_jax import config as config_lib
from attn_jax.errors import UserError

RANGE_KINDS = ("loguniform", "uniform", "int")


class SweepError(UserError):
    """A sweep the user asked for cannot run as given; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Range:
    """A continuous (or integer) interval for a sampler: `kind` is one of RANGE_KINDS."""

    kind: str
    low: float
    high: float

    def spec(self) -> str:
        return f"{self.kind}:{self.low!r}:{self.high!r}"


def _parse_range(spec: str, text: str) -> Range | None:
    kind, _, rest = text.partition(":")
    if kind not in RANGE_KINDS or not rest:
        return None
    bounds = rest.split(":")
    try:
        low, high = (int(b) if kind == "int" else float(b) for b in bounds)
    except ValueError:
        raise SweepError(
            f"--sweep {spec}: cannot read the range; write {kind}:LOW:HIGH, e.g. "
            f"config.optim.lr=loguniform:1e-4:1e-2"
        ) from None
    if not low < high or (kind == "loguniform" and low <= 0) or not math.isfinite(high - low):
        raise SweepError(
            f"--sweep {spec}: the range needs finite LOW < HIGH (and LOW > 0 for loguniform)"
        )
    return Range(kind, low, high)


def parse_axes(
    specs: Sequence[str], *, allow_ranges: bool = False
) -> list[tuple[str, list[str] | Range]]:
    """['config.optim.lr=1e-3,3e-4', ...] -> [('optim.lr', ['1e-3', '3e-4']), ...].

    Args:
      specs: the `--sweep` arguments, with or without the leading `--`.
      allow_ranges: accept `KIND:LOW:HIGH` ranges (samplers); a grid needs listed values.

    Returns:
      One (config key, values or Range) pair per axis, in the order given.

    Raises:
      ConfigError, SweepError: an unreadable axis, an empty list, a key given twice, or a range
        where only listed values can run.
    """
    axes: list[tuple[str, list[str] | Range]] = []
    for spec in specs:
        key, values = config_lib.parse_override(spec if spec.startswith("--") else "--" + spec)
        if any(key == k for k, _ in axes):
            raise SweepError(f"--sweep config.{key} is given twice; list all its values in one")
        interval = _parse_range(spec, values)
        if interval is not None:
            if not allow_ranges:
                raise SweepError(
                    f"--sweep {spec} is a range, which only a sampler can draw from; list values "
                    "for a grid (config.k=v1,v2) or use --backend optuna --sampler random|tpe"
                )
            axes.append((key, interval))
            continue
        choices = [v for v in values.split(",") if v != ""]
        if not choices:
            raise config_lib.ConfigError(f"--sweep {spec} lists no values; write key=v1,v2")
        axes.append((key, choices))
    return axes


def check_keys(config: ml_collections.ConfigDict, axes: Sequence[tuple[str, object]]) -> None:
    """A misspelt key fails the whole sweep at once; a bad *value* fails only its run."""
    for key, _ in axes:
        config_lib.check_key(config, key)


def sweep_points(
    axes: list[tuple[str, list[str]]], random_points: int | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """Every combination of the axes' values (or `random_points` distinct ones, seeded)."""
    grid = [
        dict(zip([k for k, _ in axes], combo, strict=True))
        for combo in itertools.product(*[v for _, v in axes])
    ]
    if random_points:
        rng = random.Random(seed)
        grid = rng.sample(grid, min(random_points, len(grid)))
    return grid


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_name(index: int, point: dict[str, object]) -> str:
    """A workdir name that sorts by run order and says what the run changes: `003_lr=1e-3`."""
    parts = [f"{k.split('.')[-1]}={_short(v)}" for k, v in point.items()]
    return re.sub(r"[^A-Za-z0-9_.=,-]", "_", f"{index:03d}_" + ",".join(parts))


def override_args(point: dict[str, object]) -> list[str]:
    """The `--config.k=v` arguments of one point; floats keep every digit."""
    return [
        f"--config.{k}={v!r}" if isinstance(v, float) else f"--config.{k}={v}"
        for k, v in point.items()
    ]
