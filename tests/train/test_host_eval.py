"""The trainer's host-side evaluation hook: a task with `eval_outputs` / `finalize_outputs` sees
every real prediction of the split, whatever the eval batch size, the padding of the last batch
and the number of devices."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from attn_jax.train import loop
from attn_jax.train import sharding as shard_lib


class Scorer(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(1)(x)[:, 0], {}


class RankTask:
    """ROC AUC: a metric of the whole split's ranking that no sum of per-batch values gives."""

    def eval_sums(self, model, params, batch):
        score, _ = model.apply({"params": params}, batch["x"])
        mask = batch["mask"].astype(jnp.float32)
        return {"score": (score * mask).sum(), "count": mask.sum()}

    def finalize(self, sums):
        raise AssertionError("the host path must call finalize_outputs instead")

    def eval_outputs(self, model, params, batch):
        score, _ = model.apply({"params": params}, batch["x"])
        return {"score": score, "label": batch["label"], "mask": batch["mask"]}

    @staticmethod
    def finalize_outputs(outputs, sums):
        score = np.concatenate([o["score"] for o in outputs])
        label = np.concatenate([o["label"] for o in outputs])
        keep = np.concatenate([o["mask"] for o in outputs]).astype(bool)
        return {
            "auc": _auc(score[keep], label[keep]),
            "mean_score": float(sums["score"]) / float(sums["count"]),
            "count": int(keep.sum()),
        }


def _auc(score, label):
    pos, neg = score[label == 1], score[label == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def _data(n=10):
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((n, 3)).astype(np.float32),
        "label": (np.arange(n) % 2).astype(np.int32),
        "mask": np.ones(n, bool),
    }


def _batches(data, size):
    n = len(data["mask"])
    for start in range(0, n, size):
        part = {k: v[start : start + size] for k, v in data.items()}
        pad = size - len(part["mask"])
        if pad:  # the eval pipeline's padding: copies marked mask=False
            part = {k: np.concatenate([v, np.repeat(v[:1], pad, 0)]) for k, v in part.items()}
            part["mask"][-pad:] = False
        yield part


@pytest.mark.parametrize("devices, batch_size", [(1, 3), (4, 4), (4, 12)])
def test_host_metrics_do_not_depend_on_batching(devices, batch_size):
    model, task, data = Scorer(), RankTask(), _data()
    params = model.init(jax.random.key(0), data["x"][:1])["params"]
    mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
    sharding = jax.tree_util.tree_map(lambda _: shard_lib.replicated(mesh), params)
    step = loop.make_eval_step(model, task, mesh, sharding)
    metrics = loop.evaluate_split(step, model, task, params, _batches(data, batch_size), mesh)

    score = np.asarray(model.apply({"params": params}, data["x"])[0])
    assert metrics["count"] == 10
    assert metrics["auc"] == pytest.approx(_auc(score, data["label"]))
    assert metrics["mean_score"] == pytest.approx(score.mean(), rel=1e-5, abs=1e-6)
