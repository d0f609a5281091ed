"""Image-text data: the word vocabulary of the digit captions, tokenization, zero-shot prompts,
and reading captioned examples for image-text batches (pipeline.py assembles the batches).

Tokens: a text is lowercased and split into words (runs of letters and digits) and punctuation
marks, each mark a token of its own ("two digits: 3" -> two, digits, :, 3); whitespace only
separates. `decode` writes the tokens back with one space between words and none before a mark,
which gives back every caption exactly (`tests/data` checks the whole dataset).

Ids (`WordVocab`): PAD = 0, UNK = 1, MASK = 2 (BERT's [MASK], Devlin et al. 2019, sec. 3.1),
SOT = 3, then the words of `VOCAB_WORDS` in sorted order, then EOT, the largest id, so that the
argmax of a row of ids finds EOT as OpenAI CLIP's text pooling expects (Radford et al. 2021). The
word list is fixed: every word of every template of the `digit_captions` builder (training and
held-out), digit words and numerals, and the words its fields produce; a caption therefore never
holds UNK. A row of `tokenize` is SOT, the words, EOT, then PAD; a text longer than length - 2
tokens is cut before EOT, so every row keeps its EOT.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from attn_jax.data import sources
from attn_jax.data import transforms as T
from attn_jax.data.digit_captions import digit_captions_dataset_builder as builder
from attn_jax.data.registry import DatasetEntry, get_entry

PAD, UNK, MASK, SOT = 0, 1, 2, 3
NUM_SPECIAL = 4  # ids below the words; EOT comes after them
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_CAPTION = 3  # purpose folded into the caption-choice key (stream.py: 1 shuffle, 2 augmentation)


def split_words(text: str) -> list[str]:
    """The tokens of `text`: lowercased words and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def _template_words(template: str) -> list[str]:
    literal = " ".join(text for text, _, _, _ in string.Formatter().parse(template))
    return split_words(literal)


def vocabulary_words() -> tuple[str, ...]:
    """Every token a caption or prompt of `digit_captions` can hold, sorted."""
    words = set(builder.DIGIT_WORDS + builder.NUMERALS + builder.FIELD_WORDS)
    for table in (builder.TRAIN_TEMPLATES, builder.HELDOUT_TEMPLATES):
        for templates in table.values():
            for template in templates:
                words.update(_template_words(template))
    return tuple(sorted(words))


