"""Masked language modeling: Devlin, Chang, Lee, Toutanova 2019, "BERT: Pre-training of Deep
Bidirectional Transformers for Language Understanding" (NAACL 2019), sec. 3.1 "Task #1: Masked LM"
and Appendix A.1.

Of the ordinary tokens of each text (never PAD, SOT, EOT or other special ids), 15% are chosen at
random; a chosen token is replaced by [MASK] with probability 0.8, by a random ordinary token
with probability 0.1, and left unchanged with probability 0.1. The model sees the corrupted text
and the loss is the cross-entropy of the ORIGINAL token at the chosen positions only (BERT's
"predict the masked tokens rather than reconstructing the entire input"). Each position is
chosen independently with probability 0.15 (a Bernoulli draw, as the Hugging Face collator does);
the original implementation rounds 15% of each sequence's length instead, which is the same in
expectation.

The masking keys of step s come from the trainer's key of that step folded with a fixed tag, so a
resumed run draws the same masks; evaluation derives each text's key from a fixed seed and the
text itself, so every evaluation scores the same corrupted texts whatever the batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_MASKING_TAG = 0x4D4C4D  # "MLM": separates the masking stream from dropout's
_EVAL_SEED = 20190601


def bert_mask(
    key: jax.Array,
    tokens: jax.Array,
    *,
    mask_id: int,
    ordinary_ids: jax.Array,
    special_ids: Sequence[int],
    mask_prob: float = 0.15,
    replace_mask: float = 0.8,
    replace_random: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """BERT's corruption (sec. 3.1): choose, then mask / randomize / keep.

    Args:
      key: PRNG key.
      tokens: int array of any shape (one row [T], or a batch [B, T]).
      mask_id: the [MASK] id.
      ordinary_ids: int [N], the ids a chosen token may be replaced by at random.
      special_ids: ids never chosen (PAD, SOT, EOT, MASK, ...).
      mask_prob: probability that an ordinary position is chosen.
      replace_mask: probability that a chosen token becomes [MASK].
      replace_random: probability that a chosen token becomes a random ordinary token (the rest
        stay unchanged).

    Returns:
      (corrupted tokens, chosen bool), both shaped as `tokens`.
    """
    choose_key, action_key, random_key = jax.random.split(key, 3)
    eligible = ~jnp.isin(tokens, jnp.asarray(list(special_ids), tokens.dtype))
    chosen = eligible & jax.random.bernoulli(choose_key, mask_prob, tokens.shape)
    u = jax.random.uniform(action_key, tokens.shape)
    to_mask = chosen & (u < replace_mask)
    to_random = chosen & (u >= replace_mask) & (u < replace_mask + replace_random)
    random_tokens = ordinary_ids[
        jax.random.randint(random_key, tokens.shape, 0, ordinary_ids.shape[0])
    ].astype(tokens.dtype)
    corrupted = jnp.where(to_mask, jnp.asarray(mask_id, tokens.dtype), tokens)
    corrupted = jnp.where(to_random, random_tokens, corrupted)
    return corrupted, chosen


class MaskedLanguage:
    """Loss and metrics for `model(tokens) -> (logits [B, T, V], aux)` on batches
    {"tokens" int [B, T], "mask" bool [B]} (e.g. the captions of digit_captions).

    The special ids come from the dataset's vocabulary, which the trainer sets as `vocab`
    (`needs_vocab`); tests may pass them directly.

    Args:
      num_classes: unused (the dataset's classes), for symmetry with the other tasks.
      mask_prob: share of ordinary tokens chosen (BERT: 0.15).
      replace_mask: share of the chosen turned into [MASK] (0.8).
      replace_random: share of the chosen turned into a random ordinary token (0.1).
      tokens_key: the batch key of the texts.
      vocab_size: V (else from `vocab.size`).
      mask_id: the [MASK] id (else `vocab.mask_id`).
      special_ids: ids never chosen nor drawn as random replacements (else the vocabulary's pad,
        sot, eot, mask and unk ids).
    """

    evaluation = "masked_tokens"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("accuracy", "loss")
    needs_vocab = True

    def __init__(
        self,
        num_classes: int = 0,
        mask_prob: float = 0.15,
        replace_mask: float = 0.8,
        replace_random: float = 0.1,
        tokens_key: str = "tokens",
        vocab_size: int | None = None,
        mask_id: int | None = None,
        special_ids: Sequence[int] | None = None,
    ):
        for name, value in (
            ("mask_prob", mask_prob),
            ("replace_mask", replace_mask),
            ("replace_random", replace_random),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"masked_language {name}={value} must be within [0, 1]")
        if replace_mask + replace_random > 1.0:
            raise ValueError(
                f"masked_language replace_mask + replace_random = "
                f"{replace_mask + replace_random} exceeds 1: lower one of them"
            )
        del num_classes
        self.mask_prob = float(mask_prob)
        self.replace_mask = float(replace_mask)
        self.replace_random = float(replace_random)
        self.tokens_key = tokens_key
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.special_ids = tuple(int(i) for i in special_ids) if special_ids is not None else None
        self._vocab = None

    @property
    def vocab(self):
        return self._vocab

    @vocab.setter
    def vocab(self, vocab) -> None:
        """Takes the sizes and special ids the constructor left unset from the vocabulary."""
        self._vocab = vocab
        if vocab is None:
            return
        if self.vocab_size is None:
            self.vocab_size = int(vocab.size)
        if self.mask_id is None:
            self.mask_id = int(vocab.mask_id)
        if self.special_ids is None:
            names = ("pad_id", "sot_id", "eot_id", "mask_id", "unk_id")
            self.special_ids = tuple(
                int(getattr(vocab, n)) for n in names if getattr(vocab, n, None) is not None
            )

    def _check_ready(self) -> None:
        if self.vocab_size is None or self.mask_id is None or self.special_ids is None:
            raise ValueError(
                "masked_language needs the vocabulary's size, mask id and special ids: use a "
                "dataset with a word vocabulary (e.g. digit_captions) or set task.vocab_size, "
                "task.mask_id and task.special_ids"
            )

    def ordinary_ids(self) -> np.ndarray:
        """The ids that are neither special nor out of the vocabulary: int32 [N]."""
        self._check_ready()
        ids = np.setdiff1d(np.arange(self.vocab_size), np.asarray(self.special_ids))
        return ids.astype(np.int32)

    def init_inputs(self, spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: one token row."""
        length = getattr(spec, "text_length", None) or getattr(spec, "max_input_length", None)
        if length is None:
            raise ValueError(
                f"dataset {spec.name!r} has no texts; masked_language needs a text or image_text "
                f"dataset such as digit_captions"
            )
        return (jax.ShapeDtypeStruct((1, int(length)), jnp.int32),)

    def corrupt(self, keys: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`bert_mask` with this task's settings, one key per row: (corrupted, chosen).

        Args:
          keys: [B] PRNG keys, one per text.
          tokens: int [B, T].
        """
        self._check_ready()
        ordinary = jnp.asarray(self.ordinary_ids())

        def one(key, row):
            return bert_mask(
                key,
                row,
                mask_id=self.mask_id,
                ordinary_ids=ordinary,
                special_ids=self.special_ids,
                mask_prob=self.mask_prob,
                replace_mask=self.replace_mask,
                replace_random=self.replace_random,
            )

        return jax.vmap(one)(keys, tokens)

    def _scores(self, model, params, batch, keys, dropout_key, *, train: bool):
        tokens = batch[self.tokens_key]
        corrupted, chosen = self.corrupt(keys, tokens)
        chosen = chosen & batch["mask"].astype(bool)[:, None]
        logits, _ = model.apply(
            {"params": params}, corrupted, train=train, rngs={"dropout": dropout_key}
        )
        logits = logits.astype(jnp.float32)
        nll = (
            jax.nn.logsumexp(logits, -1)
            - jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
        )
        correct = jnp.argmax(logits, -1) == tokens
        weight = chosen.astype(jnp.float32)
        return (nll * weight).sum(), (correct * weight).sum(), weight.sum()

    def eval_keys(self, tokens: jax.Array) -> jax.Array:
        """One masking key per text derived from the text itself: an evaluation masks each text
        the same way whatever its batch, position or device."""
        positions = jnp.arange(1, tokens.shape[-1] + 1, dtype=jnp.uint32)
        digest = jnp.sum(tokens.astype(jnp.uint32) * positions * jnp.uint32(2654435761), axis=-1)
        return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(_EVAL_SEED), digest)

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean CE over the chosen positions of the real examples; accuracy there too."""
        keys = jax.random.split(jax.random.fold_in(rng, _MASKING_TAG), batch["mask"].shape[0])
        nll, correct, count = self._scores(model, params, batch, keys, rng, train=train)
        count = jnp.maximum(count, 1.0)
        loss = nll / count
        return loss, {"loss": loss, "accuracy": correct / count, "masked_tokens": count}

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the chosen positions; deterministic masks (`eval_keys`)."""
        keys = self.eval_keys(batch[self.tokens_key])
        nll, correct, count = self._scores(model, params, batch, keys, keys[0], train=False)
        return {"loss": nll, "accuracy": correct, "count": count}

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        count = max(float(sums["count"]), 1.0)
        return {"loss": float(sums["loss"]) / count, "accuracy": float(sums["accuracy"]) / count}
