"""TransFG learns: a short in-process run of a tiny model with the TransFG task (cross-entropy +
contrastive loss) on the embedded 8x8 digits, far above chance; the full experiment against its
plain ViT twin through the launcher, marked slow."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.data.sklearn_digits.sklearn_digits_dataset_builder import split_of
from attn_jax.models import build_model
from attn_jax.tasks import build_task


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.array([split_of(i) == split for i in range(len(digits.target))])
    images = digits.images[keep, :, :, None].astype(np.float32) / 16.0
    return images, digits.target[keep].astype(np.int32)


def test_tiny_transfg_learns_the_digits_in_process():
    train_x, train_y = _digits("train")
    test_x, test_y = _digits("test")
    # 3x3 patches, slide step 1: 6 x 6 overlapping patches; 4 heads pick 4 of them for the
    # second (last) block.
    model = build_model(
        dict(
            name="transfg",
            num_classes=10,
            patch_size=3,
            slide_step=1,
            hidden_size=32,
            depth=2,
            num_heads=4,
            mlp_dim=64,
        )
    )
    task = build_task({"name": "transfg", "label_smoothing": 0.1}, num_classes=10)
    init_key, data_key = jax.random.split(jax.random.key(0))
    params = jax.jit(model.init)(init_key, jnp.zeros((1, 8, 8, 1)))["params"]
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        batch = {"image": x, "label": y, "mask": jnp.ones(y.shape, bool)}
        grads, metrics = jax.grad(
            lambda p: task.loss(model, p, batch, jax.random.key(0), train=False), has_aux=True
        )(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    first = None
    for t in range(80):
        idx = jax.random.randint(jax.random.fold_in(data_key, t), (64,), 0, len(train_x))
        params, opt_state, metrics = step(params, opt_state, train_x[idx], train_y[idx])
        first = first or float(metrics["contrastive"])

    logits, aux = jax.jit(model.apply)({"params": params}, test_x)
    accuracy = float((np.asarray(logits).argmax(-1) == test_y).mean())
    assert accuracy >= 0.7, accuracy  # chance is 0.10; 0.91 when written
    assert float(metrics["contrastive"]) < first, (first, metrics)
    parts = np.asarray(aux["parts"])
    assert parts.min() >= 1 and parts.max() <= 36
    # The selection depends on the image: not one fixed patch per head for every digit.
    assert max(len(np.unique(parts[:, h])) for h in range(4)) > 1


@pytest.mark.slow
def test_transfg_experiment_learns_the_distorted_digits(train_run, tmp_path):
    workdir, transfg = train_run("--config", "experiments/transfg_digits.py:transfg", timeout=1200)
    assert transfg["best"]["test/accuracy"] >= 0.6, transfg  # chance is 0.10
    assert (workdir / "plots" / "transfg_parts.png").stat().st_size > 1000
    # A second --workdir wins over the fixture's (argparse keeps the last), so runs stay apart.
    _, vit = train_run(
        "--config",
        "experiments/transfg_digits.py:vit",
        "--config.plots=false",
        "--workdir",
        str(tmp_path / "vit"),
        timeout=1200,
    )
    assert vit["best"]["test/accuracy"] >= 0.5, vit
