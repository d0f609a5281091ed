"""One attention path for every model, through the trainer's own train step (issue 16/17):

- a toy attention registered in one place (docs/extending.md's example, a temperature of 2) is
  what ViT, Swin, DETR, CLIP, the Transformer, SETR and MAE compute once their config names it
  with `--config.model.attention_fn=tempered`: it is traced once for each of the model's
  attention layers at least, and 3 steps of each experiment train with it;
- every family trains to the same losses over 5 steps with `attention_impl=explicit` and `=xla`
  (ViT and Swin in the default suite; the other families, two more train-step compilations each,
  are marked slow: the implementations' equivalence itself is tested in tests/attention).

Each experiment is shrunk to one or two tiny blocks on a batch of 8 and run on one device; the
runs of an experiment start from one initial state and train on one batch, so that only the
attention differs between them.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh

from attn_jax import config as config_lib
from attn_jax import data as data_lib
from attn_jax.attention import register_attention, scaled_dot_product_attention
from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib
from attn_jax.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[2]


TRACED: list[tuple[int, ...]] = []  # the query shape of each traced call of `tempered`


@register_attention("tempered")
def tempered(q, k, v, **kwargs):
    """softmax(Q K^T / (2 sqrt(d))) V: the scaled dot-product at temperature 2."""
    TRACED.append(tuple(q.shape))
    return scaled_dot_product_attention(q / 2.0, k, v, **kwargs)


# Plain SGD: the runs then differ by lr x (gradient difference), which float rounding keeps tiny;
# Adam would blow summation-order noise in near-zero gradients up to lr-sized steps.
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}

TINY = {
    "vit_digits": dict(hidden_size=16, depth=1, num_heads=2, mlp_dim=32, dropout_rate=0.0),
    "swin_digits": dict(embed_dim=8, depths=(2,), num_heads=(2,), drop_path_rate=0.0),
    "detr_digits": dict(
        d_model=16,
        num_heads=2,
        d_ff=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        num_queries=4,
        backbone_width=8,
        backbone_norm_groups=4,
        dropout_rate=0.0,
    ),
    "clip_digits": dict(
        embed_dim=16,
        vision_width=16,
        vision_layers=1,
        vision_heads=2,
        text_width=16,
        text_layers=1,
        text_heads=2,
    ),
    "transformer_seq:dates": dict(num_layers=1, d_model=16, d_ff=32, num_heads=2),
    "setr_digit_scenes": dict(
        decoder="naive",
        decoder_width=8,
        encoder=dict(patch_size=8, hidden_size=16, depth=1, num_heads=2, mlp_dim=32),
    ),
    "mim_digits:mae": dict(
        encoder=dict(hidden_size=16, depth=1, num_heads=2, mlp_dim=32),
        decoder_hidden_size=16,
        decoder_depth=1,
        decoder_num_heads=2,
        decoder_mlp_dim=32,
    ),
}
EXPERIMENTS = list(TINY)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One tfds dir for the module: each embedded dataset is built once."""
    return tmp_path_factory.mktemp("tfds")


def _config(experiment: str, data_dir, *overrides: str):
    name, colon, variant = experiment.partition(":")  # "file:variant": experiments/file.py's
    config = config_lib.load_config(f"{ROOT / 'experiments' / name}.py{colon}{variant}")
    with config.unlocked():
        config.model.update(TINY[experiment])
        config.optim = SGD
        config.data.augment = False
    config_lib.apply_overrides(
        config, [f"--config.data.data_dir={data_dir}", "--config.batch_size=8", *overrides]
    )
    return config


def _trainer_runs(configs: dict[str, ml_collections.ConfigDict], steps: dict[str, int]):
    """{name: (losses, traced query shapes)} of the trainer's compiled train step, run
    `steps[name]` times on the first batch of the data, on one device. The configs differ in their
    attention only, so that one initial state (same seed, same parameter tree) and one batch serve
    them all."""
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    first = next(iter(configs.values()))
    exp = loop.build_experiment(first)
    tx, schedule = make_optimizer(first.optim, exp.total_steps)
    init_fn = loop.make_init_fn(exp.model, tx, exp.init_inputs())
    _, sharding = loop._state_shardings(init_fn, mesh)
    initial = jax.device_get(jax.jit(init_fn, out_shardings=sharding)(jax.random.key(0)))
    dataset = data_lib.make_dataset(
        first.data,
        first.data.train_split,
        train=True,
        global_batch_size=first.batch_size,
        seed=0,
        process_index=0,
        process_count=1,
    )
    batch = shard_lib.to_global(next(iter(dataset)), shard_lib.batch_sharding(mesh))
    runs = {}
    for name, config in configs.items():
        model = loop.build_experiment(config).model
        step = loop.make_train_step(model, exp.task, tx, schedule, mesh, sharding)
        state = jax.device_put(initial, sharding)  # the step donates its input state
        TRACED.clear()
        losses = []
        for _ in range(steps[name]):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        runs[name] = (losses, list(TRACED))
    return runs


@pytest.fixture(scope="module")
def runs(data_dir):
    """runs(experiment, *names) -> {"explicit" | "xla" | "tempered": (losses, traced)}."""

    def get(experiment: str, *names: str) -> dict[str, tuple[list[float], list]]:
        impl = "--config.model.attention_impl="
        overrides = {
            "explicit": impl + "explicit",
            "xla": impl + "xla",
            "tempered": "--config.model.attention_fn=tempered",
        }
        configs = {n: _config(experiment, data_dir, overrides[n]) for n in names}
        return _trainer_runs(configs, {"explicit": 5, "xla": 5, "tempered": 3})

    return get


# The attention layers of each tiny model above: self-attention per encoder block; self and
# cross per decoder block; CLIP's two towers; MAE's encoder and decoder.
ATTENTION_LAYERS = {
    "vit_digits": 1,
    "swin_digits": 2,
    "detr_digits": 3,
    "clip_digits": 2,
    "transformer_seq:dates": 3,
    "setr_digit_scenes": 1,
    "mim_digits:mae": 2,
}
FAST_EQUIVALENCE = ("vit_digits", "swin_digits")


@pytest.mark.parametrize(
    "experiment",
    [e if e in FAST_EQUIVALENCE else pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS],
)
def test_explicit_and_xla_attention_train_to_the_same_losses(runs, experiment):
    result = runs(experiment, "explicit", "xla")
    explicit, xla = result["explicit"][0], result["xla"][0]
    np.testing.assert_allclose(xla, explicit, rtol=1e-5, atol=1e-5)
    assert explicit[-1] != explicit[0]  # the steps do update the model


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_registered_attention_reaches_the_model_and_trains(runs, experiment):
    losses, traced = runs(experiment, "tempered")["tempered"]
    assert all(np.isfinite(losses))
    assert losses[-1] != losses[0]
    # Every attention layer of the model called the registered function when the step was
    # traced (at least once each: a rematerialised forward traces again).
    assert len(traced) >= ATTENTION_LAYERS[experiment], traced


def test_an_unregistered_attention_is_a_one_line_config_error(data_dir):
    config = _config("vit_digits", data_dir, "--config.model.attention_fn=tempred")
    with pytest.raises(config_lib.ConfigError, match="did you mean 'tempered'") as err:
        loop.build_experiment(config)
    assert "\n" not in str(err.value)
