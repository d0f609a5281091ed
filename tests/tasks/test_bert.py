"""BERT pretraining (masked LM + NSP): pairs are "[CLS] A [SEP] B [SEP]" with the documented
segments, IsNext pairs are consecutive captions of one image and NotNext ones come from another
image, about half are IsNext, masking never touches [CLS]/[SEP]/PAD, evaluation pairs are fixed,
padding counts for nothing, the model reads the segments, and a model without NSP logits is a
one-line error."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.data.captions import VOCAB
from attn_jax.errors import UserError
from attn_jax.models import build_model
from attn_jax.tasks import build_task
from attn_jax.tasks.bert import make_pairs, pack_pairs

PAD, SOT, EOT = VOCAB.pad_id, VOCAB.sot_id, VOCAB.eot_id
T, K = 11, 5


def _captions(n: int) -> np.ndarray:
    """[n, K, T] rows "SOT w1 w2 w3 (w4) EOT PAD...": the words spell out the image's index
    (base 20) and the caption's, so every caption tells which one it is; n <= 400."""
    out = np.full((n, K, T), PAD, np.int32)
    for i in range(n):
        for k in range(K):
            words = [4 + i % 20, 24 + i // 20, 44 + k, 50 + (i + k) % 20][: 3 + (i + k) % 2]
            out[i, k, : len(words) + 2] = [SOT, *words, EOT]
    return out


def test_pack_pairs_puts_a_then_b_without_its_sot_and_marks_segments():
    a = jnp.asarray([[SOT, 5, 6, EOT, PAD, PAD]])
    b = jnp.asarray([[SOT, 7, EOT, PAD, PAD, PAD]])
    tokens, segments = pack_pairs(a, b, PAD)
    np.testing.assert_array_equal(tokens[0], [SOT, 5, 6, EOT, 7, EOT, PAD, PAD, PAD, PAD, PAD])
    np.testing.assert_array_equal(segments[0], [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    # The longest rows fill the pair exactly: 2T - 1 tokens.
    full = jnp.asarray([[SOT, 5, 6, 8, 9, EOT]])
    tokens, _ = pack_pairs(full, full, PAD)
    np.testing.assert_array_equal(tokens[0], [SOT, 5, 6, 8, 9, EOT, 5, 6, 8, 9, EOT])


def _split(tokens: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    row = [int(t) for t in tokens if t != PAD]
    first_sep = row.index(EOT)
    return tuple(row[: first_sep + 1]), tuple(row[first_sep + 1 :])


def test_pairs_are_consecutive_captions_or_captions_of_another_image():
    n = 64
    captions = _captions(n)
    where = {}
    for i in range(n):
        for k in range(K):
            row = [int(t) for t in captions[i, k] if t != PAD]
            where[tuple(row[1:])] = (i, k)  # B's part: without SOT
            where[tuple(row)] = (i, k)
    keys = jax.random.split(jax.random.key(0), n)
    tokens, segments, is_next = make_pairs(jnp.asarray(captions), keys, jnp.asarray(n), pad_id=PAD)
    assert 0.3 < float(is_next.mean()) < 0.7
    rows = zip(np.asarray(tokens), np.asarray(segments), np.asarray(is_next), strict=True)
    for row, seg, nxt in rows:
        a, b = _split(row)
        ia, ka = where[a]
        ib, kb = where[b]
        assert ka < K - 1
        if nxt:
            assert (ib, kb) == (ia, ka + 1)
        else:
            assert ib != ia
        assert seg.tolist()[: len(a)] == [0] * len(a) and seg[len(a) : len(a) + len(b)].all()


def test_evaluation_partners_are_the_next_real_example():
    n, real = 8, 5
    captions = _captions(n)
    captions[real:] = PAD  # evaluation padding at the end
    keys = jax.random.split(jax.random.key(3), n)
    tokens, _, is_next = make_pairs(
        jnp.asarray(captions), keys, jnp.asarray(real), pad_id=PAD, random_partner=False
    )
    firsts = {}
    for i in range(real):
        for k in range(K):
            firsts[tuple(int(t) for t in captions[i, k, 1:] if t != PAD)] = i
    for i in range(real):
        _, b = _split(np.asarray(tokens[i]))
        assert firsts[b] == (i if is_next[i] else (i + 1) % real)


@pytest.fixture(scope="module")
def tiny():
    model = build_model(
        dict(name="bert", vocab_size=VOCAB.size, context_length=T, encoder=dict(width=32, layers=1))
    )
    task = build_task({"name": "bert"}, num_classes=10)
    task.vocab = VOCAB
    spec = SimpleNamespace(name="digit_captions", text_length=T, num_captions=K)
    inputs = task.init_inputs(spec)
    assert [x.shape for x in inputs] == [(1, 2 * T - 1)] * 2  # tokens, segments
    params = model.init(jax.random.key(0), *[jnp.zeros(x.shape, x.dtype) for x in inputs])
    params = params["params"]
    # Compiled once for the module: eager Flax applies cost seconds each.
    loss = jax.jit(lambda p, b, k: task.loss(model, p, b, k, train=False))
    eval_sums = jax.jit(lambda p, b: task.eval_sums(model, p, b))
    return SimpleNamespace(
        model=model, task=task, params=params, loss=loss, eval_sums=eval_sums, inputs=inputs
    )


def test_masking_never_chooses_cls_sep_or_pad(tiny):
    keys = jax.random.split(jax.random.key(1), 64)
    tokens, _, _ = make_pairs(jnp.asarray(_captions(64)), keys, jnp.asarray(64), pad_id=PAD)
    _, chosen = jax.jit(tiny.task.corrupt)(keys, tokens)
    assert not np.any(np.asarray(chosen) & np.isin(np.asarray(tokens), [PAD, SOT, EOT]))
    ordinary = ~np.isin(np.asarray(tokens), [PAD, SOT, EOT])
    assert 0.1 < float(np.asarray(chosen).sum() / ordinary.sum()) < 0.2  # 15% expected


def test_loss_sums_the_two_tasks_and_fresh_nsp_is_near_chance(tiny):
    batch = {"captions": jnp.asarray(_captions(16)), "mask": jnp.ones(16, bool)}
    loss, metrics = tiny.loss(tiny.params, batch, jax.random.key(2))
    np.testing.assert_allclose(loss, metrics["mlm_loss"] + metrics["nsp_loss"], rtol=1e-6)
    assert abs(float(metrics["nsp_loss"]) - np.log(2)) < 0.2
    assert float(metrics["mlm_loss"]) > 1.0


def test_evaluation_is_fixed_and_padding_counts_for_nothing(tiny):
    task, params = tiny.task, tiny.params
    captions = _captions(10)
    batch = {"captions": jnp.asarray(captions), "mask": jnp.arange(10) < 7}
    first = task.finalize(tiny.eval_sums(params, batch))
    again = task.finalize(tiny.eval_sums(params, batch))
    assert first == again
    garbage = dict(batch, captions=batch["captions"].at[7:].set(PAD))
    sums = tiny.eval_sums(params, garbage)
    assert float(sums["count"]) == 7
    for key, value in task.finalize(sums).items():
        assert value == pytest.approx(first[key], rel=1e-5), key


def test_a_model_without_nsp_logits_is_a_one_line_error(tiny):
    mlm = build_model(
        dict(name="text_mlm", vocab_size=VOCAB.size, context_length=2 * T - 1, width=32, layers=1)
    )
    dummy = [jnp.zeros(x.shape, x.dtype) for x in tiny.inputs]
    params = jax.eval_shape(mlm.init, jax.random.key(0), *dummy)
    batch = {"captions": jnp.asarray(_captions(4)), "mask": jnp.ones(4, bool)}
    loss = lambda p: tiny.task.loss(mlm, p, batch, jax.random.key(0))  # noqa: E731
    with pytest.raises(UserError, match="model.name=bert") as e:
        jax.eval_shape(loss, params["params"])
    assert "\n" not in str(e.value)


def test_the_model_reads_segments_and_without_them_takes_all_a(tiny):
    tokens, segments, _ = make_pairs(
        jnp.asarray(_captions(4)), jax.random.split(jax.random.key(3), 4), 4, pad_id=PAD
    )
    apply = jax.jit(lambda t, s: tiny.model.apply({"params": tiny.params}, t, s)[1]["nsp_logits"])
    with_b = apply(tokens, segments)
    all_a = apply(tokens, jnp.zeros_like(segments))
    assert float(jnp.abs(with_b - all_a).max()) > 1e-4  # B's tokens get another embedding
    default = tiny.model.apply({"params": tiny.params}, tokens)[1]["nsp_logits"]
    np.testing.assert_allclose(default, all_a, atol=1e-6)
    # The masked-LM encoder alone, called without segments, keeps its parameters (no segment
    # embedding): its checkpoints and parameter counts stay as they were.
    mlm = build_model(
        dict(name="text_mlm", vocab_size=VOCAB.size, context_length=8, width=32, layers=1)
    )
    shapes = jax.eval_shape(mlm.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    assert "segment_embedding" not in shapes and "segment_embedding" in tiny.params["encoder"]


def test_data_without_several_captions_is_a_one_line_error():
    task = build_task({"name": "bert"}, num_classes=0)
    with pytest.raises(UserError, match="digit_captions"):
        task.init_inputs(SimpleNamespace(name="dates", text_length=None, num_captions=None))
