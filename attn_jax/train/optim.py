"""Optimizers from config: adamw / adam / sgd(momentum), warmup then cosine/linear/constant decay,
global-norm clipping, weight decay only on kernels (not biases, norms, embeddings' scales), and
gradient accumulation."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "noam")


def noam_schedule(scale: float, d_model: int, warmup_steps: int) -> optax.Schedule:
    """Vaswani et al. 2017, eq. 3: lrate = d_model^-0.5 * min(n^-0.5, n * warmup^-1.5), times
    `scale` (1 in the paper). n counts from 1 as in the paper; optax counts updates from 0."""
    warmup = max(int(warmup_steps), 1)

    def schedule(count):
        n = jnp.asarray(count, jnp.float32) + 1.0
        return scale * d_model**-0.5 * jnp.minimum(n**-0.5, n * warmup**-1.5)

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


def make_optimizer(
    optim_cfg: Mapping, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (tx, schedule) for the config group `optim`."""
    name = optim_cfg["name"]
    accum = int(optim_cfg.get("grad_accum_steps", 1))
    # The schedule counts optimizer updates; with accumulation there is one per `accum` steps.
    schedule = learning_rate_schedule(optim_cfg, max(total_steps // accum, 1))
    wd = float(optim_cfg.get("weight_decay", 0.0))
    if name == "adamw":
        core = optax.adamw(
            schedule,
            b1=optim_cfg.get("b1", 0.9),
            b2=optim_cfg.get("b2", 0.999),
            eps=optim_cfg.get("eps", 1e-8),
            weight_decay=wd,
            mask=weight_decay_mask,
        )
    elif name == "adam":
        core = optax.adam(
            schedule,
            b1=optim_cfg.get("b1", 0.9),
            b2=optim_cfg.get("b2", 0.999),
            eps=optim_cfg.get("eps", 1e-8),
        )
    elif name == "sgd":
        # Coupled L2 decay, as in the SGD recipes (ViT fine-tuning uses none).
        core = optax.chain(
            optax.add_decayed_weights(wd, mask=weight_decay_mask) if wd else optax.identity(),
            optax.sgd(
                schedule,
                momentum=optim_cfg.get("momentum", 0.9) or None,
                nesterov=bool(optim_cfg.get("nesterov", False)),
            ),
        )
    else:
        raise ValueError(f"unknown optim.name {name!r}; choose one of {OPTIMIZERS}")
    clip = optim_cfg.get("grad_clip_norm")
    tx = optax.chain(optax.clip_by_global_norm(clip), core) if clip else core
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx, schedule
