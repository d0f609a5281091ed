"""Image-text contrastive learning and zero-shot evaluation (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision", ICML 2021).

Training (Fig. 3 pseudocode, sec. 2.5): for N aligned (image, text) pairs the model returns the
scaled cosine similarities logits [N, N]; with labels = arange(N)

    loss = (CE(logits, labels) + CE(logits^T, labels)) / 2,

each image classifying its own caption among the batch's texts and each text its own image. The
matrix covers the GLOBAL batch: under jit with the batch sharded on the mesh's "data" axis the
einsum over the two embedding matrices is partitioned by GSPMD, which gathers the text
embeddings as needed, so the loss is the same on one device or many. Padding rows (mask False)
are removed from both the rows and the columns: no real example is asked to beat a padded one.

Evaluation (sec. 3.1.2 and 3.1.4): zero-shot classification with prompt ensembling. The class
embedding is the mean over the class's prompts of the normalized text embeddings, renormalized;
an image is assigned the class of highest cosine similarity. The prompts are the dataset's
held-out templates (`attn_jax.data.zero_shot_prompts`), which the trainer sets on the task
because `needs_prompts` is true. Also reported: the in-batch retrieval accuracies (image ->
its caption among the batch's `tokens`, text -> its image) and, when the batch carries several
`captions` per image, the accuracy of retrieving one of an image's own captions among all the
batch's captions ("caption_retrieval_accuracy") and that of retrieving a caption of an image of
the same label ("caption_label_accuracy"). The retrieval numbers depend on the eval batch size
(more candidates, harder); where many images share a class and their captions come from the same
templates, as in digit_captions, retrieving an image's very own caption is mostly luck, and the
label accuracy is the informative one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.masks import large_negative

# The figure kind of `figure_data` (attn_jax.figures draws it into <kind>.png).
SIMILARITY_FIGURE = "clip_similarity"
SIMILARITY_FILE = f"{SIMILARITY_FIGURE}.png"


def contrastive_loss(
    logits_per_image: jax.Array, valid: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The symmetric cross-entropy of CLIP's Fig. 3 over the valid pairs.

    Args:
      logits_per_image: [N, N], row i the scaled similarities of image i with every text; pair i
        is (image i, text i).
      valid: bool [N]; False rows AND columns (padding) are left out. None: all valid.

    Returns:
      (loss, metrics) with metrics "loss", "loss_i2t", "loss_t2i", "i2t_accuracy" and
      "t2i_accuracy" (the fraction of images whose top text is their own, and vice versa).
    """
    logits = logits_per_image.astype(jnp.float32)
    n = logits.shape[0]
    assert logits.shape == (n, n), f"contrastive logits must be square, got {logits.shape}"
    valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
    weight = valid.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    columns = valid[None, :]  # padded texts (images) are no candidates

    def direction(scores):
        scores = jnp.where(columns, scores, large_negative(scores.dtype))
        ce = jax.nn.logsumexp(scores, axis=-1) - jnp.diagonal(scores)
        correct = (jnp.argmax(scores, axis=-1) == jnp.arange(n)).astype(jnp.float32)
        return (ce * weight).sum() / count, (correct * weight).sum() / count

    loss_i2t, acc_i2t = direction(logits)
    loss_t2i, acc_t2i = direction(logits.T)
    loss = (loss_i2t + loss_t2i) / 2
    return loss, {
        "loss": loss,
        "loss_i2t": loss_i2t,
        "loss_t2i": loss_t2i,
        "i2t_accuracy": acc_i2t,
        "t2i_accuracy": acc_t2i,
    }


def ensemble_prompts(prompt_embeds: jax.Array) -> jax.Array:
    """Class embeddings from normalized prompt embeddings [K, M, E]: the mean over each class's
    M prompts, renormalized (sec. 3.1.4, prompt ensembling in the embedding space): float32
    [K, E]."""
    mean = prompt_embeds.astype(jnp.float32).mean(axis=1)  # [K, E]
    return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def zero_shot_classifier(model, params, prompt_tokens: jax.Array) -> jax.Array:
    """Class embeddings from prompt templates (sec. 3.1.4, prompt ensembling).

    Args:
      model: a CLIP-like module with `encode_text(tokens) -> normalized [B, E]`.
      params: its 'params'.
      prompt_tokens: int [K, M, T]: M prompts for each of K classes.

    Returns:
      float32 [K, E]: the renormalized mean of each class's normalized prompt embeddings.
    """
    k, m, t = prompt_tokens.shape
    embeds = model.apply(
        {"params": params}, jnp.reshape(prompt_tokens, (k * m, t)), method="encode_text"
    )
    return ensemble_prompts(embeds.reshape(k, m, -1))


