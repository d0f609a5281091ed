"""Checkpoints that never stop a run needlessly and never lose the good one: an unreadable latest
step falls back to the previous one (moved aside, never deleted), a non-finite evaluation never
becomes the best, an optimizer change is named without advice to delete anything, and the best
checkpoints of an earlier run in the same workdir are moved aside at a fresh start."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    UnreadableCheckpointError,
    rank_value,
)
from attn_jax.train.state import TrainState


def make_state(tx, value: float):
    params = {"dense": {"kernel": jnp.full((3, 4), value), "bias": jnp.zeros(4)}}
    return TrainState(
        step=jnp.asarray(int(value), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jnp.zeros(2, jnp.uint32),
    )


def abstract(state):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


@pytest.fixture
def written(tmp_path):
    """A workdir with latest checkpoints at steps 10 and 20 (each state filled with its step)."""
    tx = optax.adamw(1e-3)
    ckpt = Checkpointer(tmp_path, keep=3)
    for step in (10, 20):
        ckpt.save(step, make_state(tx, step), {"next_index": step}, force=True)
    ckpt.wait()
    ckpt.close()
    return tmp_path, tx


def corrupt_arrays(step_dir):
    """Overwrites every array data file of a step with garbage of the same size."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "d" in p.parts]
    assert files, list((step_dir / "state").rglob("*"))
    for path in files:
        path.write_bytes(b"\x00garbage" * max(1, path.stat().st_size // 8))


def test_unreadable_latest_step_falls_back_and_is_moved_aside(written):
    workdir, tx = written
    corrupt_arrays(workdir / "checkpoints" / "latest" / "20")
    ckpt = Checkpointer(workdir, keep=3)
    lines = []
    step, state, data = ckpt.restore_latest(abstract(make_state(tx, 0)), report=lines.append)
    assert step == 10 and data == {"next_index": 10}
    np.testing.assert_array_equal(state.params["dense"]["kernel"], np.full((3, 4), 10.0))
    assert len(lines) == 1 and "latest/20" in lines[0] and "falling back" in lines[0]
    assert ckpt.latest.all_steps() == [10]
    aside = list((workdir / "checkpoints" / "unreadable").iterdir())
    assert [p.name.split("-")[0] for p in aside] == ["20"]  # kept, not deleted
    ckpt.close()


def test_eval_skips_an_unreadable_latest_step_unless_it_is_named(written):
    workdir, tx = written
    corrupt_arrays(workdir / "checkpoints" / "latest" / "20")
    reader = Checkpointer(workdir, read_only=True)
    lines = []
    step, params = reader.restore_params(abstract(make_state(tx, 0)), report=lines.append)
    assert step == 10 and len(lines) == 1
    with pytest.raises(UnreadableCheckpointError):
        reader.restore_params(abstract(make_state(tx, 0)), step=20)
    reader.close()
    assert (workdir / "checkpoints" / "latest" / "20").exists()  # eval moves nothing


def test_another_optimizer_is_named_without_advice_to_delete(written):
    workdir, _ = written
    sgd = optax.sgd(1e-3, momentum=0.9)
    ckpt = Checkpointer(workdir, keep=3)
    with pytest.raises(CheckpointError) as e:
        ckpt.restore_latest(abstract(make_state(sgd, 0)))
    message = str(e.value)
    assert "optimizer state of another structure" in message
    assert "init_from" in message and "delete" not in message and "\n" not in message
    assert ckpt.latest.all_steps() == [10, 20]  # nothing moved: the files are fine
    ckpt.close()


def test_non_finite_evaluations_never_become_the_best(tmp_path):
    tx = optax.adamw(1e-3)
    ckpt = Checkpointer(tmp_path, target_metric="test/accuracy", target_mode="max")
    params = make_state(tx, 1).params
    assert ckpt.save_best(10, params, {"test/accuracy": 0.5})
    assert not ckpt.save_best(20, params, {"test/accuracy": float("nan")})
    assert not ckpt.save_best(30, params, {"test/accuracy": float("inf")})
    ckpt.save_best(40, params, {"test/accuracy": 0.25})
    assert ckpt.best_step() == 10
    assert ckpt.save_best(50, params, {"test/accuracy": 0.75})
    assert ckpt.best_step() == 50
    ckpt.close()


def test_ranking_puts_nan_inf_and_missing_last_in_both_modes():
    for mode in ("max", "min"):
        finite = [rank_value(v, mode) for v in (0.1, 2.0)]
        for bad in (float("nan"), float("inf"), float("-inf"), None, "x"):
            assert rank_value(bad, mode) < min(finite)
    assert rank_value(0.1, "min") > rank_value(2.0, "min")


def test_fresh_start_moves_an_earlier_runs_best_aside(tmp_path):
    tx = optax.adamw(1e-3)
    old = Checkpointer(tmp_path)
    old.save_best(300, make_state(tx, 1).params, {"test/accuracy": 0.9})
    old.close()
    ckpt = Checkpointer(tmp_path)
    assert ckpt.move_aside_stale_best() == [300]
    assert ckpt.best_step() is None
    assert ckpt.save_best(10, make_state(tx, 2).params, {"test/accuracy": 0.1})
    assert ckpt.best_step() == 10
    assert list((tmp_path / "checkpoints").glob("stale-*/300"))
    ckpt.close()
