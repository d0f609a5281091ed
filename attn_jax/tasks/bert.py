"""BERT's two pretraining tasks together: Devlin, Chang, Lee, Toutanova 2019, "BERT: Pre-training
of Deep Bidirectional Transformers for Language Understanding" (NAACL 2019), sec. 3.1: the masked
LM (Task #1, attn_jax/tasks/masked_language.py) and next-sentence prediction (Task #2), on the
captions of an image-text dataset (digit_captions: K = 5 captions per image).

Pairs: for each image a caption k is drawn uniformly among the first K - 1 and becomes sentence
A; with probability 0.5 sentence B is caption k + 1 of the same image (IsNext), otherwise a
caption drawn uniformly among the K of another image of the batch (NotNext), as BERT draws B "from
the corpus" 50% of the time. The input is "[CLS] A [SEP] B [SEP]": the caption rows' own SOT is
[CLS] and their EOT is [SEP] (A keeps its SOT and EOT, B drops its SOT), padded to 2T - 1 tokens.
The masked LM then corrupts the pair as BERT does (15% of the ordinary tokens chosen; 80% [MASK],
10% random, 10% kept; never [CLS], [SEP] or PAD), and the loss is

    L = CE of the original tokens at the chosen positions (mean over them)
        + nsp_weight * CE of IsNext / NotNext from [CLS] (mean over the examples).

The model is called as `model(tokens, segments)` with BERT's segment ids (0 on "[CLS] A [SEP]",
1 on "B [SEP]", from `pack_pairs`), which `attn_jax.models.pretext.BertPretraining` embeds and adds
to the token and position embeddings as BERT does; it must return the NSP logits as
aux["nsp_logits"] [B, 2] (class 0 IsNext).

Captions of another image may describe the same digit (one time in ten on digit_captions), and
such a NotNext pair cannot be told from an IsNext one by their words: NSP accuracy stays below
about 95% by construction there.

Randomness: training draws each example's pair and masks from the step's key folded with a fixed
tag (a resumed run draws the same); evaluation derives them from a fixed seed and all of the
example's captions, and takes the NotNext caption from the next real example of the batch, so an
evaluation at a fixed batch size always scores the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from attn_jax.errors import UserError
from attn_jax.tasks.masked_language import MaskedLanguage

_PAIR_TAG = 0x4E5350  # "NSP": the pair stream differs from dropout's and from the masking's
IS_NEXT, NOT_NEXT = 0, 1


class NextSentenceConfigError(UserError, ValueError):
    """A BERT pretraining setting that cannot work with the data or the model; one line."""


def pack_pairs(a: jax.Array, b: jax.Array, pad_id: int) -> tuple[jax.Array, jax.Array]:
    """ "[CLS] A [SEP] B [SEP]" from two caption rows each.

    Args:
      a: int [B, T] rows "SOT words EOT PAD...": SOT serves as [CLS] and EOT as the first [SEP].
      b: int [B, T] rows of the same form: its SOT is dropped, its EOT is the last [SEP].
      pad_id: the PAD id.

    Returns:
      (tokens int [B, 2T - 1], segments int [B, 2T - 1]): A's tokens, then B's, then PAD;
      segment 0 on A's tokens, 1 on B's, 0 on PAD.
    """
    t = a.shape[-1]
    length = 2 * t - 1
    len_a = (a != pad_id).sum(-1, keepdims=True)  # [B, 1]
    pos = jnp.arange(length)[None, :]
    b_index = pos - len_a + 1  # B's token at pair position len_a + j - 1 is b[j], j >= 1
    a_part = jnp.pad(a, ((0, 0), (0, t - 1)), constant_values=pad_id)
    b_part = jnp.take_along_axis(b, jnp.clip(b_index, 0, t - 1), axis=1)
    in_b = (b_index >= 1) & (b_index < t)
    tokens = jnp.where(pos < len_a, a_part, jnp.where(in_b, b_part, pad_id))
    segments = ((pos >= len_a) & (tokens != pad_id)).astype(jnp.int32)
    return tokens.astype(a.dtype), segments


def make_pairs(
    captions: jax.Array,
    keys: jax.Array,
    num_real: jax.Array,
    *,
    pad_id: int,
    is_next_prob: float = 0.5,
    random_partner: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sentence pairs of the module docstring, one per image.

    Args:
      captions: int [B, K, T], the real examples first (evaluation pads at the end).
      keys: [B] PRNG keys, one per image.
      num_real: n, the number of real examples (a traced scalar is fine).
      pad_id: the PAD id.
      is_next_prob: probability of IsNext.
      random_partner: NotNext takes its caption from image (i + s) mod n with s uniform in
        1..n-1 (training), or s = 1 (evaluation: the same pairs at every evaluation).

    Returns:
      (tokens int [B, 2T - 1], segments int [B, 2T - 1], is_next bool [B]).
    """
    b, k, _ = captions.shape
    n = jnp.maximum(num_real, 1)

    def draw(key):
        first_key, next_key, shift_key, other_key = jax.random.split(key, 4)
        first = jax.random.randint(first_key, (), 0, k - 1)
        is_next = jax.random.bernoulli(next_key, is_next_prob)
        shift = jax.random.randint(shift_key, (), 1, jnp.maximum(n, 2))
        other = jax.random.randint(other_key, (), 0, k)
        return first, is_next, shift, other

    first, is_next, shift, other = jax.vmap(draw)(keys)
    if not random_partner:
        shift = jnp.ones_like(shift)
    rows = jnp.arange(b)
    partner = jnp.where(rows < n, (rows + shift) % n, rows)
    a = captions[rows, first]
    b_rows = jnp.where(
        is_next[:, None], captions[rows, first + 1], captions[partner, other]
    )  # [B, T]
    tokens, segments = pack_pairs(a, b_rows, pad_id)
    return tokens, segments, is_next