def zero_shot_predict(image_embeds: jax.Array, class_embeds: jax.Array) -> jax.Array:
    """Class of highest cosine similarity for each normalized image embedding: int32 [B]."""
    return jnp.argmax(image_embeds @ class_embeds.T, axis=-1).astype(jnp.int32)


class Contrastive:
    """Loss and metrics for `model(images, tokens) -> (logits_per_image, aux)` (CLIP) on batches
    {"image" [B, H, W, C], "tokens" int [B, T], "label" int [B], "mask" bool [B]} and optionally
    "captions" int [B, M, T].

    Args:
      num_classes: classes of the zero-shot evaluation (the dataset's).
      text_key: the batch key of the caption paired with each image.
      captions_key: the batch key of all captions of each image, for caption retrieval.
      num_plot_examples: images (and their captions) in the similarity figure.
    """

    evaluation = "zero_shot"  # the evaluator type it serves (eval/evaluators.py)

    target_metrics = (
        "zero_shot_accuracy",
        "caption_label_accuracy",
        "caption_retrieval_accuracy",
        "i2t_accuracy",
        "loss",
    )
    curve_metrics = ("loss", "zero_shot_accuracy", "i2t_accuracy", "logit_scale")
    needs_prompts = True  # the trainer sets `prompts` and `class_names` (zero_shot_prompts)
    needs_vocab = True  # the similarity figure prints the captions

    def __init__(
        self,
        num_classes: int = 0,
        text_key: str = "tokens",
        captions_key: str = "captions",
        num_plot_examples: int = 8,
    ):
        self.num_classes = int(num_classes)
        self.text_key = text_key
        self.captions_key = captions_key
        self.num_plot_examples = int(num_plot_examples)
        self.prompts: np.ndarray | None = None  # int [K, M, T]
        self.class_names: list[str] | None = None
        self.vocab = None

    def init_inputs(self, spec) -> tuple[jax.ShapeDtypeStruct, ...]:
        """The model's arguments for one example: an image and a token row."""
        if spec.image_shape is None:
            raise ValueError(
                f"dataset {spec.name!r} has no images; the contrastive task needs an image_text "
                f"dataset such as digit_captions"
            )
        length = getattr(spec, "text_length", None)
        if length is None:
            element = getattr(spec, "element_spec", None) or {}
            if self.text_key not in element:
                raise ValueError(
                    f"dataset {spec.name!r} has no {self.text_key!r} text; the contrastive task "
                    f"needs an image_text dataset such as digit_captions"
                )
            length = element[self.text_key][0][0]
        return (
            jax.ShapeDtypeStruct((1, *spec.image_shape), jnp.float32),
            jax.ShapeDtypeStruct((1, int(length)), jnp.int32),
        )

    # -- training ---------------------------------------------------------------------------------
    def loss(
        self, model, params, batch: dict[str, jax.Array], rng: jax.Array, train: bool = True
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Symmetric CE over the global batch's valid pairs; metrics include the multiplier."""
        logits, aux = model.apply(
            {"params": params},
            batch["image"],
            batch[self.text_key],
            train=train,
            rngs={"dropout": rng},
        )
        loss, metrics = contrastive_loss(logits, batch["mask"])
        metrics["logit_scale"] = aux["logit_scale"]
        return loss, metrics

    # -- evaluation -------------------------------------------------------------------------------
    def eval_sums(self, model, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Sums over the batch's real examples (added over batches and devices by the loop)."""
        tokens = batch[self.text_key]
        b, length = tokens.shape
        texts = [tokens]
        captions = batch.get(self.captions_key)
        if captions is not None:
            texts.append(captions.reshape(-1, length))  # [B*M, T]
        if self.prompts is not None:
            prompts = jnp.asarray(self.prompts)
            if prompts.shape[-1] != length:
                raise ValueError(
                    f"zero-shot prompts have {prompts.shape[-1]} tokens per row but the batch "
                    f"{length}: tokenize them with the dataset's text_length"
                )
            texts.append(prompts.reshape(-1, length))  # [K*M, T]
        # One pass of each tower over every image and text: one copy of each in the compiled step.
        logits, aux = model.apply(
            {"params": params}, batch["image"], jnp.concatenate(texts), train=False
        )
        image_embeds, text_embeds = aux["image_embeds"], aux["text_embeds"]
        valid = batch["mask"].astype(bool)
        weight = valid.astype(jnp.float32)
        count = weight.sum()
        _, metrics = contrastive_loss(logits[:, :b], valid)
        sums = {name: metrics[name] * count for name in ("loss", "i2t_accuracy", "t2i_accuracy")}
        sums["count"] = count
        start = b
        if captions is not None:
            n = captions.shape[0] * captions.shape[1]
            own, same_label = self._caption_retrieval(
                image_embeds, text_embeds[start : start + n], captions, batch["label"], valid
            )
            sums["caption_retrieval_accuracy"] = own
            sums["caption_label_accuracy"] = same_label
            start += n
        if self.prompts is not None:
            k, m = self.prompts.shape[:2]
            classes = ensemble_prompts(text_embeds[start : start + k * m].reshape(k, m, -1))
            predicted = zero_shot_predict(image_embeds, classes)
            sums["zero_shot_accuracy"] = ((predicted == batch["label"]) * weight).sum()
        return sums

    @staticmethod
    def _caption_retrieval(image_embeds, caption_embeds, captions, labels, valid):
        """Among all captions of the batch (rows that are all padding are no candidates), the
        number of images whose most similar caption is one of their own, and the number whose
        most similar caption belongs to an image of their label (many images share a class, and
        their captions come from the same templates)."""
        b, m, _ = captions.shape
        owner = jnp.repeat(jnp.arange(b), m)  # [B*M]
        candidate = valid[owner] & jnp.any(captions.reshape(b * m, -1) != 0, axis=-1)
        scores = jnp.where(candidate[None, :], image_embeds @ caption_embeds.T, -jnp.inf)
        best = owner[jnp.argmax(scores, axis=-1)]  # [B]
        own = ((best == jnp.arange(b)) * valid).sum().astype(jnp.float32)
        same_label = ((labels[best] == labels) * valid).sum().astype(jnp.float32)
        return own, same_label

    @staticmethod
    def finalize(sums: dict[str, Any]) -> dict[str, float]:
        count = max(float(sums["count"]), 1.0)
        return {k: float(v) / count for k, v in sums.items() if k != "count"}

    # -- figure -----------------------------------------------------------------------------------
    def figure_data(self, model, params, batch: dict[str, Any], vocab) -> dict[str, Any]:
        """What attn_jax.figures draws after training: {"clip_similarity": the first real images
        of `batch`, their captions as text and the cosine similarities [images, captions]}; {}
        when the batch holds no real example."""
        vocab = vocab if vocab is not None else self.vocab
        keep = np.flatnonzero(np.asarray(batch["mask"]))[: self.num_plot_examples]
        if keep.size == 0:
            return {}
        images = np.asarray(batch["image"])[keep]
        tokens = np.asarray(batch[self.text_key])[keep]
        # Compiled: op-by-op execution of the two towers is far slower than one compile.
        similarity = jax.jit(
            lambda p, x, t: jnp.einsum(
                "ie,te->it",
                model.apply({"params": p}, x, method="encode_image"),
                model.apply({"params": p}, t, method="encode_text"),
            )
        )
        cosine = np.asarray(similarity(params, jnp.asarray(images), jnp.asarray(tokens)))
        texts = [_caption_text(row, vocab) for row in tokens]
        return {
            SIMILARITY_FIGURE: {
                "images": images,
                "texts": texts,
                "cosine": cosine,
            }
        }


def _caption_text(ids: np.ndarray, vocab) -> str:
    if vocab is None:
        return " ".join(str(int(i)) for i in ids if i)
    return vocab.decode([int(i) for i in ids])
