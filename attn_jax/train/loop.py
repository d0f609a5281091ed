"""The generic trainer: config -> mesh -> data -> model/task -> sharded init -> resume -> loop.

One jitted, donated train step per experiment (built by `make_train_step`), data parallel over a
`data` mesh axis; the dropout key of step s is `fold_in(base_key, s)`, and the input iterator's
state is checkpointed with the train state, so a resumed run repeats exactly the computation of an
uninterrupted one. The loop never waits on the device except where it must show or save a number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from attn_jax import config as config_lib
from attn_jax import data as data_lib
from attn_jax import errors
from attn_jax.eval.evaluators import Evaluator, build_evaluators, target_evaluator
from attn_jax.figures.curves import plot_curves
from attn_jax.figures.examples import draw_examples
from attn_jax.models import build_model, count_params
from attn_jax.tasks import build_task
from attn_jax.train import sharding as shard_lib
from attn_jax.train import workdir as workdir_lib
from attn_jax.train.checkpoint import Checkpointer, init_variables_from
from attn_jax.train.metric_writers import MetricWriter, read_metrics
from attn_jax.train.optim import make_optimizer
from attn_jax.train.preemption import StopRequest
from attn_jax.train.state import TrainState, bind_state


class RunStopped(Exception):
    """Training ended before `total_steps` on purpose: preempted (the state is checkpointed;
    rerunning the same command resumes) or diverged. The launcher prints `message` on stderr and
    `result` as its JSON line, and exits with `exit_code`."""

    def __init__(self, message: str, *, exit_code: int, result: dict[str, Any]):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result


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


def build_experiment(config: ml_collections.ConfigDict, *, with_data: bool = True) -> Experiment:
    """Resolves data spec, model and task; raises one-line errors for bad configs.

    `with_data=False` (`info`) reads nothing from the dataset: what a task fetches from the data
    only to evaluate (a vocabulary for BLEU, zero-shot prompts) is left out.
    """
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
    if with_data and getattr(task, "needs_vocab", False):  # e.g. BLEU detokenizes the decodings
        task.vocab = data_lib.get_vocab(config.data)
    if with_data and getattr(task, "needs_prompts", False):  # zero-shot classes from templates
        task.prompts, task.class_names = data_lib.zero_shot_prompts(config.data)
    mix = data_lib.mix_options(config.data)  # Mixup/CutMix act in the task's loss, on device
    if mix and not hasattr(task, "mix"):
        raise config_lib.ConfigError(
            f"config.data.mixup/cutmix mix image-label batches, which the {type(task).__name__} "
            "task does not train on; set both to 0"
        )
    if mix:
        task.mix = mix
    total_steps = config_lib.resolve_total_steps(config, spec.num_examples[config.data.train_split])
    return Experiment(config, spec, model, task, total_steps)


# -- compiled functions ---------------------------------------------------------------------------
def make_init_fn(model, tx, init_inputs):
    """init(key) -> TrainState; `init_inputs` are (abstract) example model arguments."""

    def init(key):
        params_key, state_key = jax.random.split(key)
        dummy = [jnp.zeros(x.shape, x.dtype) for x in init_inputs]
        variables = model.init({"params": params_key}, *dummy)
        # Logical-axis boxes (tensor parallelism) only decide shardings: the state holds arrays.
        variables = nn.unbox(dict(variables))
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.key_data(state_key),
            model_state=variables,  # batch_stats and the like; {} for most models
        )

    return init


def make_train_step(model, task, tx, schedule, mesh, state_sharding, *, microbatches: int = 1):
    """One SGD step: loss and grads, optimizer update, and metrics that stay on the device.

    With `microbatches` = k > 1 the batch is cut into k slices whose gradients are averaged in a
    `lax.scan` before the single update: the same step with about 1/k of the activation memory.
    On CPUs it is also faster once the activations outgrow the cache (benchmarks/README.md).
    """

    def grads_and_metrics(params, model_state, batch, key):
        """(grads, metrics, the model state after this batch)."""

        def loss_fn(params):
            bound = bind_state(model, model_state, mutable=True)
            loss, metrics = task.loss(bound, params, batch, key, train=True)
            return loss, (metrics, {**model_state, **(getattr(bound, "updates", None) or {})})

        (_, (metrics, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, metrics, new_state

    def split(x):
        # [B, ...] -> [k, B/k, ...] taking every k-th example, so that each device keeps its own
        # rows: the data axis stays on the (now second) batch dimension and nothing moves.
        x = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
        spec = PartitionSpec(None, "data", *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        dropout_key = jax.random.fold_in(state.key, state.step)
        if microbatches == 1:
            grads, metrics, model_state = grads_and_metrics(
                state.params, state.model_state, batch, dropout_key
            )
        else:
            micro = {k: split(v) for k, v in batch.items()}

            def body(carry, inputs):
                # Statistics (BatchNorm) advance micro-batch by micro-batch, as k small steps
                # would; gradients and metrics are summed for the one update.
                i, part = inputs
                sums, ms = carry
                g, m, ms = grads_and_metrics(
                    state.params, ms, part, jax.random.fold_in(dropout_key, i)
                )
                return (jax.tree_util.tree_map(jnp.add, sums, (g, m)), ms), None

            first = jax.tree_util.tree_map(lambda x: x[0], micro)
            shapes = jax.eval_shape(
                grads_and_metrics, state.params, state.model_state, first, dropout_key
            )[:2]
            zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            (sums, model_state), _ = jax.lax.scan(
                body, (zeros, state.model_state), (jnp.arange(microbatches), micro)
            )
            grads, metrics = jax.tree_util.tree_map(lambda x: x / microbatches, sums)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        # A non-finite loss or gradient never reaches the state: the update is skipped (the step
        # counter still moves, so schedule and data stay aligned) and the loop, which reads the
        # flag, stops or counts it (config.on_nonfinite). The state then always holds the last
        # finite parameters, whatever is checkpointed.
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        keep = functools.partial(
            jax.tree_util.tree_map, lambda new, old: jnp.where(finite, new, old)
        )
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        model_state = keep(model_state, state.model_state)
        metrics = dict(
            metrics,
            grad_norm=grad_norm,
            lr=schedule(state.step),
            nonfinite_step=1.0 - finite.astype(jnp.float32),
        )
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
        )
        return new_state, metrics

    return jax.jit(
        train_step,
        in_shardings=(state_sharding, shard_lib.batch_sharding(mesh)),
        out_shardings=(state_sharding, shard_lib.replicated(mesh)),
        donate_argnums=(0,),
    )


def _evaluates_on_host(task) -> bool:
    return hasattr(task, "eval_outputs") and hasattr(task, "finalize_outputs")


def make_eval_step(model, task, mesh, params_sharding, model_state_sharding=None):
    """step(params, model_state, batch, sums) -> sums + the batch's `task.eval_sums`.

    `model_state` holds the model's other collections (BatchNorm statistics), read-only here.
    A task whose metrics need every prediction on the host (COCO AP) also defines
    `eval_outputs(model, params, batch) -> dict of arrays` and `finalize_outputs(outputs, sums)`;
    the step then returns (sums, outputs), the outputs replicated so that every process holds
    those of the whole global batch.
    """
    host = _evaluates_on_host(task)

    def eval_step(params, model_state, batch, sums):
        bound = bind_state(model, model_state, mutable=False)
        new = task.eval_sums(bound, params, batch)
        sums = jax.tree_util.tree_map(jnp.add, sums, new)
        return (sums, task.eval_outputs(bound, params, batch)) if host else sums

    replicated = shard_lib.replicated(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(
            params_sharding,
            replicated if model_state_sharding is None else model_state_sharding,
            shard_lib.batch_sharding(mesh),
            replicated,
        ),
        out_shardings=replicated,
        donate_argnums=(3,),
    )


def evaluate_split(
    eval_step,
    model,
    task,
    params,
    batches: Iterator[Mapping[str, np.ndarray]],
    mesh,
    model_state: Any = None,
):
    """One full pass; sums (and host outputs) stay on the device until the end."""
    host = _evaluates_on_host(task)
    model_state = model_state if model_state is not None else {}
    bound = bind_state(model, model_state, mutable=False)
    sums, outputs = None, []
    for batch in batches:
        batch = shard_lib.to_global(batch, shard_lib.batch_sharding(mesh))
        if sums is None:
            zeros = jax.eval_shape(lambda p, b: task.eval_sums(bound, p, b), params, batch)
            sums = jax.device_put(
                jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), zeros),
                shard_lib.replicated(mesh),
            )
        if host:
            sums, out = eval_step(params, model_state, batch, sums)
            outputs.append(out)
        else:
            sums = eval_step(params, model_state, batch, sums)
    if host:
        # Padded examples (mask False) are still in the outputs: finalize_outputs drops them.
        return task.finalize_outputs(jax.device_get(outputs), jax.device_get(sums))
    return task.finalize(jax.device_get(sums))


# -- the loop -------------------------------------------------------------------------------------
def _state_shardings(init_fn, mesh, mode: str = "replicated", tp_axes: dict | None = None):
    """(abstract train state with shardings, the shardings) for `config.sharding` = `mode`.

    `tp_axes` maps parameter paths ("encoder/block00/attention/query/kernel") to their mesh axes
    from the model's logical axes (`tp_axes_of`); optimizer-state leaves that mirror a parameter
    (Adam's moments) take its sharding, found by the parameter path their own path ends with.
    """
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    tp_axes = tp_axes or {}
    replicated = shard_lib.replicated(mesh)

    def sharding(path, leaf):
        if mode == "replicated" or not leaf.shape:
            return replicated
        name = _path_name(path)
        parts = name.split("/")
        tp = next(
            (tp_axes[k] for k in ("/".join(parts[i:]) for i in range(len(parts))) if k in tp_axes),
            None,
        )
        return NamedSharding(mesh, shard_lib.leaf_spec(leaf.shape, mesh, mode, tp))

    shardings = jax.tree_util.tree_map_with_path(sharding, abstract)
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tp_axes_of(model, init_inputs) -> dict[str, tuple]:
    """{parameter path: mesh axis per dimension} from the model's Flax logical axes (the block
    family names attention heads and MLP hidden units), through `shard_lib.TP_RULES`."""
    # The blocks box their parameters with logical axes only while rules are set.
    with nn.logical_axis_rules(shard_lib.TP_RULES):
        boxed = jax.eval_shape(
            lambda k: model.init(
                {"params": k}, *[jnp.zeros(x.shape, x.dtype) for x in init_inputs]
            ),
            jax.random.key(0),
        )["params"]
    specs = nn.get_partition_spec(boxed)
    out = {}
    for path, spec in jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )[0]:
        if isinstance(spec, PartitionSpec) and any(a is not None for a in spec):
            out[_path_name(path)] = tuple(nn.logical_to_mesh_axes(spec, shard_lib.TP_RULES))
    return out


def _shardings_for(config, exp, init_fn, mesh):
    mode = config.get("sharding", "replicated")
    tp = tp_axes_of(exp.model, exp.init_inputs()) if mode == "fsdp_tp" else None
    return _state_shardings(init_fn, mesh, mode, tp)


def _eval_batches(config, evaluator: Evaluator):
    return data_lib.make_dataset(
        config.data,
        evaluator.split,
        train=False,
        global_batch_size=evaluator.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def _state_bytes(abstract_state) -> int:
    return sum(
        int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
        for x in jax.tree_util.tree_leaves(abstract_state)
    )


def _reported_metrics(exp: Experiment, config, abstract_state) -> set[str] | None:
    """The metric names (without the split) that an evaluation of `exp` reports; None when the
    task cannot tell without running (its sums do not finalize from zeros)."""
    spec = exp.spec.element_spec
    b = config.get("eval_batch_size") or config.batch_size
    batch = {k: jax.ShapeDtypeStruct((b, *shape), dtype) for k, (shape, dtype) in spec.items()}
    batch["mask"] = jax.ShapeDtypeStruct((b,), jnp.bool_)
    try:
        sums = jax.eval_shape(
            lambda p, ms, x: exp.task.eval_sums(bind_state(exp.model, ms, mutable=False), p, x),
            abstract_state.params,
            abstract_state.model_state,
            batch,
        )
        zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), sums)
        names = set(exp.task.finalize(zeros))
    except Exception:  # noqa: BLE001 - a task that needs real data to finalize: cannot check
        return None
    return names | set(getattr(exp.task, "host_metric_names", ()))


def check_target_metric(exp: Experiment, config, abstract_state, evaluators) -> None:
    """A target_metric that evaluation will not report is a config error before any training
    (it would leave the best checkpoint unwritten and the sweep rankings arbitrary)."""
    target = config.target_metric
    owner = target_evaluator(evaluators, target)
    names = _reported_metrics(exp, config, abstract_state)
    if names is None and owner is not None:
        return
    names = names or set()
    reported = sorted(f"{e.name}/{n}" for e in evaluators for n in names)
    name = target.split("/", 1)[-1]
    if owner is None or not (name in names or any(name.startswith(n + "/") for n in names)):
        raise config_lib.ConfigError(
            f"config.target_metric {target!r} is not reported by this experiment's evaluation; "
            f"choose one of {', '.join(reported[:8])}"
        )


def _log(message: str, enabled: bool = True) -> None:
    if enabled:
        tqdm.write(message, file=sys.stderr)


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (or resumes) the experiment in `workdir`; returns the final metrics.

    Raises:
      RunStopped: preempted (SIGTERM/SIGINT, config.max_runtime: checkpointed, exit 75) or
        diverged (a non-finite loss with config.on_nonfinite="stop", exit 3).
      UserError: a config, data, checkpoint or workdir problem, in one line.
    """
    shard_lib.initialize_distributed(config.get("distributed", {}))
    config_lib.fill_defaults(config)
    config_lib.validate(config)
    workdir = Path(workdir)
    exp = build_experiment(config)
    mesh = shard_lib.mesh_from_config(config)
    shard_lib.check_batch_size(config.batch_size, mesh, microbatches=config.get("microbatches", 1))
    if config.get("eval_batch_size"):
        shard_lib.check_batch_size(config.eval_batch_size, mesh, key="eval_batch_size")
    with contextlib.ExitStack() as held:
        if jax.process_index() == 0:  # one writer per workdir: process 0 of this run
            workdir_lib.check_writable(workdir)
            held.enter_context(workdir_lib.WorkdirLock(workdir))
        return _train_in(config, workdir, exp, mesh)