class NextSentenceMaskedLanguage(MaskedLanguage):
    """BERT pretraining, masked LM + NSP, for `model(tokens, segments) -> (logits [B, L, V], aux
    with "nsp_logits" [B, 2])` on image-text batches {"captions" int [B, K, T], "mask" bool [B]}.

    Args:
      num_classes: unused (the dataset's classes).
      is_next_prob: share of IsNext pairs (BERT: 0.5).
      nsp_weight: weight of the NSP loss (BERT sums the two: 1).
      captions_key: the batch key of the captions.
      mask_prob, replace_mask, replace_random, vocab_size, mask_id, special_ids: the masked LM's
        (`MaskedLanguage`).
    """

    evaluation = "nsp_mlm"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = ("nsp_accuracy", "mlm_accuracy", "loss")

    def __init__(
        self,
        num_classes: int = 0,
        is_next_prob: float = 0.5,
        nsp_weight: float = 1.0,
        captions_key: str = "captions",
        mask_prob: float = 0.15,
        replace_mask: float = 0.8,
        replace_random: float = 0.1,
        vocab_size: int | None = None,
        mask_id: int | None = None,
        special_ids: Sequence[int] | None = None,
    ):
        super().__init__(
            num_classes,
            mask_prob=mask_prob,
            replace_mask=replace_mask,
            replace_random=replace_random,
            tokens_key=captions_key,
            vocab_size=vocab_size,
            mask_id=mask_id,
            special_ids=special_ids,
        )
        if not 0.0 < is_next_prob < 1.0:
            raise NextSentenceConfigError(
                f"bert is_next_prob={is_next_prob} must be strictly between 0 and 1"
            )
        if nsp_weight < 0:
            raise NextSentenceConfigError(f"bert nsp_weight={nsp_weight} must be >= 0")
        self.is_next_prob = float(is_next_prob)
        self.nsp_weight = float(nsp_weight)
        self.captions_key = captions_key

    @property
    def pad_id(self) -> int:
        return int(getattr(self.vocab, "pad_id", 0)) if self.vocab is not None else 0

    def init_inputs(self, spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: one pair of 2T - 1 tokens and its segments."""
        length = getattr(spec, "text_length", None)
        captions = getattr(spec, "num_captions", None) or 0
        if length is None or captions < 2:
            raise NextSentenceConfigError(
                f"dataset {spec.name!r} has no images with several captions; next-sentence "
                "prediction needs an image-text dataset such as digit_captions"
            )
        pair = jax.ShapeDtypeStruct((1, 2 * int(length) - 1), jnp.int32)
        return pair, pair

    def _sums(self, model, params, batch, keys, *, train: bool, dropout_key=None):
        captions = batch[self.captions_key]
        real = batch["mask"].astype(bool)
        pair_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
        mask_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 2)
        tokens, segments, is_next = make_pairs(
            captions,
            pair_keys,
            real.sum(),
            pad_id=self.pad_id,
            is_next_prob=self.is_next_prob,
            random_partner=train,
        )
        corrupted, chosen = self.corrupt(mask_keys, tokens)
        chosen = chosen & real[:, None]
        rngs = {"dropout": dropout_key} if dropout_key is not None else {}
        logits, aux = model.apply({"params": params}, corrupted, segments, train=train, rngs=rngs)
        if "nsp_logits" not in aux:
            raise NextSentenceConfigError(
                f"bert needs a model with next-sentence logits (aux['nsp_logits']); "
                f"{type(model).__name__} has none: set model.name=bert"
            )
        logits = logits.astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens)
        weight = chosen.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == tokens).astype(jnp.float32)
        labels = jnp.where(is_next, IS_NEXT, NOT_NEXT)
        nsp_logits = aux["nsp_logits"].astype(jnp.float32)
        nsp_nll = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, labels)
        nsp_correct = (jnp.argmax(nsp_logits, -1) == labels).astype(jnp.float32)
        w = real.astype(jnp.float32)
        return {
            "mlm_loss": (nll * weight).sum(),
            "mlm_accuracy": (correct * weight).sum(),
            "tokens": weight.sum(),
            "nsp_loss": (nsp_nll * w).sum(),
            "nsp_accuracy": (nsp_correct * w).sum(),
            "count": w.sum(),
        }

    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked-LM CE over the chosen tokens + nsp_weight * NSP CE over the examples."""
        b = batch["mask"].shape[0]
        keys = jax.random.split(jax.random.fold_in(rng, _PAIR_TAG), b)
        sums = self._sums(model, params, batch, keys, train=train, dropout_key=rng)
        metrics = self._means(sums)
        return metrics["loss"], metrics

    def _means(self, sums):
        tokens = jnp.maximum(sums["tokens"], 1.0)
        count = jnp.maximum(sums["count"], 1.0)
        out = {
            "mlm_loss": sums["mlm_loss"] / tokens,
            "mlm_accuracy": sums["mlm_accuracy"] / tokens,
            "nsp_loss": sums["nsp_loss"] / count,
            "nsp_accuracy": sums["nsp_accuracy"] / count,
        }
        return {"loss": out["mlm_loss"] + self.nsp_weight * out["nsp_loss"], **out}

    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the real examples, with the fixed evaluation pairs and masks."""
        captions = batch[self.captions_key]
        # From every caption, not the first alone: images whose first captions are equal (half
        # the digit_captions test split) would otherwise share one IsNext draw, and the share of
        # IsNext pairs of a split would drift far from is_next_prob (0.44 measured on test).
        keys = self.eval_keys(captions.reshape(captions.shape[0], -1))
        return self._sums(model, params, batch, keys, train=False)

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in self._means({k: float(v) for k, v in sums.items()}).items()}


__all__ = [
    "IS_NEXT",
    "NOT_NEXT",
    "NextSentenceConfigError",
    "NextSentenceMaskedLanguage",
    "make_pairs",
    "pack_pairs",
]
