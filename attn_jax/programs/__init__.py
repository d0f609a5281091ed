"""Experiments that train nothing: analyses chosen by name from a config's `program` field.

`python launch.py run --config experiments/saliency_photos.py` loads the config, looks its
`program` up in `PROGRAMS` and calls it with the config and the workdir; a program writes into the
workdir (the launcher has already saved `config.json` there) and returns a dict of results, which
the launcher prints as its one JSON line. A config for a program needs no trainer keys (batch size,
steps, optimizer), only `experiment`, `program` and what the program reads.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ml_collections

from attn_jax import config as config_lib
from attn_jax.errors import UserError
from attn_jax.programs import normalization, positional_encoding, saliency_photos


class ProgramError(UserError, ValueError):
    """A program config the user can fix; the message is one line."""


Program = Callable[[ml_collections.ConfigDict, Path], dict[str, Any]]

PROGRAMS: dict[str, Program] = {
    "saliency": saliency_photos.run,
    "positional_encoding": positional_encoding.run,
    "normalization": normalization.run,
}


def load_program_config(
    path: str | Path, overrides: Iterable[str] = ()
) -> ml_collections.ConfigDict:
    """Imports an experiment file, checks that it names a known program, applies overrides.

    Raises:
      ProgramError / ConfigError: no such file, no `get_config()`, no or an unknown `program`,
        or a bad `--config.k=v` override.
    """
    config = config_lib.import_config(path)
    if "program" in config:
        config_lib.apply_overrides(config, overrides)
    name = config.get("program")
    if name is None:
        raise ProgramError(
            f"{path} sets no `program`, so it is a training experiment; run it with "
            f"`python launch.py train --config {path}`"
        )
    if name not in PROGRAMS:
        near = difflib.get_close_matches(str(name), PROGRAMS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ProgramError(f"unknown program {name!r}; known programs: {sorted(PROGRAMS)}{hint}")
    return config


def run_program(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Saves `config.json` into the workdir and runs the config's program there."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    program = PROGRAMS[config.program]
    config_lib.save(config, workdir / "config.json")
    return {"program": config.program, **program(config, workdir)}


__all__ = ["PROGRAMS", "ProgramError", "load_program_config", "run_program"]
