"""Evaluators chosen by name in the config, each on its own split and period.

    config.evals = {
        "validation": {"split": "train[90%:]", "every": 300},   # the best checkpoint is chosen here
        "test": {"split": "test", "every": 300, "type": "classification"},
    }

The name of an evaluator prefixes its metrics ("validation/accuracy") and is the `split` field of
its rows in metrics.jsonl; `split` is any tfds split expression of the dataset; `every` is its
period in steps (0: only at the end of training); `type` names what it measures. A task measures
its own kind of problem (its `eval_sums`/`finalize`, exact over padded batches and any number of
devices), and declares its type in `evaluation` ("classification", "exact_match", "coco", "miou",
"zero_shot", "reconstruction", "masked_tokens", "reinforce"): an evaluator of another type is a
one-line config error, and "task" (the default) takes the task's own. The loop knows none of them
by name: it asks each evaluator whether it is due and records the (name, value) pairs it yields.

Without "every" an evaluator runs every `config.eval_every` steps, so that one override changes
them all; `--config.evals.<name>.<key>=v` sets one evaluator's key, or adds an evaluator.

A config without `evals` (an older config.json) has one evaluator named after its
`data.eval_split`, on that split, every `eval_every` steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from attn_jax.errors import UserError


class EvaluatorConfigError(UserError, ValueError):
    """A `config.evals` entry that cannot work; one line naming the key and the fix."""


TYPES = (
    "task",
    "classification",
    "exact_match",
    "coco",
    "miou",
    "zero_shot",
    "reconstruction",
    "masked_tokens",
    "reinforce",
    "jigsaw",
    "colorization",
    "nsp_mlm",
)
# The keys of one evaluator; `--config.evals.<name>.<key>=v` may add any of them.
EVALUATOR_KEYS = ("split", "every", "type", "batch_size")


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """One named evaluation: which split, how often, at which batch size."""

    name: str
    split: str
    every: int
    type: str
    batch_size: int

    def due(self, step: int, total_steps: int) -> bool:
        """Whether this evaluator runs after training step `step` (always after the last)."""
        return step == total_steps or (self.every > 0 and step % self.every == 0)

    def named(self, metrics: Mapping[str, float]) -> dict[str, float]:
        return {f"{self.name}/{k}": v for k, v in metrics.items()}


def build_evaluators(config: Any, task: Any) -> list[Evaluator]:
    """The evaluators of `config` for `task`, in config order.

    Raises:
      EvaluatorConfigError: an unknown key or type, a type the task does not measure, a name with
        a '/', a negative period, or no evaluator at all.
    """
    batch_size = int(config.get("eval_batch_size") or config.batch_size)
    evals = config.get("evals")
    if evals is None:  # older configs: one evaluator on data.eval_split
        split = config.data.eval_split
        return [Evaluator(split, split, int(config.eval_every), "task", batch_size)]
    if not len(evals):
        raise EvaluatorConfigError(
            "config.evals is empty; give at least one evaluator, e.g. "
            "--config.evals.test.split=test"
        )
    kind = getattr(task, "evaluation", "task")
    out = []
    for name, spec in evals.items():
        spec = dict(spec)
        unknown = sorted(set(spec) - set(EVALUATOR_KEYS))
        if unknown:
            raise EvaluatorConfigError(
                f"config.evals.{name} has unknown keys {unknown}; its keys are "
                f"{', '.join(EVALUATOR_KEYS)}"
            )
        if "/" in name or not name:
            raise EvaluatorConfigError(
                f"config.evals name {name!r} must be a plain word (it prefixes metric names)"
            )
        if "split" not in spec:
            raise EvaluatorConfigError(
                f"config.evals.{name} names no split; set config.evals.{name}.split"
            )
        etype = spec.get("type") or "task"
        if etype not in TYPES:
            raise EvaluatorConfigError(
                f"config.evals.{name}.type {etype!r} is unknown; types: {', '.join(TYPES)}"
            )
        if etype != "task" and etype != kind:
            raise EvaluatorConfigError(
                f"config.evals.{name}.type {etype!r} does not fit the task, which measures "
                f"{kind!r}; set config.evals.{name}.type={kind} (or task)"
            )
        every = int(spec.get("every", config.get("eval_every", 0)) or 0)
        if every < 0:
            raise EvaluatorConfigError(f"config.evals.{name}.every must be >= 0; got {every}")
        size = int(spec.get("batch_size") or batch_size)
        out.append(Evaluator(name, str(spec["split"]), every, etype, size))
    return out


def target_evaluator(evaluators: list[Evaluator], target_metric: str) -> Evaluator | None:
    """The evaluator whose metrics `target_metric` ("<name>/<metric>") is one of."""
    head = target_metric.split("/", 1)[0]
    return next((e for e in evaluators if e.name == head), None)
