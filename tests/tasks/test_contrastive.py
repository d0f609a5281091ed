"""The contrastive task (Radford et al. 2021, Fig. 3): the symmetric loss and its invariances,
padding, one device vs four, and zero-shot classification with prompt ensembling."""

from __future__ import annotations

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.figures.examples import draw_examples
from attn_jax.models.clip import l2_normalize
from attn_jax.tasks import TASKS, build_task
from attn_jax.tasks.contrastive import (
    SIMILARITY_FILE,
    Contrastive,
    contrastive_loss,
    zero_shot_classifier,
    zero_shot_predict,
)
from attn_jax.train import sharding as shard_lib

# Compiled once per shape: op-by-op execution of the loss costs more than its compilation.
_loss = jax.jit(contrastive_loss)


def _logits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(n, n)).astype(np.float32)


def test_loss_is_the_mean_of_the_two_cross_entropies():
    logits = _logits(6)
    labels = np.arange(6)
    rows = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    cols = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    loss, metrics = _loss(logits)
    assert float(loss) == pytest.approx(float(rows + cols) / 2, rel=1e-6)
    assert float(metrics["loss_i2t"]) == pytest.approx(float(rows), rel=1e-6)
    assert float(metrics["loss_t2i"]) == pytest.approx(float(cols), rel=1e-6)


def test_loss_is_symmetric_and_invariant_to_permuting_the_pairs():
    logits = _logits(7, seed=1)
    loss = float(_loss(logits)[0])
    assert float(_loss(logits.T)[0]) == pytest.approx(loss, rel=1e-6)
    perm = np.random.default_rng(2).permutation(7)
    permuted = logits[perm][:, perm]  # pair i becomes pair perm^-1(i), still on the diagonal
    assert float(_loss(permuted)[0]) == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("n", [1, 5, 64])
def test_uniform_similarities_give_log_n(n):
    loss, metrics = _loss(np.full((n, n), 3.7, np.float32))
    assert float(loss) == pytest.approx(math.log(n), abs=1e-5)


def test_perfect_alignment_at_scale_100_gives_zero_loss():
    # Unit embeddings aligned pairwise, orthogonal across pairs, multiplier at its cap of 100.
    loss, metrics = _loss(100.0 * np.eye(8, dtype=np.float32))
    assert float(loss) < 1e-30
    assert float(metrics["i2t_accuracy"]) == float(metrics["t2i_accuracy"]) == 1.0


def test_padding_rows_and_columns_are_left_out():
    logits = _logits(6, seed=3)
    padded = np.array(logits)
    padded[4:, :] = 50.0  # padded images scoring high against every text ...
    padded[:, 4:] = 50.0  # ... and padded texts scoring high against every image
    valid = jnp.array([True, True, True, True, False, False])
    loss, metrics = _loss(padded, valid)
    ref_loss, ref_metrics = _loss(logits[:4, :4])
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-6)
    for name in ("i2t_accuracy", "t2i_accuracy", "loss_i2t"):
        assert float(metrics[name]) == pytest.approx(float(ref_metrics[name]), rel=1e-6)


# -- the same loss on one device and on four -------------------------------------------------------
class BagOfWordsCLIP(nn.Module):
    """A two-tower model that compiles in a blink: linear image embedding, mean of word
    embeddings, CLIP's normalization and clipped temperature. The sharding of the similarity
    matrix, not the towers, is under test here (CLIP itself trains on 4 devices in
    tests/integration/test_clip_learning.py)."""

    @nn.compact
    def __call__(self, images, tokens, *, train=False):
        img = l2_normalize(nn.Dense(8, name="image_proj")(images.reshape(images.shape[0], -1)))
        words = nn.Embed(12, 8, name="token_embedding")(tokens)  # [B, T, 8]
        present = (tokens != 0)[..., None]
        txt = l2_normalize((words * present).sum(1) / jnp.maximum(present.sum(1), 1))
        t = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())
        scale = jnp.exp(jnp.minimum(t, math.log(100.0)))
        return scale * img @ txt.T, {"image_embeds": img, "text_embeds": txt, "logit_scale": scale}


