"""Starting a model from another workdir (`config.init_from`): a MIM-style source whose encoder sits
under "encoder" next to a decoder and a mask token loads into a ViT classifier, head kept fresh;
":step" picks a step; what does not fit is one line naming it; `{"": 0, "head": 1}` freezes all but
the head (the linear probe)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from attn_jax.models import build_model
from attn_jax.train.checkpoint import Checkpointer, CheckpointError, init_params_from
from attn_jax.train.optim import make_optimizer, param_path
from attn_jax.train.state import TrainState

VIT = {
    "name": "vit",
    "patch_size": 2,
    "hidden_size": 8,
    "depth": 2,
    "num_heads": 2,
    "mlp_dim": 16,
    "num_classes": 10,
}


def _init(overrides=None, seed=0):
    """A ViT's parameter tree filled with seeded normal values: every leaf differs between seeds
    (a real init zeroes biases and the head), and nothing is compiled."""
    model = build_model(dict(VIT, **(overrides or {})))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def _flat(tree) -> dict[str, np.ndarray]:
    return {param_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _pretrained(step: int) -> dict:
    """What a MIM run saves: its encoder (a ViT without head) and pretraining-only leaves; the
    values are the step times a seed-1 init, so that steps and the fresh init all differ."""
    encoder = {k: v for k, v in _init(seed=1).items() if k != "head"}
    encoder["mask_token"] = jnp.full((1, 1, 8), 0.5)
    params = {"encoder": encoder, "decoder_pred": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(4)}}
    return jax.tree_util.tree_map(lambda x: np.asarray(x) * step, params)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A workdir with latest checkpoints at steps 10 and 20 and its best one at step 10."""
    workdir = tmp_path_factory.mktemp("pretrain")
    ckpt = Checkpointer(workdir, keep=2)
    tx = optax.adamw(1e-3)
    for step in (10, 20):
        params = _pretrained(step)
        state = TrainState(
            step=jnp.asarray(step, jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jnp.zeros((2,), jnp.uint32),
        )
        ckpt.save(step, state, {"epoch": 0}, force=True)
    ckpt.save_best(10, _pretrained(10), {"test/accuracy": 0.9})
    ckpt.wait()
    ckpt.close()
    return workdir


@pytest.fixture(scope="module")
def target():
    """A fresh ViT classifier, replicated over four host devices as training places it."""
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    return jax.device_put(_init(), NamedSharding(mesh, PartitionSpec()))


def test_prefix_loads_the_encoder_and_keeps_the_head_fresh(source, target):
    params, report = init_params_from(str(source), target, prefix="encoder", fresh=("head",))
    got, fresh = _flat(params), _flat(target)
    saved = _flat(_pretrained(10))  # no step given: the best checkpoint, step 10
    assert report.step == 10
    for name, value in got.items():
        if name.startswith("head"):
            np.testing.assert_array_equal(value, fresh[name])
        else:
            np.testing.assert_array_equal(value, saved[f"encoder/{name}"])
            assert not np.array_equal(value, fresh[name])
    # The decoder and the mask token are ignored; the head (8x10 + 10) is the fresh part.
    assert (report.fresh, report.ignored) == (90, 8 * 4 + 4 + 8)
    assert report.loaded == sum(v.size for k, v in got.items() if not k.startswith("head"))
    assert "ignored 44 of the source" in report.summary()
    for leaf, like in zip(jax.tree.leaves(params), jax.tree.leaves(target), strict=True):
        assert leaf.sharding == like.sharding and leaf.dtype == like.dtype


def test_step_suffix_picks_that_step_from_the_latest_manager(source, target):
    params, report = init_params_from(f"{source}:20", target, prefix="encoder", fresh=("head",))
    assert report.step == 20
    np.testing.assert_array_equal(
        params["embedding"]["kernel"], _pretrained(20)["encoder"]["embedding"]["kernel"]
    )
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 15 .*kept steps: \[10, 20\]"):
        init_params_from(f"{source}:15", target, prefix="encoder")


def test_what_does_not_fit_is_one_line_naming_it(source, target):
    # Without the prefix nothing is found: the first few names, a count, and the fix.
    with pytest.raises(CheckpointError) as err:
        init_params_from(str(source), target, fresh=("head",))
    msg = str(err.value)
    assert "missing Transformer/encoder_norm/bias" in msg and "more;" in msg
    assert "config.init_from_prefix" in msg and "\n" not in msg
    # The head is not in the source: without init_from_fresh it is named as missing.
    with pytest.raises(CheckpointError, match=r"missing head/bias, missing head/kernel;"):
        init_params_from(str(source), target, prefix="encoder")
    wider = _init({"mlp_dim": 32})
    with pytest.raises(CheckpointError) as err:
        init_params_from(str(source), wider, prefix="encoder", fresh=("head",))
    assert "Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias (16,) there vs (32,) here" in str(
        err.value
    )
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="'encodr' is not a subtree .* decoder_pred, encoder"):
        init_params_from(str(source), target, prefix="encodr")
    with pytest.raises(CheckpointError, match="init_from_fresh pattern 'haed' matches no param"):
        init_params_from(str(source), target, prefix="encoder", fresh=("haed",))
    with pytest.raises(CheckpointError, match="holds no checkpoints/ directory"):
        init_params_from(str(source / "nowhere"), target)


