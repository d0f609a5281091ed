"""Optimizers from config: adamw / adam / sgd(momentum), warmup then cosine/linear/constant/step
decay, global-norm clipping, weight decay only on kernels and embedding tables (not biases, norms,
position tables, class/mask tokens: `weight_decay_mask`) unless `weight_decay_mask="all"`
(torch's default) or `"rank2"` (every leaf of rank >= 2, this project's rule before the by-kind
one), and per-parameter learning-rate multipliers that can freeze parameters. Gradient
accumulation is `config.microbatches` (train/loop.py), not an optimizer wrapper.

`optim.lr_multipliers` maps parameter-path prefixes to factors of the learning rate, e.g. DETR's
{"backbone": 0.1, "backbone/stem": 0.0, "backbone/stage1": 0.0}. A path is the parameter's keys
joined by "/" ("backbone/stage1_block0/conv1/kernel"); a pattern applies to every path that starts
with it as a string, and the longest matching pattern wins; other parameters keep factor 1. A
factor of 0 freezes: the parameter gets no update, no weight decay, no optimizer state (optax's
set_to_zero inside multi_transform) and no share of the clipped gradient norm (its gradient is
zeroed before clipping, as torch's clip_grad_norm_ skips parameters without gradients).

`schedule="step"` keeps `lr` and multiplies it by `lr_drop_factor` (0.1) once
`lr_drop_fraction` (2/3) of the updates after the warmup are done: DETR's 200 of 300 epochs.

`optim.layer_decay` = d (0 or absent: off) is the layer-wise learning-rate decay of BEiT (Bao,
Dong, Piao, Wei 2022, "BEiT: BERT Pre-Training of Image Transformers") that MAE's fine-tuning
recipe keeps (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners": d = 0.65 for
ViT-B, FAITHFULNESS.md section 13): in a model of L layers, layer i learns at lr * d^(L + 1 - i).
The model declares each parameter's layer id i (its `layer_index(path)` method: ViT's, Swin's,
CLIP's and the MIM encoders'); in a ViT i = 0 for the patch embedding, class token, position
embedding and mask token, i = l + 1 for encoder block l, and i = L + 1 for everything above the
blocks (final norm, pre_logits, head). It scales each leaf's finished update, which is exactly a
per-parameter-group learning rate for AdamW (Adam step and decoupled weight decay alike) and for
SGD; its factors multiply those of `lr_multipliers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attn_jax.config import RETIRED_KEYS, ConfigError
from attn_jax.models.vit import vit_layer_index

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "noam", "step")
WEIGHT_DECAY_MASKS = ("kernels", "rank2", "all")


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


# Leaves that are not kernels whatever their rank, by the name their module gives them: biases
# and norm scales; learned position embeddings and relative-position tables (timm's and Swin's
# `no_weight_decay` lists, AAConv's relative logits, DETR's object queries, which its paper
# calls learned positional encodings); class, distillation and mask tokens; CLIP's logit scale.
NO_DECAY_NAMES = frozenset(
    {
        "bias",
        "scale",
        "mlm_bias",
        "pos_embedding",
        "positional_embedding",
        "relative_position_bias_table",
        "rel_height",
        "rel_width",
        "query_embed",
        "cls",
        "class_embedding",
        "dist_token",
        "mask_token",
        "decoder_mask_token",
        "logit_scale",
    }
)


def weight_decay_mask(params) -> object:
    """True for the leaves that get weight decay: kernels and embedding tables, by kind.

    Decaying LayerNorm scales and biases pulls them toward 0 rather than toward their identity
    value, and decaying position embeddings, relative-position tables and class/mask tokens is
    what the official DeiT, Swin and MAE code avoid (their `no_weight_decay` lists). The kind is
    the leaf's name (`NO_DECAY_NAMES`), not its rank: Swin's fused qkv bias is [3, H, Dh], a
    scanned stack adds a layer axis to every bias, and a position table is rank 2 or 3. Other
    leaves decay when they are matrices or higher (kernels, nn.Embed tables, the non-local
    concatenation weight); vectors (additive attention's v, gate logits) do not.
    """

    def decays(path, leaf) -> bool:
        name = param_path(path[-1:])
        return name not in NO_DECAY_NAMES and leaf.ndim >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def rank_decay_mask(params) -> object:
    """The mask of `weight_decay_mask="rank2"`: every leaf of rank >= 2 decays (biases of
    multi-head projections, position tables and tokens included); for reproducing older runs."""
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


def _check_layer_decay(optim_cfg: Mapping) -> float:
    decay = optim_cfg.get("layer_decay") or 0.0
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay <= 1:
        raise ConfigError(
            f"optim.layer_decay = {decay!r}: the decay is a number in (0, 1] (MAE fine-tunes "
            "ViT-B with 0.65), or 0 to turn it off"
        )
    return float(decay)


LayerIndex = Callable[[str], "int | slice | None"]


def model_layer_index(model: Any) -> LayerIndex:
    """The layer-id function a model declares (its `layer_index(path)` method), or ViT's naming
    (`attn_jax.models.vit.vit_layer_index`) when no model is given.

    Raises:
      ConfigError: the model declares no layer ids.
    """
    if model is None:
        return vit_layer_index
    index = getattr(model, "layer_index", None)
    if index is None:
        raise ConfigError(
            f"optim.layer_decay: model {type(model).__name__} declares no layer ids "
            "(a layer_index method); set optim.layer_decay=0"
        )
    return index


def layer_decay_factors(params: Any, decay: float, layer_index: LayerIndex | None = None) -> Any:
    """The layer-wise learning-rate factor of every leaf of `params` (module docstring).

    Args:
      params: a parameter tree (arrays or `jax.ShapeDtypeStruct`s).
      decay: d in (0, 1].
      layer_index: path -> the leaf's layer id i (an int), None above every layer (factor 1), or
        slice(start, None) for layers stacked on the leaf's leading axis (ids start, start + 1,
        ...). The model declares it (`model_layer_index`); None reads ViT's names.

    Returns:
      a tree shaped like `params` of Python floats, except for stacked (scanned) leaves, whose
      factor is a numpy array [L, 1, ...] over the depth axis that broadcasts against the leaf.
      With L the largest id, a leaf of id i gets d^(L + 1 - i).

    Raises:
      ConfigError: the tree has no layer above 0 (no blocks).
    """
    layer_index = layer_index or vit_layer_index
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    ids = []  # per leaf: an int, an int array over the leading axis, or None
    for path, leaf in leaves:
        i = layer_index(param_path(path))
        if isinstance(i, slice):
            i = i.start + np.arange(leaf.shape[0])
        ids.append(i)
    depth = max((int(np.max(i)) for i in ids if i is not None), default=0)
    if depth == 0:
        example = max((param_path(p) for p, _ in leaves), key=lambda p: p.count("/"), default="")
        if layer_index is vit_layer_index:
            raise ConfigError(
                "optim.layer_decay needs a ViT-style encoder whose blocks are named "
                f"'encoderblock_<l>' (or 'encoderblock' with scan), but parameters such as "
                f"{example!r} have none; set optim.layer_decay=0"
            )
        raise ConfigError(
            f"optim.layer_decay found no layers in the model's parameters (e.g. {example!r}); "
            "set optim.layer_decay=0"
        )
    factors = []
    for i, (_, leaf) in zip(ids, leaves, strict=True):
        if i is None:
            factors.append(1.0)
        elif isinstance(i, np.ndarray):
            per_layer = decay ** (depth + 1 - i.astype(np.float64))
            factors.append(per_layer.reshape(-1, *([1] * (len(leaf.shape) - 1))))
        else:
            factors.append(decay ** (depth + 1 - i))
    return jax.tree_util.tree_unflatten(treedef, factors)


def scale_by_layer_decay(
    decay: float, layer_index: LayerIndex | None = None
) -> optax.GradientTransformation:
    """Multiplies each leaf's update by its `layer_decay_factors`; keeps no state.

    The factors depend only on the tree's paths and shapes, so they are recomputed at trace time
    and enter the compiled step as constants. `init` checks that the model has layers.
    """

    def init(params):
        layer_decay_factors(params, decay, layer_index)
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        factors = layer_decay_factors(updates, decay, layer_index)
        scaled = jax.tree_util.tree_map(
            lambda u, f: u * jnp.asarray(f, dtype=u.dtype), updates, factors
        )
        return scaled, state

    return optax.GradientTransformation(init, update)


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
    decay_mask = {"kernels": weight_decay_mask, "rank2": rank_decay_mask, "all": None}[decay_on]
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
    optim_cfg: Mapping, total_steps: int, model: Any = None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (tx, schedule) for the config group `optim`; `schedule` is the base learning rate
    (factor 1 of `lr_multipliers`).

    `model` (the Linen module the parameters belong to) declares the layer ids that
    `optim.layer_decay` reads (its `layer_index` method); without it, ViT's parameter names are
    read. A pattern of `lr_multipliers` that matches no parameter raises a ConfigError when
    `tx.init` first sees the parameters.
    """
    if optim_cfg.get("grad_accum_steps", 1) not in (1, None):
        # Old config.json files carry the retired key at 1; any other value would be ignored.
        raise ConfigError(
            f"config.optim.grad_accum_steps is retired; {RETIRED_KEYS['optim.grad_accum_steps'][1]}"
        )
    schedule = learning_rate_schedule(optim_cfg, total_steps)
    multipliers = _check_multipliers(optim_cfg.get("lr_multipliers") or {})
    layer_decay = _check_layer_decay(optim_cfg)
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
    if layer_decay:
        tx = optax.chain(tx, scale_by_layer_decay(layer_decay, model_layer_index(model)))
    return tx, schedule