def _batch(n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    tokens = np.zeros((n, 6), np.int32)
    tokens[:, 0] = 1
    tokens[:, 1:3] = rng.integers(2, 11, size=(n, 2))
    tokens[:, 3] = 11  # EOT, the largest id
    mask = np.ones(n, bool)
    mask[-2:] = False  # a padded final batch
    return {
        "image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
        "tokens": tokens,
        "label": rng.integers(0, 3, size=n).astype(np.int32),
        "mask": mask,
    }


def test_loss_and_gradients_are_the_same_on_one_device_and_on_four():
    # The similarity matrix covers the global batch whether or not the batch is sharded.
    assert jax.device_count() >= 4, "tests/conftest.py forces 4 host devices"
    model, task, batch = BagOfWordsCLIP(), Contrastive(num_classes=3), _batch()

    def loss(params, batch):
        return task.loss(model, params, batch, jax.random.key(1), train=False)

    loss_and_grads = jax.value_and_grad(loss, has_aux=True)

    @jax.jit
    def init_and_loss(key, batch):
        params = model.init(key, batch["image"][:1], batch["tokens"][:1])["params"]
        real = {k: v[:6] for k, v in batch.items()}
        return params, loss_and_grads(params, batch), loss(params, real)[0]

    one = jax.devices()[0]
    key = jax.random.key(0, impl="unsafe_rbg")
    params, ((single, single_metrics), single_grads), only_real = init_and_loss(
        key, jax.device_put(batch, one)
    )
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("data",))
    sharded = jax.jit(
        loss_and_grads,
        in_shardings=(shard_lib.replicated(mesh), shard_lib.batch_sharding(mesh)),
        out_shardings=shard_lib.replicated(mesh),
    )
    sharded_batch = jax.device_put(batch, shard_lib.batch_sharding(mesh))
    assert len(sharded_batch["tokens"].sharding.device_set) == 4
    (multi, multi_metrics), multi_grads = sharded(params, sharded_batch)
    assert float(multi) == pytest.approx(float(single), rel=1e-5)
    for name in ("i2t_accuracy", "t2i_accuracy", "logit_scale"):
        assert float(multi_metrics[name]) == pytest.approx(float(single_metrics[name]), rel=1e-5)
    for got, want in zip(
        jax.tree_util.tree_leaves(multi_grads), jax.tree_util.tree_leaves(single_grads), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert float(single_metrics["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-6)
    # ... and the padded pairs are out: the loss equals that of the 6 real pairs alone.
    assert float(only_real) == pytest.approx(float(single), rel=1e-5)


# -- zero-shot classification on a hand-built embedding space -------------------------------------
class FakeCLIP(nn.Module):
    """Image embedding = the normalized image vector; text embedding = a table row chosen by the
    first word (token 1); logits = 10 x cosine. No parameters."""

    table: tuple[tuple[float, ...], ...]

    def encode_image(self, images):
        return l2_normalize(images.reshape(images.shape[0], -1))

    def encode_text(self, tokens):
        return l2_normalize(jnp.asarray(self.table)[tokens[:, 1]])

    def __call__(self, images, tokens, *, train=False):
        img, txt = self.encode_image(images), self.encode_text(tokens)
        scale = jnp.float32(10.0)
        return scale * img @ txt.T, {"image_embeds": img, "text_embeds": txt, "logit_scale": scale}


# Word w -> embedding: words 1, 2 (class 0's prompts) are e0, e1; words 3, 4 (class 1's) are e2.
TABLE = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1))
PROMPTS = np.array([[[9, 1, 5], [9, 2, 5]], [[9, 3, 5], [9, 4, 5]]], np.int32)  # [K=2, M=2, T=3]
# Image a is nearest to class 0's mean; image b is nearest to the single prompt e0 (cos .78) but,
# after ensembling, to class 1 (cos .62 against .55 for class 0's mean [.71, .71, 0]).
IMAGES = np.array([[0.6, 0.6, 0.5], [1.0, 0.0, 0.8], [0.0, 0.0, 0.0]], np.float32)


def test_zero_shot_classifier_averages_normalized_prompts():
    model = FakeCLIP(TABLE)
    classes = zero_shot_classifier(model, {}, jnp.asarray(PROMPTS))
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(classes, [[s, s, 0], [0, 0, 1]], atol=1e-6)
    images = model.apply({}, jnp.asarray(IMAGES[:2]), method="encode_image")
    np.testing.assert_array_equal(zero_shot_predict(images, classes), [0, 1])


def _eval_batch(labels) -> dict[str, jnp.ndarray]:
    tokens = np.array([[9, 1, 5], [9, 3, 5], [9, 2, 5]], np.int32)
    captions = np.array(
        [[[9, 1, 5], [9, 2, 5]], [[9, 3, 5], [0, 0, 0]], [[9, 4, 5], [9, 4, 5]]], np.int32
    )
    return {
        "image": jnp.asarray(IMAGES.reshape(3, 1, 1, 3)),
        "tokens": jnp.asarray(tokens),
        "captions": jnp.asarray(captions),
        "label": jnp.asarray(labels, jnp.int32),
        "mask": jnp.array([True, True, False]),  # the third row is padding
    }


def test_evaluation_reports_zero_shot_and_retrieval_accuracy():
    task = build_task({"name": "contrastive"}, num_classes=2)
    assert isinstance(task, Contrastive) and TASKS["contrastive"] is Contrastive
    assert task.needs_prompts
    task.prompts = PROMPTS
    eval_sums = jax.jit(lambda batch: task.eval_sums(FakeCLIP(TABLE), {}, batch))
    result = task.finalize(jax.device_get(eval_sums(_eval_batch([0, 1, 1]))))
    assert result["zero_shot_accuracy"] == 1.0
    # Image b (class 1) against the wrong label: half right.
    wrong = task.finalize(jax.device_get(eval_sums(_eval_batch([0, 0, 1]))))
    assert wrong["zero_shot_accuracy"] == 0.5
    # In-batch retrieval over the real texts (e0 of a, e2 of b): a's best is its own (.61 against
    # .51), b's best is a's e0 (.78 against its own .62): one image of two.
    assert result["i2t_accuracy"] == 0.5
    # Among all captions of the real rows (the padded row's and the all-PAD caption are out):
    # a's best is one of its own (e0 or e1, .61), b's best is again a's e0: one of two.
    assert result["caption_retrieval_accuracy"] == 0.5
    assert result["caption_label_accuracy"] == 0.5  # b's pick is a's caption: label 0, not 1
    assert wrong["caption_label_accuracy"] == 1.0  # ... which matches when b is labeled 0
    assert result["loss"] > 0
    assert "count" not in result


def test_plot_examples_writes_the_similarity_figure(tmp_path):
    task = Contrastive(num_classes=2, num_plot_examples=2)
    data = task.figure_data(FakeCLIP(TABLE), {}, _eval_batch([0, 1, 1]), None)
    (path,) = draw_examples(data, tmp_path)
    assert path == tmp_path / SIMILARITY_FILE
    assert path.stat().st_size > 5_000


def test_init_inputs_are_an_image_and_a_token_row():
    spec = types.SimpleNamespace(name="digit_captions", image_shape=(8, 8, 1), text_length=12)
    image, tokens = Contrastive().init_inputs(spec)
    assert image.shape == (1, 8, 8, 1) and tokens.shape == (1, 12)
    assert tokens.dtype == jnp.int32
    with pytest.raises(ValueError, match="needs an image_text dataset"):
        Contrastive().init_inputs(types.SimpleNamespace(name="dates", image_shape=None))
