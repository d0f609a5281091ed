"""The generic trainer: config -> mesh -> data -> model/task -> sharded init -> resume -> loop.

One jitted, donated train step per experiment (built by `make_train_step`), data parallel over a
`data` mesh axis; the dropout key of step s is `fold_in(base_key, s)`, and the input iterator's
state is checkpointed with the train state, so a resumed run repeats exactly the computation of an
uninterrupted one. The loop never waits on the device except where it must show or save a number.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from attn_jax import config as config_lib
from attn_jax import data as data_lib
from attn_jax.models import build_model, count_params
from attn_jax.tasks import build_task
from attn_jax.train import sharding as shard_lib
from attn_jax.train.checkpoint import Checkpointer, init_params_from
from attn_jax.train.metric_writers import MetricWriter
from attn_jax.train.optim import make_optimizer
from attn_jax.train.plots import plot_curves
from attn_jax.train.state import TrainState


@dataclasses.dataclass
class Experiment:
    """What a config resolves to, before any array is allocated."""

    config: ml_collections.ConfigDict
    spec: Any  # data.DatasetSpec
    model: Any
    task: Any
    total_steps: int

    def init_inputs(self) -> tuple[jax.ShapeDtypeStruct, ...]:
        """Abstract arguments of the model for one example: what `init` traces with."""
        return self.task.init_inputs(self.spec)


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
    """Resolves data spec, model and task; raises one-line errors for bad configs."""
    spec = data_lib.dataset_info(config.data)
    model_cfg = dict(config.model)
    # Sizes the data decides unless the config pins them: classes of images, tokens of text.
    for key, value in (
        ("num_classes", spec.num_classes),
        ("vocab_size", getattr(spec, "vocab_size", None)),
        ("context_length", getattr(spec, "text_length", None)),
    ):
        if key in model_cfg and model_cfg[key] is None:
            model_cfg[key] = value
    try:
        model = build_model(model_cfg)
        task = build_task(
            config.get("task", {"name": "classification"}), num_classes=spec.num_classes
        )
        make_optimizer(config.optim, 1)
    except (ValueError, TypeError) as e:
        raise config_lib.ConfigError(str(e).splitlines()[0]) from None
    if getattr(task, "needs_vocab", False):  # e.g. BLEU detokenizes the decodings
        task.vocab = data_lib.get_vocab(config.data)
    if getattr(task, "needs_prompts", False):  # zero-shot classes from held-out templates
        task.prompts, task.class_names = data_lib.zero_shot_prompts(config.data)
    total_steps = config_lib.resolve_total_steps(config, spec.num_examples[config.data.train_split])
    return Experiment(config, spec, model, task, total_steps)


# -- compiled functions ---------------------------------------------------------------------------
def make_init_fn(model, tx, init_inputs):
    """init(key) -> TrainState; `init_inputs` are (abstract) example model arguments."""

    def init(key):
        params_key, state_key = jax.random.split(key)
        dummy = [jnp.zeros(x.shape, x.dtype) for x in init_inputs]
        variables = model.init({"params": params_key}, *dummy)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.key_data(state_key),
        )

    return init


def make_train_step(model, task, tx, schedule, mesh, state_sharding, *, microbatches: int = 1):
    """One SGD step: loss and grads, optimizer update, and metrics that stay on the device.

    With `microbatches` = k > 1 the batch is cut into k slices whose gradients are averaged in a
    `lax.scan` before the single update: the same step with about 1/k of the activation memory.
    On CPUs it is also faster once the activations outgrow the cache (benchmarks/README.md).
    """

    def grads_and_metrics(params, batch, key):
        def loss_fn(params):
            return task.loss(model, params, batch, key, train=True)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, metrics

    def split(x):
        # [B, ...] -> [k, B/k, ...] taking every k-th example, so that each device keeps its own
        # rows: the data axis stays on the (now second) batch dimension and nothing moves.
        x = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
        spec = PartitionSpec(None, "data", *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    def step(state: TrainState, batch: dict[str, jax.Array]):
        dropout_key = jax.random.fold_in(state.key, state.step)
        if microbatches == 1:
            grads, metrics = grads_and_metrics(state.params, batch, dropout_key)
        else:
            micro = {k: split(v) for k, v in batch.items()}

            def body(carry, inputs):
                i, part = inputs
                g, m = grads_and_metrics(state.params, part, jax.random.fold_in(dropout_key, i))
                return jax.tree_util.tree_map(jnp.add, carry, (g, m)), None

            first = jax.tree_util.tree_map(lambda x: x[0], micro)
            shapes = jax.eval_shape(grads_and_metrics, state.params, first, dropout_key)
            zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            sums, _ = jax.lax.scan(body, zeros, (jnp.arange(microbatches), micro))
            grads, metrics = jax.tree_util.tree_map(lambda x: x / microbatches, sums)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return jax.jit(
        step,
        in_shardings=(state_sharding, shard_lib.batch_sharding(mesh)),
        out_shardings=(state_sharding, shard_lib.replicated(mesh)),
        donate_argnums=(0,),
    )


def _evaluates_on_host(task) -> bool:
    return hasattr(task, "eval_outputs") and hasattr(task, "finalize_outputs")


def make_eval_step(model, task, mesh, params_sharding):
    """step(params, batch, sums) -> sums + the batch's `task.eval_sums`.

    A task whose metrics need every prediction on the host (COCO AP) also defines
    `eval_outputs(model, params, batch) -> dict of arrays` and `finalize_outputs(outputs, sums)`;
    the step then returns (sums, outputs), the outputs replicated so that every process holds
    those of the whole global batch.
    """
    host = _evaluates_on_host(task)

    def step(params, batch, sums):
        new = task.eval_sums(model, params, batch)
        sums = jax.tree_util.tree_map(jnp.add, sums, new)
        return (sums, task.eval_outputs(model, params, batch)) if host else sums

    return jax.jit(
        step,
        in_shardings=(params_sharding, shard_lib.batch_sharding(mesh), shard_lib.replicated(mesh)),
        out_shardings=shard_lib.replicated(mesh),
        donate_argnums=(2,),
    )


def evaluate_split(
    eval_step, model, task, params, batches: Iterator[Mapping[str, np.ndarray]], mesh
):
    """One full pass; sums (and host outputs) stay on the device until the end."""
    host = _evaluates_on_host(task)
    sums, outputs = None, []
    for batch in batches:
        batch = shard_lib.to_global(batch, shard_lib.batch_sharding(mesh))
        if sums is None:
            zeros = jax.eval_shape(lambda p, b: task.eval_sums(model, p, b), params, batch)
            sums = jax.device_put(
                jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), zeros),
                shard_lib.replicated(mesh),
            )
        if host:
            sums, out = eval_step(params, batch, sums)
            outputs.append(out)
        else:
            sums = eval_step(params, batch, sums)
    if host:
        # Padded examples (mask False) are still in the outputs: finalize_outputs drops them.
        return task.finalize_outputs(jax.device_get(outputs), jax.device_get(sums))
    return task.finalize(jax.device_get(sums))


# -- the loop -------------------------------------------------------------------------------------
def _state_shardings(init_fn, mesh):
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    sharding = jax.tree_util.tree_map(lambda _: shard_lib.replicated(mesh), abstract)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, sharding
    )
    return abstract, sharding


def _eval_batches(config, split: str):
    return data_lib.make_dataset(
        config.data,
        split,
        train=False,
        global_batch_size=config.get("eval_batch_size") or config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (or resumes) the experiment in `workdir`; returns the final metrics."""
    shard_lib.initialize_distributed(config.get("distributed", {}))
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    exp = build_experiment(config)
    mesh = shard_lib.make_mesh()
    shard_lib.check_batch_size(config.batch_size, mesh, microbatches=config.get("microbatches", 1))
    if config.get("eval_batch_size"):
        shard_lib.check_batch_size(config.eval_batch_size, mesh, key="eval_batch_size")
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)

    tx, schedule = make_optimizer(config.optim, exp.total_steps)
    init_fn = make_init_fn(exp.model, tx, exp.init_inputs())
    abstract_state, state_sharding = _state_shardings(init_fn, mesh)
    ckpt = Checkpointer(
        workdir,
        keep=config.keep_checkpoints,
        target_metric=config.target_metric,
        target_mode=config.get("target_mode", "max"),
    )

    train_ds = data_lib.make_dataset(
        config.data,
        config.data.train_split,
        train=True,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    train_iter = iter(train_ds)

    # Precedence: this workdir's checkpoint, then init_from, then a fresh init.
    start = ckpt.latest_step()
    if start is not None:
        state, data_state = ckpt.restore_state(start, abstract_state)
        train_iter.set_state(data_state)
    else:
        init_key = jax.random.key(config.seed)
        state = jax.jit(init_fn, out_shardings=state_sharding)(init_key)
        if config.get("init_from"):
            state = state.replace(params=_params_from(config, state.params, verbose=is_main))
        start = 0
    # Written only once the checkpoint (if any) is known to fit, so that a bad restart never
    # replaces the config that the workdir's checkpoints were trained with.
    if is_main:
        config_lib.save(config, workdir / "config.json")

    writer = MetricWriter(workdir, enabled=is_main, resume_step=start if start else None)
    n_params = count_params(state.params)
    if is_main:
        tqdm.write(
            f"{config.get('experiment', 'experiment')}: {n_params:,} params, "
            f"{exp.total_steps} steps of {config.batch_size} on {mesh.devices.size} device(s)"
            + (f", resuming at step {start}" if start else ""),
            file=sys.stderr,
        )

    train_step = make_train_step(
        exp.model,
        exp.task,
        tx,
        schedule,
        mesh,
        state_sharding,
        microbatches=config.get("microbatches", 1),
    )
    eval_step = make_eval_step(exp.model, exp.task, mesh, state_sharding.params)
    eval_split = config.data.eval_split
    bsharding = shard_lib.batch_sharding(mesh)

    pending: list[dict[str, jax.Array]] = []
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    t_log = time.perf_counter()
    steps_since_log = 0
    progress = tqdm(
        total=exp.total_steps,
        initial=start,
        disable=not is_main,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    )

    def run_eval(step: int) -> dict[str, float]:
        metrics = evaluate_split(
            eval_step, exp.model, exp.task, state.params, _eval_batches(config, eval_split), mesh
        )
        named = {f"{eval_split}/{k}": v for k, v in metrics.items()}
        writer.write(step, eval_split, metrics)
        ckpt.save_best(step, state.params, named)
        return named

    for step in range(start + 1, exp.total_steps + 1):
        batch = shard_lib.to_global(next(train_iter), bsharding)
        state, metrics = train_step(state, batch)
        pending.append(metrics)
        steps_since_log += 1
        if step % config.log_every == 0 or step == exp.total_steps:
            host = jax.device_get(pending)
            elapsed = time.perf_counter() - t_log
            last_train = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
            last_train["lr"] = float(host[-1]["lr"])
            last_train["step_time"] = elapsed / steps_since_log
            last_train["examples_per_sec"] = config.batch_size * steps_since_log / elapsed
            writer.write(step, "train", last_train, echo=False)
            shown = {"loss": f"{last_train['loss']:.4f}"}
            if "accuracy" in last_train:  # masked and contrastive pretraining have none
                shown["acc"] = f"{last_train['accuracy']:.3f}"
            progress.set_postfix(shown)
            pending, steps_since_log, t_log = [], 0, time.perf_counter()
        progress.update(1)
        if step % config.eval_every == 0 or step == exp.total_steps:
            last_eval = run_eval(step)
            t_log = time.perf_counter()
        if step % config.checkpoint_every == 0 or step == exp.total_steps:
            ckpt.save(step, state, train_iter.get_state(), force=True)
    progress.close()

    if not last_eval:  # resumed at the very end: nothing left to train
        last_eval = run_eval(exp.total_steps)
    ckpt.wait()
    ckpt.close()
    writer.close()
    if is_main and config.get("plots", True):
        plot_curves(workdir, getattr(exp.task, "curve_metrics", ("accuracy", "loss")))
        # Attention figures run un-jitted on this host; parameters that span processes cannot.
        if hasattr(exp.task, "plot_examples") and jax.process_count() == 1:
            batch = next(iter(_eval_batches(config, eval_split)))
            vocab = data_lib.get_vocab(config.data) if exp.spec.kind == "text" else None
            exp.task.plot_examples(exp.model, state.params, batch, vocab, workdir / "plots")
    result = {"step": exp.total_steps, **last_eval}
    result.update({f"train/{k}": v for k, v in last_train.items() if k in ("loss", "accuracy")})
    best = Checkpointer(
        workdir,
        read_only=True,
        target_metric=config.target_metric,
        target_mode=config.get("target_mode", "max"),
    )
    result["best_step"] = best.best_step()
    best.close()
    return result


def _params_from(config: ml_collections.ConfigDict, params, *, verbose: bool = True):
    """`params` with the leaves of `config.init_from` loaded (fine-tuning, linear probes).

    `init_from_prefix` names the source's subtree that holds this model ("encoder" for MIM
    pretraining), `init_from_fresh` the leaves that keep their fresh values ("head"); `config.get`
    keeps the config.json of older runs, which lack both keys, loadable.
    """
    fresh = config.get("init_from_fresh", ()) or ()
    params, report = init_params_from(
        config.init_from,
        params,
        prefix=config.get("init_from_prefix", "") or "",
        fresh=(fresh,) if isinstance(fresh, str) else tuple(fresh),
    )
    if verbose:
        tqdm.write(report.summary(), file=sys.stderr)
    return params


def evaluate(
    workdir: str | Path,
    *,
    step: int | None = None,
    best: bool = False,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Restores a checkpoint of `workdir` and evaluates it on the config's eval split."""
    workdir = Path(workdir)
    config = config_lib.load_json(workdir / "config.json")
    config_lib.apply_overrides(config, overrides)
    shard_lib.initialize_distributed(config.get("distributed", {}))
    exp = build_experiment(config)
    mesh = shard_lib.make_mesh()
    shard_lib.check_batch_size(
        config.get("eval_batch_size") or config.batch_size, mesh, key="eval_batch_size"
    )
    tx, _ = make_optimizer(config.optim, exp.total_steps)
    init_fn = make_init_fn(exp.model, tx, exp.init_inputs())
    abstract_state, state_sharding = _state_shardings(init_fn, mesh)
    ckpt = Checkpointer(
        workdir,
        read_only=True,
        target_metric=config.target_metric,
        target_mode=config.get("target_mode", "max"),
    )
    try:
        restored_step, params = ckpt.restore_params(abstract_state, step=step, best=best)
    finally:
        ckpt.close()
    eval_step = make_eval_step(exp.model, exp.task, mesh, state_sharding.params)
    split = config.data.eval_split
    metrics = evaluate_split(
        eval_step, exp.model, exp.task, params, _eval_batches(config, split), mesh
    )
    return {"step": int(restored_step), **{f"{split}/{k}": v for k, v in metrics.items()}}


def info(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Parameter count and forward FLOPs per example, without allocating the parameters."""
    exp = build_experiment(config)
    inputs = exp.init_inputs()
    key = jax.random.key(0)
    variables = jax.eval_shape(
        lambda k: exp.model.init({"params": k}, *[jnp.zeros(x.shape, x.dtype) for x in inputs]),
        key,
    )
    params = variables["params"]
    lowered = jax.jit(lambda p, *x: exp.model.apply({"params": p}, *x, train=False)[0]).lower(
        params, *inputs
    )
    cost = lowered.cost_analysis() or {}
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    from attn_jax.train.optim import trainable_param_count

    return {
        "experiment": config.get("experiment", ""),
        "params": count_params(params),
        # Fewer than "params" where optim.lr_multipliers freezes some (a factor of 0).
        "trainable_params": trainable_param_count(config.optim, params),
        "flops": float(cost.get("flops", float("nan"))),
        "inputs": [[list(x.shape[1:]), str(x.dtype)] for x in inputs],
        "total_steps": exp.total_steps,
    }