def test_empty_pattern_freezes_everything_but_the_head(target):
    cfg = {
        "name": "adamw",
        "lr": 0.1,
        "weight_decay": 0.5,
        "schedule": "constant",
        "grad_clip_norm": 1.0,
        "lr_multipliers": {"": 0.0, "head": 1.0},
    }
    tx, _ = make_optimizer(cfg, total_steps=10)
    grads = _init(seed=2)

    @jax.jit
    def step(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    after = _flat(step(target, grads))
    before = _flat(target)
    for name, value in after.items():
        if name.startswith("head"):
            assert np.abs(value - before[name]).min() > 0
        else:
            np.testing.assert_array_equal(value, before[name])


@pytest.mark.slow
def test_fine_tune_from_a_mae_run_through_the_trainer_and_resume(tmp_path):
    """train() of experiments/mim_transfer_digits.py:finetune from a (very short) MAE run: with lr 0
    the classifier ends with exactly the MAE encoder and a fresh (zero) head; a resumed fine-tune
    restores its own checkpoint and never reads init_from again."""
    from pathlib import Path

    import orbax.checkpoint as ocp

    from attn_jax import config as config_lib
    from attn_jax.train import loop

    root = Path(__file__).resolve().parents[2] / "experiments"
    short = [
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.num_epochs=0",
        "--config.total_steps=10",
        "--config.eval_every=10",
        "--config.checkpoint_every=10",
        "--config.plots=false",
    ]
    pretrain = config_lib.load_config(f"{root}/mim_digits.py:mae")
    config_lib.apply_overrides(pretrain, short)
    loop.train(pretrain, tmp_path / "mae")

    finetune = config_lib.load_config(f"{root}/mim_transfer_digits.py:finetune")
    config_lib.apply_overrides(
        finetune, [*short, f"--config.init_from={tmp_path / 'mae'}", "--config.optim.lr=0"]
    )
    workdir = tmp_path / "finetune"
    loop.train(finetune, workdir)
    reader = ocp.PyTreeCheckpointer()
    mae = _flat(reader.restore(tmp_path / "mae/checkpoints/best/10/params"))
    tuned = _flat(reader.restore(workdir / "checkpoints/best/10/params"))
    for name, value in tuned.items():
        if name.startswith("head"):
            np.testing.assert_array_equal(value, 0.0)
        else:
            np.testing.assert_array_equal(value, mae[f"encoder/{name}"])

    (tmp_path / "mae").rename(tmp_path / "moved")  # a resume that re-read it would fail
    config_lib.apply_overrides(
        finetune, ["--config.total_steps=20", "--config.allow_changes=total_steps"]
    )
    assert loop.train(finetune, workdir)["step"] == 20
