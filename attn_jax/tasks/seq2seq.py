"""Sequence to sequence: teacher-forced cross-entropy for training (Sutskever et al. 2014, sec. 3.1:
maximize log p(T | S) over the training pairs), autoregressive decoding for evaluation.

Batches hold `inputs` [B, S] and `targets` [B, T] (tokens, EOS, then PAD = 0) and `length` [B] (the
source length, for the per-bucket report). The decoder reads BOS followed by the targets shifted
right (teacher forcing); the loss weighs every target token up to and including EOS. Evaluation
decodes greedily (or with beam search where the model has it) and counts a sequence as correct
only if every position matches: exact match, overall and per source-length bucket. With
`bleu=True` it also reports corpus BLEU of the detokenized decodings against the detokenized
targets (sacreBLEU's defaults, summed over batches and devices: eval/bleu.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attn_jax.eval.bleu import NUM_STATS, bleu_from_statistics, bleu_statistics

PAD, BOS, EOS = 0, 1, 2


def shift_right(targets: jax.Array) -> jax.Array:
    """BOS followed by targets[:, :-1]: the decoder inputs of teacher forcing."""
    bos = jnp.full((targets.shape[0], 1), BOS, targets.dtype)
    return jnp.concatenate([bos, targets[:, :-1]], axis=1)


def bucket_names(edges: Sequence[int]) -> list[str]:
    """[10, 20, 61] -> ['10-19', '20-60']: bucket i holds edges[i] <= length < edges[i+1]."""
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


class Seq2SeqTask:
    """Loss and metrics for `model(inputs, decoder_inputs) -> (logits [B, T, V], aux)` with a
    `generate(inputs, max_length=...)` method.

    Args:
      num_classes: the vocabulary size (unused but for symmetry with the other tasks).
      label_smoothing: eps of Szegedy et al. 2016 (the Transformer uses 0.1).
      bucket_edges: boundaries of the source-length buckets reported by evaluation: bucket i
        holds edges[i] <= length < edges[i+1] (e.g. the dataset's `length_buckets`).
      beam_size: decoding beam at evaluation (1 = greedy); models without beam search need 1.
      length_penalty: alpha of the GNMT length penalty, for beam search.
      bleu: also report corpus BLEU ("bleu", 0..100); the trainer then sets `vocab` (the
        dataset's, to detokenize) because `needs_vocab` is true.
    """

    evaluation = "exact_match"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("exact_match", "accuracy", "loss")
    curve_metrics = ("accuracy", "loss", "exact_match")

    def __init__(
        self,
        num_classes: int = 0,
        label_smoothing: float = 0.0,
        bucket_edges: Sequence[int] = (),
        beam_size: int = 1,
        length_penalty: float = 0.6,
        bleu: bool = False,
    ):
        self.vocab_size = num_classes
        self.label_smoothing = label_smoothing
        self.bucket_edges = tuple(int(e) for e in bucket_edges)
        self.beam_size = int(beam_size)
        self.length_penalty = float(length_penalty)
        self.bleu = bool(bleu)
        self.vocab = None

    @property
    def needs_vocab(self) -> bool:
        return self.bleu

    def _bleu_statistics(self, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
        if self.vocab is None:
            raise ValueError("task.bleu needs the dataset's vocabulary: set task.vocab")
        decode = self.vocab.decode
        return bleu_statistics(
            [decode(list(t)) for t in tokens], [decode(list(t)) for t in targets]
        )

    @staticmethod
    def init_inputs(spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        return (
            jax.ShapeDtypeStruct((1, spec.max_input_length), jnp.int32),
            jax.ShapeDtypeStruct((1, spec.max_target_length), jnp.int32),
        )

    def _token_losses(self, logits, targets):
        vocab = logits.shape[-1]
        onehot = jax.nn.one_hot(targets, vocab, dtype=jnp.float32)
        if self.label_smoothing:
            onehot = optax.smooth_labels(onehot, self.label_smoothing)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)

    def _weights(self, batch):
        # Every real target token counts, EOS included; padding and padded examples do not.
        return (batch["targets"] != PAD).astype(jnp.float32) * batch["mask"][:, None]

    def loss(self, model, params, batch, rng, train: bool = True):
        """Teacher-forced cross-entropy per target token, and token accuracy."""
        targets = batch["targets"]
        logits, _ = model.apply(
            {"params": params},
            batch["inputs"],
            shift_right(targets),
            train=train,
            rngs={"dropout": rng},
        )
        weights = self._weights(batch)
        count = jnp.maximum(weights.sum(), 1.0)
        loss = (self._token_losses(logits, targets) * weights).sum() / count
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        return loss, {"loss": loss, "accuracy": (correct * weights).sum() / count}

    def decode(self, model, params, inputs, max_length: int):
        kwargs = {"max_length": max_length}
        if self.beam_size > 1:
            kwargs.update(beam_size=self.beam_size, length_penalty=self.length_penalty)
        return model.apply({"params": params}, inputs, method="generate", **kwargs)

    def eval_sums(self, model, params, batch):
        """Sums over the batch: teacher-forced loss and token accuracy, and exact match of the
        decoded sequences, overall and per length bucket."""
        targets = batch["targets"]
        mask = batch["mask"].astype(jnp.float32)
        logits, _ = model.apply(
            {"params": params}, batch["inputs"], shift_right(targets), train=False
        )
        weights = self._weights(batch)
        correct_tokens = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        tokens, _ = self.decode(model, params, batch["inputs"], targets.shape[1])
        exact = jnp.all(tokens == targets, axis=1).astype(jnp.float32) * mask
        sums = {
            "loss": (self._token_losses(logits, targets) * weights).sum(),
            "accuracy": (correct_tokens * weights).sum(),
            "tokens": weights.sum(),
            "exact_match": exact.sum(),
            "count": mask.sum(),
        }
        if self.bleu:
            # Detokenizing and sacreBLEU's tokenizer are string work: done on the host, per
            # sentence; only the n-gram statistics come back, and they add up like the rest.
            stats = jax.pure_callback(
                self._bleu_statistics,
                jax.ShapeDtypeStruct((tokens.shape[0], NUM_STATS), jnp.float32),
                tokens,
                targets,
                vmap_method="sequential",
            )
            sums["bleu_stats"] = (stats * mask[:, None]).sum(0)
        if self.bucket_edges:
            edges = jnp.asarray(self.bucket_edges)
            # -1 below the first edge, n-1 at or above the last: one_hot gives zeros for both.
            bucket = jnp.searchsorted(edges, batch["length"], side="right") - 1
            bucket = jnp.where(bucket == len(self.bucket_edges) - 1, -1, bucket)
            onehot = jax.nn.one_hot(bucket, len(self.bucket_edges) - 1, dtype=jnp.float32)
            sums["bucket_exact"] = (onehot * exact[:, None]).sum(0)
            sums["bucket_count"] = (onehot * mask[:, None]).sum(0)
        return sums

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        tokens = max(float(sums["tokens"]), 1.0)
        count = max(float(sums["count"]), 1.0)
        out = {
            "loss": float(sums["loss"]) / tokens,
            "accuracy": float(sums["accuracy"]) / tokens,
            "exact_match": float(sums["exact_match"]) / count,
        }
        if "bleu_stats" in sums:
            out["bleu"] = bleu_from_statistics(np.asarray(sums["bleu_stats"]))
        if "bucket_exact" in sums:
            exact = np.asarray(sums["bucket_exact"])
            counts = np.asarray(sums["bucket_count"])
            for name, e, c in zip(bucket_names(self.bucket_edges), exact, counts, strict=True):
                if c > 0:
                    out[f"exact_match/{name}"] = float(e) / float(c)
        return out

    def figure_data(self, model, params, batch, vocab, *, count: int = 4) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"attention": the attention of the decoded
        outputs over the source for the first `count` examples of `batch`, with the tokens as
        labels} (one file each, attention_<i>.png); {} for models that expose no attention."""
        inputs = batch["inputs"][:count]
        kwargs = {"max_length": batch["targets"].shape[1]}
        # Models whose fast path skips the weights (the Transformer) return them on request.
        if "return_attention" in inspect.signature(type(model).generate).parameters:
            kwargs["return_attention"] = True
        tokens, aux = model.apply({"params": params}, inputs, method="generate", **kwargs)
        weights = aux.get("attention") if isinstance(aux, dict) else None
        if weights is None:
            return {}
        examples = []
        for i in range(inputs.shape[0]):
            examples.append(
                {
                    "weights": np.asarray(weights[i]),
                    "source": _symbols(vocab, np.asarray(inputs[i])),
                    "target": _symbols(vocab, np.asarray(tokens[i])),
                    "title": f"{vocab.decode(list(inputs[i]))!r} -> "
                    f"{vocab.decode(list(tokens[i]))!r}",
                }
            )
        return {"attention": {"examples": examples}}


def _symbols(vocab, ids) -> list[str]:
    """One label per position up to and including EOS."""
    labels = []
    for t in ids.tolist():
        if t == PAD:
            break
        labels.append("</s>" if t == EOS else (vocab.decode([t]) or "?").replace(" ", "\u2423"))
        if t == EOS:
            break
    return labels