def _train_in(config, workdir: Path, exp: Experiment, mesh) -> dict[str, Any]:
    """`train` once the workdir is known to be ours."""
    is_main = jax.process_index() == 0
    tx, schedule = make_optimizer(config.optim, exp.total_steps)
    init_fn = make_init_fn(exp.model, tx, exp.init_inputs())
    abstract_state, state_sharding = _shardings_for(config, exp, init_fn, mesh)
    evaluators = build_evaluators(config, exp.task)
    check_target_metric(exp, config, abstract_state, evaluators)
    if workdir_lib.has_checkpoints(workdir):
        stored = workdir_lib.read_stored_config(workdir)
        if stored is not None:
            workdir_lib.check_resume_config(stored, config, workdir)
    if is_main:
        # The latest K states, a best parameter set, and room for the one being written.
        needed = _state_bytes(abstract_state) * (config.keep_checkpoints + 1)
        workdir_lib.check_writable(workdir, needed_bytes=needed)
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

    # Precedence: this workdir's newest readable checkpoint, then init_from, then a fresh init.
    found = ckpt.restore_latest(abstract_state, report=lambda m: _log(m, is_main), move_aside=False)
    if jax.process_count() > 1:  # every process has chosen before any file moves
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("attn_jax_restore_chosen")
    if is_main:
        ckpt.move_aside_unreadable()
    if found is not None:
        start, state, data_state = found
        train_iter.set_state(data_state)
    else:
        if is_main:
            stale = ckpt.move_aside_stale_best()
            if stale:
                _log(
                    f"moved best checkpoints {stale} of an earlier run aside to {ckpt.root}/stale-*"
                )
        init_key = jax.random.key(config.seed)
        state = jax.jit(init_fn, out_shardings=state_sharding)(init_key)
        if config.get("init_from"):
            params, model_state = _variables_from(
                config, state.params, state.model_state, verbose=is_main
            )
            state = state.replace(params=params, model_state=model_state)
        start = 0
    # Written only once the checkpoint (if any) is known to fit, so that a bad restart never
    # replaces the config that the workdir's checkpoints were trained with.
    if is_main:
        config_lib.save(config, workdir / "config.json")

    writer = MetricWriter(workdir, enabled=is_main, resume_step=start if start else None)
    n_params = count_params(state.params)
    _log(
        f"{config.get('experiment', 'experiment')}: {n_params:,} params, "
        f"{exp.total_steps} steps of {config.batch_size} on {mesh.devices.size} device(s)"
        + (f", resuming at step {start}" if start else ""),
        is_main,
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
    eval_step = make_eval_step(
        exp.model, exp.task, mesh, state_sharding.params, state_sharding.model_state
    )
    bsharding = shard_lib.batch_sharding(mesh)
    skip_nonfinite = config.get("on_nonfinite", "stop") == "skip"

    pending: list[dict[str, jax.Array]] = []
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    # Every evaluation of this run by step (those before a resume from metrics.jsonl), so that
    # the metrics of every evaluator at the best step can be reported at the end.
    history = _evaluation_history(workdir, evaluators, upto=start)
    skipped_total = 0
    t_log = time.perf_counter()
    steps_since_log = 0
    saved_step = start
    progress = tqdm(
        total=exp.total_steps,
        initial=start,
        disable=not is_main,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        mininterval=1.0,
    )

    def run_evals(step: int, *, every: bool = False) -> dict[str, float]:
        """The evaluators due at `step` (all with `every`); keeps the best checkpoint."""
        named: dict[str, float] = {}
        for ev in evaluators:
            if every or ev.due(step, exp.total_steps):
                metrics = evaluate_split(
                    eval_step,
                    exp.model,
                    exp.task,
                    state.params,
                    _eval_batches(config, ev),
                    mesh,
                    state.model_state,
                )
                writer.write(step, ev.name, metrics)
                named.update(ev.named(metrics))
        if named:
            history.setdefault(step, {}).update(named)
            last_eval.update(named)
            ckpt.save_best(step, state.params, named, state.model_state)
        return named

    def stopped(message: str, exit_code: int, step: int) -> RunStopped:
        result = {"status": "preempted" if exit_code == errors.EXIT_PREEMPTED else "diverged"}
        result.update(step=step, **last_eval)
        result.update({f"train/{k}": v for k, v in last_train.items() if k in ("loss", "accuracy")})
        result["nonfinite_steps"] = skipped_total
        return RunStopped(message, exit_code=exit_code, result=result)

    def check_finite(step: int, flag: jax.Array) -> None:
        """Raises RunStopped if step `step` had a non-finite loss or gradient (policy stop)."""
        if skip_nonfinite or not float(flag):
            return
        ckpt.wait()
        kept = ckpt.latest_step()
        where = f"step {kept} in {ckpt.root / 'latest'}" if kept else "none yet"
        raise stopped(
            f"training diverged: the loss or gradient norm is not finite at step {step}; last "
            f"finite checkpoint: {where}; lower optim.lr or clip gradients "
            "(optim.grad_clip_norm), or set --config.on_nonfinite=skip to skip such updates",
            errors.EXIT_DIVERGED,
            step,
        )

    previous_flag: tuple[int, jax.Array] | None = None
    step = start
    try:
        with StopRequest(max_runtime=config.get("max_runtime", 0.0) or 0.0) as stop:
            for step in range(start + 1, exp.total_steps + 1):
                batch = shard_lib.to_global(next(train_iter), bsharding)
                state, metrics = train_step(state, batch)
                # The previous step's flag: reading it waits for that step only, while this
                # one is already queued, so the device never idles for the check.
                if previous_flag is not None:
                    check_finite(*previous_flag)
                previous_flag = (step, metrics["nonfinite_step"])
                pending.append(metrics)
                steps_since_log += 1
                if step % config.log_every == 0 or step == exp.total_steps:
                    host = jax.device_get(pending)
                    elapsed = time.perf_counter() - t_log
                    window_skipped = int(sum(m.pop("nonfinite_step") for m in host))
                    skipped_total += window_skipped
                    last_train = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                    last_train["nonfinite_steps"] = window_skipped
                    last_train["lr"] = float(host[-1]["lr"])
                    last_train["step_time"] = elapsed / steps_since_log
                    last_train["examples_per_sec"] = config.batch_size * steps_since_log / elapsed
                    writer.write(step, "train", last_train, echo=False)
                    shown = {"loss": f"{last_train['loss']:.4f}"}
                    if "accuracy" in last_train:  # masked and contrastive pretraining have none
                        shown["acc"] = f"{last_train['accuracy']:.3f}"
                    if skipped_total:
                        shown["skipped"] = str(skipped_total)
                    progress.set_postfix(shown)
                    pending, steps_since_log, t_log = [], 0, time.perf_counter()
                    check_finite(*previous_flag)
                progress.update(1)
                if any(ev.due(step, exp.total_steps) for ev in evaluators):
                    check_finite(*previous_flag)
                    run_evals(step)
                    t_log = time.perf_counter()
                if step % config.checkpoint_every == 0 or step == exp.total_steps:
                    check_finite(*previous_flag)
                    ckpt.save(step, state, train_iter.get_state(), force=True)
                    saved_step = step
                if step < exp.total_steps and stop.should_stop(step):
                    if saved_step != step:
                        check_finite(*previous_flag)
                        ckpt.save(step, state, train_iter.get_state(), force=True)
                    ckpt.wait()
                    raise stopped(
                        f"stopped at step {step} of {exp.total_steps} ({stop.reason}): "
                        f"checkpoint written to {ckpt.root / 'latest' / str(step)}; run the same "
                        "command again to resume",
                        errors.EXIT_PREEMPTED,
                        step,
                    )
            if previous_flag is not None:
                check_finite(*previous_flag)
        if not last_eval:  # resumed at the very end: nothing left to train
            run_evals(exp.total_steps, every=True)
        ckpt.wait()
    except Exception as e:
        # A full disk (an orbax save, a metrics line): stop with the last good checkpoint named;
        # orbax never finalizes a partial save, and the next start removes its temporary files.
        if isinstance(e, RunStopped) or not workdir_lib.is_disk_full(e):
            raise
        raise workdir_lib.WorkdirError(_disk_full_message(workdir, ckpt, step)) from None
    finally:
        progress.close()
        _close_quietly(ckpt)
        writer.close()
    if is_main and config.get("plots", True):
        curves = getattr(exp.task, "curve_metrics", ("accuracy", "loss"))
        plot_curves(read_metrics(workdir), workdir / "plots", curves, name=workdir.name)
        # Attention figures run un-jitted on this host; parameters that span processes cannot.
        if hasattr(exp.task, "figure_data") and jax.process_count() == 1:
            batch = next(iter(_eval_batches(config, evaluators[0])))
            vocab = data_lib.get_vocab(config.data) if exp.spec.kind == "text" else None
            figures = exp.task.figure_data(exp.model, state.params, batch, vocab)
            draw_examples(figures, workdir / "plots")
    result = {"step": exp.total_steps, **last_eval}
    result.update({f"train/{k}": v for k, v in last_train.items() if k in ("loss", "accuracy")})
    if skipped_total:
        result["nonfinite_steps"] = skipped_total
    best = Checkpointer(
        workdir,
        read_only=True,
        target_metric=config.target_metric,
        target_mode=config.get("target_mode", "max"),
    )
    result["best_step"] = best_step = best.best_step()
    if best_step is not None:
        result["best"] = _best_report(
            best_step, history, evaluators, best, abstract_state, exp, config, eval_step, mesh
        )
    best.close()
    return result


def _evaluation_history(workdir: Path, evaluators, *, upto: int) -> dict[int, dict[str, float]]:
    names = {e.name for e in evaluators}
    history: dict[int, dict[str, float]] = {}
    for record in read_metrics(workdir) if upto else ():
        if record["split"] in names and record["step"] <= upto:
            metrics = {k: v for k, v in record.items() if k not in ("step", "split", "nonfinite")}
            history.setdefault(record["step"], {}).update(
                {f"{record['split']}/{k}": v for k, v in metrics.items()}
            )
    return history


def _best_report(step, history, evaluators, best, abstract_state, exp, config, eval_step, mesh):
    """Every evaluator's metrics at the best step: selected on the target evaluator (validation),
    reported on the others (test). An evaluator that did not run at that step is run now on the
    best checkpoint's parameters."""
    report = {"step": step, **history.get(step, {})}
    missing = [e for e in evaluators if not any(k.startswith(e.name + "/") for k in report)]
    if missing:
        _, params, model_state = best.restore_variables(abstract_state, best=True)
        for ev in missing:
            metrics = evaluate_split(
                eval_step, exp.model, exp.task, params, _eval_batches(config, ev), mesh, model_state
            )
            report.update(ev.named(metrics))
    return report


def _close_quietly(ckpt: Checkpointer) -> None:
    """Closes the managers; a failed pending write was already reported by the caller."""
    try:
        ckpt.close()
    except Exception:  # noqa: BLE001
        pass


def _disk_full_message(workdir: Path, ckpt: Checkpointer, step: int) -> str:
    kept = None
    try:
        ckpt.latest.reload()
        kept = ckpt.latest_step()
    except Exception:  # noqa: BLE001 - the message must still come out
        pass
    last = f"the last good checkpoint is step {kept}" if kept else "no checkpoint was completed"
    return (
        f"the disk of {workdir} is full (at step {step}); {last}; free some space and run the "
        "same command again to resume from it"
    )


def _variables_from(config: ml_collections.ConfigDict, params, model_state, *, verbose=True):
    """(params, model_state) with the leaves of `config.init_from` loaded (fine-tuning, linear
    probes, a converted reference backbone), BatchNorm statistics included.

    `init_from_prefix` names the source's subtree that holds this model ("encoder" for MIM
    pretraining), `init_into` this model's subtree that it fills ("backbone"),
    `init_from_fresh` the leaves that keep their fresh values ("head"); `config.get` keeps the
    config.json of older runs, which lack these keys, loadable.
    """
    fresh = config.get("init_from_fresh", ()) or ()
    params, model_state, report = init_variables_from(
        config.init_from,
        params,
        model_state,
        prefix=config.get("init_from_prefix", "") or "",
        fresh=(fresh,) if isinstance(fresh, str) else tuple(fresh),
        into=config.get("init_into", "") or "",
    )
    if verbose:
        tqdm.write(report.summary(), file=sys.stderr)
    return params, model_state


def evaluate(
    workdir: str | Path,
    *,
    step: int | None = None,
    best: bool = False,
    overrides: tuple[str, ...] = (),
    evals: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Restores a checkpoint of `workdir` and runs the config's evaluators on it (`evals`: only
    those named).

    The latest readable checkpoint by default (a newer unreadable one is reported and skipped);
    `step` names one exactly. Evaluation runs in this one process: the `distributed` settings a
    multi-process training run stored are not reused (its peers are gone); pass
    `--config.distributed.*` to evaluate with several processes.
    """
    workdir = Path(workdir)
    config = config_lib.load_json(workdir / "config.json")
    config_lib.reset_distributed(config)
    config_lib.apply_overrides(config, overrides)
    shard_lib.initialize_distributed(config.get("distributed", {}))
    exp = build_experiment(config)
    mesh = shard_lib.mesh_from_config(config)
    evaluators = build_evaluators(config, exp.task)
    unknown = sorted(set(evals) - {e.name for e in evaluators})
    if unknown:
        raise config_lib.ConfigError(
            f"--eval {unknown[0]} is not an evaluator of this run; its evaluators: "
            f"{', '.join(e.name for e in evaluators)}"
        )
    evaluators = [e for e in evaluators if not evals or e.name in evals]
    for ev in evaluators:
        shard_lib.check_batch_size(ev.batch_size, mesh, key="eval_batch_size")
    tx, _ = make_optimizer(config.optim, exp.total_steps)
    init_fn = make_init_fn(exp.model, tx, exp.init_inputs())
    abstract_state, state_sharding = _shardings_for(config, exp, init_fn, mesh)
    ckpt = Checkpointer(
        workdir,
        read_only=True,
        target_metric=config.target_metric,
        target_mode=config.get("target_mode", "max"),
    )
    try:
        restored_step, params, model_state = ckpt.restore_variables(
            abstract_state, step=step, best=best, report=_log
        )
    finally:
        ckpt.close()
    eval_step = make_eval_step(
        exp.model, exp.task, mesh, state_sharding.params, state_sharding.model_state
    )
    result: dict[str, Any] = {"step": int(restored_step)}
    for ev in evaluators:
        batches = _eval_batches(config, ev)
        result.update(
            ev.named(
                evaluate_split(eval_step, exp.model, exp.task, params, batches, mesh, model_state)
            )
        )
    return result


def info(config: ml_collections.ConfigDict, *, flops: bool = True) -> dict[str, Any]:
    """Parameter count and forward FLOPs per example, without allocating the parameters or
    reading the dataset (a catalog dataset need not be prepared).

    Args:
      config: the experiment's config.
      flops: also trace the forward pass for XLA's FLOP count (half the time of a large model's
        `info`); without it "flops" is NaN.
    """
    exp = build_experiment(config, with_data=False)
    inputs = exp.init_inputs()
    key = jax.random.key(0)
    variables = jax.eval_shape(
        lambda k: exp.model.init({"params": k}, *[jnp.zeros(x.shape, x.dtype) for x in inputs]),
        key,
    )
    params = variables["params"]
    cost = {}
    if flops:
        forward = jax.jit(lambda p, *x: exp.model.apply({"params": p}, *x, train=False)[0])
        cost = forward.lower(params, *inputs).cost_analysis() or {}
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