class WordVocab:
    """Words <-> ids over a fixed word list: PAD, UNK, MASK, SOT, the words, EOT (largest).

    Attributes:
        words: the words, in id order (ids NUM_SPECIAL, NUM_SPECIAL + 1, ...).
        size: number of ids, NUM_SPECIAL + len(words) + 1.
        pad_id, unk_id, mask_id, sot_id, eot_id: the special ids.
    """

    pad_id = PAD
    unk_id = UNK
    mask_id = MASK
    sot_id = SOT

    def __init__(self, words: Sequence[str]):
        assert len(set(words)) == len(words), "repeated words"
        self.words = tuple(words)
        self._ids = {w: NUM_SPECIAL + i for i, w in enumerate(self.words)}
        self.eot_id = NUM_SPECIAL + len(self.words)
        self.size = self.eot_id + 1

    def encode(self, text: str) -> list[int]:
        """The ids of the tokens of `text` (UNK for unknown ones), without SOT and EOT."""
        return [self._ids.get(w, UNK) for w in split_words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids` up to the first EOT; PAD and SOT are skipped, UNK reads "<unk>" and
        MASK "<mask>"."""
        out = ""
        for i in ids:
            i = int(i)
            if i == self.eot_id:
                break
            if i in (PAD, SOT):
                continue
            if i == UNK:
                word = "<unk>"
            elif i == MASK:
                word = "<mask>"
            else:
                word = self.words[i - NUM_SPECIAL] if NUM_SPECIAL <= i < self.eot_id else "<unk>"
            attach = not word[0].isalnum() and word[0] != "<"
            out += word if (attach or not out) else " " + word
        return out

    def tokenize(self, texts: Sequence[str], length: int) -> np.ndarray:
        """int32 [len(texts), length]: SOT, the tokens (cut at length - 2), EOT, then PAD."""
        if length < 2:
            raise ValueError(f"a token row holds SOT and EOT: length must be >= 2, got {length}")
        out = np.zeros((len(texts), length), np.int32)
        for row, text in zip(out, texts, strict=True):
            ids = self.encode(text)[: length - 2]
            row[0] = SOT
            row[1 : 1 + len(ids)] = ids
            row[1 + len(ids)] = self.eot_id
        return out

    def __repr__(self) -> str:
        return f"WordVocab(size={self.size})"


VOCAB = WordVocab(vocabulary_words())


def tokenize(texts: Sequence[str], length: int) -> np.ndarray:
    """`VOCAB.tokenize`: int32 [len(texts), length] rows SOT, tokens, EOT, PAD."""
    return VOCAB.tokenize(texts, length)


def config_of(entry: DatasetEntry) -> str:
    """The builder config ("digits" or "scenes") an image-text entry reads."""
    assert entry.kind == "image_text", entry
    return entry.tfds_name.partition("/")[2]


def zero_shot_prompts(entry: DatasetEntry) -> tuple[np.ndarray, list[str]]:
    """(tokens int32 [num_classes, M, T], class names): row m of class k is held-out template
    m // names filled with name m % names of class k (every class has the same number of names:
    its word, then its numeral); the class names are the first names ("seven", "three digits")."""
    config = config_of(entry)
    names = builder.CLASS_NAMES[config]
    texts = [
        builder.fill(template, name)
        for class_names in names
        for template in builder.HELDOUT_TEMPLATES[config]
        for name in class_names
    ]
    tokens = VOCAB.tokenize(texts, entry.text_length)
    return tokens.reshape(len(names), -1, entry.text_length), [n[0] for n in names]


# -- reading ---------------------------------------------------------------------------------------
def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_examples(
    entry: DatasetEntry, examples: Sequence[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded examples -> (uint8 images [N, H, W, C], int32 labels [N], int32 captions
    [N, entry.num_captions, entry.text_length])."""
    k, t = entry.num_captions, entry.text_length
    images = np.zeros((len(examples), *entry.image_shape), np.uint8)
    labels = np.zeros((len(examples),), np.int32)
    texts = []
    for i, ex in enumerate(examples):
        images[i] = np.asarray(ex["image"], np.uint8).reshape(entry.image_shape)
        labels[i] = int(ex["label"])
        captions = [_as_str(c) for c in ex["captions"]]
        assert len(captions) == k, (entry.name, len(captions))
        texts += captions
    return images, labels, VOCAB.tokenize(texts, t).reshape(len(examples), k, t)


@functools.lru_cache(maxsize=8)
def load_split(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole split in memory, read-only, as `parse_examples` returns it; cached per process
    (evaluation rebuilds its pipeline every time and must not re-read)."""
    entry = get_entry(name)
    source = sources.open_source(entry, split, data_dir)
    parts = [
        parse_examples(entry, sources.read_examples(source, np.arange(i, min(i + 1024, n))))
        for n in [len(source)]
        for i in range(0, n, 1024)
    ]
    arrays = tuple(np.concatenate([p[j] for p in parts]) for j in range(3))
    for a in arrays:
        a.setflags(write=False)
    return arrays


class ImageTextExamples:
    """Random access to one split: (images, labels, captions) for an array of indices."""

    def __init__(self, entry: DatasetEntry, split: str, data_dir: str, cache: bool | None):
        self._entry = entry
        self.in_memory = bool(entry.embedded if cache is None else cache)
        if self.in_memory:
            self._arrays = load_split(entry.name, split, data_dir)
            self._len = len(self._arrays[1])
        else:
            self._source = sources.open_source(entry, split, data_dir)
            self._len = len(self._source)

    def __len__(self) -> int:
        return self._len

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 images [N, H, W, C], int32 labels [N], int32 captions [N, K, T]."""
        if self.in_memory:
            return tuple(a[indices] for a in self._arrays)
        return parse_examples(self._entry, sources.read_examples(self._source, indices))


def caption_key(seed: int) -> int:
    """The key the training caption choice draws from."""
    return T.fold_key(seed, _CAPTION)


def choose_captions(captions: np.ndarray, positions: np.ndarray, key: int | None) -> np.ndarray:
    """One caption row per example, int32 [N, T], from captions [N, K, T]: caption
    floor(u * K) with u drawn from (key, stream position), or caption 0 where key is None."""
    if key is None:
        return captions[:, 0]
    u = T.random_uniform(key, positions, 1)[:, 0]
    k = np.minimum((u * captions.shape[1]).astype(np.int64), captions.shape[1] - 1)
    return captions[np.arange(len(captions)), k]
