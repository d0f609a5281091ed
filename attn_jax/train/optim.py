"""Optimizers from config: adamw / adam / sgd(momentum), warmup then cosine/linear/constant/step
decay, global-norm clipping, weight decay only on kernels (not biases, norms, embeddings' scales)
unless `weight_decay_mask="all"`, gradient accumulation, and per-parameter learning-rate
multipliers that can freeze parameters.

`optim.lr_multipliers` maps parameter-path prefixes to factors of the learning rate, e.g. DETR's
{"backbone": 0.1, "backbone/stem": 0.0, "backbone/stage1": 0.0}. A path is the parameter's keys
joined by "/" ("backbone/stage1_block0/conv1/kernel"); a pattern applies to every path that starts
with it as a string, and the longest matching pattern wins; other parameters keep factor 1. A
factor of 0 freezes: the parameter gets no update, no weight decay, no optimizer state (optax's
set_to_zero inside multi_transform) and no share of the clipped gradient norm (its gradient is
zeroed before clipping, as torch's clip_grad_norm_ skips parameters without gradients). With
gradient accumulation, optax.MultiSteps still keeps an accumulator for frozen parameters.

`schedule="step"` keeps `lr` and multiplies it by `lr_drop_factor` (0.1) once
`lr_drop_fraction` (2/3) of the updates after the warmup are done: DETR's 200 of 300 epochs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from attn_jax.config import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "noam", "step")
WEIGHT_DECAY_MASKS = ("kernels", "all")


def noam_schedule(scale: float, d_model: int, warmup_steps: int) -> optax.Schedule:
    """Vaswani et al. 2017, eq. 3: lrate = d_model^-0.5 * min(n^-0.5, n * warmup^-1.5), times
    `scale` (1 in the paper). n counts from 1 as in the paper; optax counts updates from 0."""
    warmup = max(int(warmup_steps), 1)

    def schedule(count):
        n = jnp.asarray(count, jnp.float32) + 1.0
        return scale * d_model**-0.5 * jnp.minimum(n**-0.5, n * warmup**-1.5)

    return schedule


def step_schedule(lr: float, drop_step: int, factor: float = 0.1) -> optax.Schedule:
    """lr until `drop_step` updates are done, lr * factor from then on (torch's StepLR with one
    drop, DETR's `lr_drop`)."""

    def schedule(count):
        return jnp.where(jnp.asarray(count) >= drop_step, lr * factor, lr)

    return schedule


def learning_rate_schedule(optim_cfg: Mapping, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then the named decay to lr * end_factor."""
    lr = float(optim_cfg["lr"])
    warmup = int(optim_cfg.get("warmup_steps", 0))
    kind = optim_cfg.get("schedule", "cosine")
    if kind == "noam":  # warms up and decays by itself; `lr` is the paper's (unit) scale
        if not optim_cfg.get("d_model"):
            raise ValueError("optim.schedule 'noam' needs optim.d_model (the model width)")
        return noam_schedule(lr, int(optim_cfg["d_model"]), warmup)
    end = lr * float(optim_cfg.get("end_lr_factor", 0.0))
    decay_steps = max(total_steps - warmup, 1)
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif kind == "constant":
        decay = optax.constant_schedule(lr)
    elif kind == "step":
        decay = step_schedule(
            lr,
            drop_step=round(float(optim_cfg.get("lr_drop_fraction", 2 / 3)) * decay_steps),
            factor=float(optim_cfg.get("lr_drop_factor", 0.1)),
        )
    else:
        raise ValueError(f"unknown optim.schedule {kind!r}; choose one of {SCHEDULES}")
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def weight_decay_mask(params) -> object:
    """True for the leaves that get weight decay: kernels and embeddings, never biases or norms.

    Decaying LayerNorm scales and biases pulls them toward 0 rather than toward their identity
    value, which is why ViT/BERT-style recipes exclude them; rank >= 2 selects kernels, embeddings
    and position tables.
    """
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def param_path(path: tuple[Any, ...]) -> str:
    """'backbone/stem_conv/kernel' for a key path of `jax.tree_util.tree_flatten_with_path`."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _check_multipliers(multipliers: Mapping[str, Any]) -> dict[str, float]:
    checked = {}
    for pattern, factor in multipliers.items():
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 0:
            raise ConfigError(
                f"optim.lr_multipliers[{pattern!r}] = {factor!r}: a multiplier is a number >= 0 "
                f"(0 freezes)"
            )
        checked[str(pattern)] = float(factor)
    return checked


def lr_multipliers(params: Any, multipliers: Mapping[str, float] | None) -> Any:
    """The learning-rate factor of every leaf of `params` (module docstring), as a tree of floats.

    Args:
      params: a parameter tree (arrays or `jax.ShapeDtypeStruct`s).
      multipliers: {path prefix: factor >= 0}; None or empty gives factor 1 everywhere.

    Returns:
      a tree of Python floats shaped like `params`.

    Raises:
      ConfigError: a pattern that matches no parameter, or a negative factor.
    """
    multipliers = _check_multipliers(multipliers or {})
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [param_path(path) for path, _ in leaves]
    for pattern in multipliers:
        if not any(p.startswith(pattern) for p in paths):
            example = next((p for p in paths if "/" in p), paths[0] if paths else "")
            raise ConfigError(
                f"optim.lr_multipliers pattern {pattern!r} matches no parameter; patterns are "
                f"prefixes of parameter paths such as {example!r}"
            )
    by_length = sorted(multipliers, key=len, reverse=True)
    factors = [
        next((multipliers[pat] for pat in by_length if p.startswith(pat)), 1.0) for p in paths
    ]
    return jax.tree_util.tree_unflatten(treedef, factors)


def trainable_param_count(optim_cfg: Mapping, params: Any) -> int:
    """Scalars of `params` that the optimizer of `optim_cfg` updates (factor > 0)."""
    factors = lr_multipliers(params, optim_cfg.get("lr_multipliers"))
    return sum(
        int(leaf.size)
        for leaf, factor in zip(
            jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(factors), strict=True
        )
        if factor > 0
    )


def _base_optimizer(optim_cfg: Mapping, schedule: optax.Schedule) -> optax.GradientTransformation:
    name = optim_cfg["name"]
    wd = float(optim_cfg.get("weight_decay", 0.0))
    decay_on = optim_cfg.get("weight_decay_mask", "kernels")
    if decay_on not in WEIGHT_DECAY_MASKS:
        raise ValueError(
            f"unknown optim.weight_decay_mask {decay_on!r}; choose one of {WEIGHT_DECAY_MASKS}"
        )
    # "all" is torch's AdamW/SGD default, which DETR uses: biases and norms are decayed too.
    decay_mask = None if decay_on == "all" else weight_decay_mask
    if name == "adamw":
        return optax.adamw(
            schedule,
            b1=optim_cfg.get("b1", 0.9),
            b2=optim_cfg.get("b2", 0.999),
            eps=optim_cfg.get("eps", 1e-8),
            weight_decay=wd,
            mask=decay_mask,
        )
    if name == "adam":
        return optax.adam(
            schedule,
            b1=optim_cfg.get("b1", 0.9),
            b2=optim_cfg.get("b2", 0.999),
            eps=optim_cfg.get("eps", 1e-8),
        )
    if name == "sgd":
        # Coupled L2 decay, as in the SGD recipes (ViT fine-tuning uses none).
        return optax.chain(
            optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity(),
            optax.sgd(
                schedule,
                momentum=optim_cfg.get("momentum", 0.9) or None,
                nesterov=bool(optim_cfg.get("nesterov", False)),
            ),
        )
    raise ValueError(f"unknown optim.name {name!r}; choose one of {OPTIMIZERS}")


def make_optimizer(
    optim_cfg: Mapping, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (tx, schedule) for the config group `optim`; `schedule` is the base learning rate
    (factor 1 of `lr_multipliers`).

    A pattern of `lr_multipliers` that matches no parameter raises a ConfigError when `tx.init`
    first sees the parameters.
    """
    accum = int(optim_cfg.get("grad_accum_steps", 1))
    # The schedule counts optimizer updates; with accumulation there is one per `accum` steps.
    schedule = learning_rate_schedule(optim_cfg, max(total_steps // accum, 1))
    multipliers = _check_multipliers(optim_cfg.get("lr_multipliers") or {})
    core = _base_optimizer(optim_cfg, schedule)
    frozen = None
    if multipliers:
        label = lambda factor: f"lr*{factor!r}"
        groups = {}
        for factor in sorted({1.0, *multipliers.values()}):
            if factor == 0.0:
                groups[label(factor)] = optax.set_to_zero()
            else:
                scaled = lambda count, f=factor: f * schedule(count)
                groups[label(factor)] = _base_optimizer(optim_cfg, scaled)
        core = optax.multi_transform(
            groups,
            lambda params: jax.tree_util.tree_map(label, lr_multipliers(params, multipliers)),
        )
        if 0.0 in multipliers.values():
            frozen = lambda params: jax.tree_util.tree_map(
                lambda f: f == 0.0, lr_multipliers(params, multipliers)
            )
    clip = optim_cfg.get("grad_clip_norm")
    tx = optax.chain(optax.clip_by_global_norm(clip), core) if clip else core
    if clip and frozen is not None:
        tx = optax.chain(optax.masked(optax.set_to_zero(), frozen), tx)
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx, schedule
