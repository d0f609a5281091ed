"""Text (sequence-to-sequence) batches: vocabularies, token arrays and the batch map.

A text batch is `inputs` int32 [b, S] (source tokens, EOS, then PAD = 0), `targets` int32 [b, T]
(target tokens, EOS, then PAD), `length` int32 [b] (source tokens before EOS: characters for the
character-level datasets), `mask` bool [b]. S and T are fixed per dataset: for `dates` and
`reverse` the longest source and target over all splits plus one for EOS (from the registry),
for wmt14 `data.max_length` (default 128), sources and targets longer than S - 1 / T - 1 tokens
being cut there, before EOS. The decoder input (BOS + targets shifted right) is left to the task.

Vocabularies (`get_vocab`): the character vocabulary of the embedded builders, and for wmt14 one
sentencepiece unigram model shared by German and English (`data.vocab_size` pieces, default
32,000), trained on first use from SPM_TRAIN_PAIRS sentence pairs evenly spaced over the training
split (both languages), with the reserved ids of text.py, and stored in
`{data_dir}/attn_jax_vocab/` under a lock, as the embedded datasets are prepared. Nothing is
downloaded.

The stream of examples (shuffle, epochs, per-process slices, eval padding) is stream.py's, the
same as for images; text has no augmentation.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.data import sources, stream
from attn_jax.data import text as text_lib
from attn_jax.data.dates import dates_dataset_builder
from attn_jax.data.registry import DatasetEntry, get_entry
from attn_jax.data.reverse import reverse_dataset_builder

SPM_TRAIN_PAIRS = 100_000
_CHAR_VOCABS = {"dates": dates_dataset_builder.VOCAB, "reverse": reverse_dataset_builder.VOCAB}

Vocab = text_lib.CharVocab | text_lib.SentencePieceVocab


def sequence_lengths(entry: DatasetEntry, max_length: int | None) -> tuple[int, int]:
    """(S, T): tokens per source and per target row, EOS included."""
    if entry.tokenizer == "char":
        assert entry.max_input_length and entry.max_target_length, entry
        return entry.max_input_length, entry.max_target_length
    length = max_length or entry.default_max_length
    return length, length


# -- vocabularies ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(data_dir: str, name: str):
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / f".{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def spm_model_path(entry: DatasetEntry, data_dir: str, vocab_size: int) -> Path:
    """Where the sentencepiece model of `entry` with `vocab_size` pieces lives in `data_dir`."""
    stem = entry.tfds_name.replace("/", "_")
    return Path(data_dir) / "attn_jax_vocab" / f"{stem}.spm{vocab_size}.model"


def train_sentencepiece(entry: DatasetEntry, data_dir: str, vocab_size: int) -> Path:
    """Trains (once, under a lock) the shared source/target sentencepiece model; returns its
    path. The catalog dataset must be prepared (else `DatasetNotFoundError`)."""
    path = spm_model_path(entry, data_dir, vocab_size)
    if path.is_file():
        return path
    source = sources.open_source(entry, "train", data_dir)
    with _locked(data_dir, f"{path.name}.train"):
        if path.is_file():  # another process trained it meanwhile
            return path
        import sentencepiece as spm

        print(f"training the sentencepiece model {path}", file=sys.stderr)
        picks = np.unique(np.linspace(0, len(source) - 1, min(SPM_TRAIN_PAIRS, len(source))))
        sentences = []
        for chunk in np.array_split(picks.astype(np.int64), max(1, len(picks) // 1024)):
            for ex in sources.read_examples(source, chunk):
                sentences += [_as_str(ex[entry.source_key]), _as_str(ex[entry.target_key])]
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(s for s in sentences if s.strip()),
            model_writer=model,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small text (tests) gives fewer pieces, not an error
            model_type="unigram",
            character_coverage=1.0,
            pad_id=text_lib.PAD,
            bos_id=text_lib.BOS,
            eos_id=text_lib.EOS,
            unk_id=text_lib.UNK,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".partial{os.getpid()}")
        partial.write_bytes(model.getvalue())
        partial.rename(path)  # readers never see half a model
    return path


@functools.lru_cache(maxsize=8)
def load_vocab(name: str, data_dir: str, vocab_size: int | None) -> Vocab:
    """The vocabulary of dataset `name` (trained first for wmt14)."""
    if name in _CHAR_VOCABS:
        return _CHAR_VOCABS[name]
    entry = get_entry(name)
    size = vocab_size or entry.default_vocab_size
    return text_lib.SentencePieceVocab(str(train_sentencepiece(entry, data_dir, size)), size)


# -- token arrays ---------------------------------------------------------------------------------
def encode_examples(
    examples: Sequence[dict[str, Any]], entry: DatasetEntry, vocab: Vocab, lengths: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs int32 [N, S], targets int32 [N, T], length int32 [N]) of decoded examples."""
    src = [_as_str(ex[entry.source_key]) for ex in examples]
    tgt = [_as_str(ex[entry.target_key]) for ex in examples]
    if isinstance(vocab, text_lib.SentencePieceVocab):
        src_ids, tgt_ids = vocab.encode_batch(src), vocab.encode_batch(tgt)
    else:
        src_ids, tgt_ids = [vocab.encode(s) for s in src], [vocab.encode(t) for t in tgt]
    inputs = text_lib.pad_sequences(src_ids, lengths[0])
    targets = text_lib.pad_sequences(tgt_ids, lengths[1])
    length = np.asarray([min(len(s), lengths[0] - 1) for s in src_ids], np.int32)
    return inputs, targets, length


@functools.lru_cache(maxsize=8)
def load_split_tokens(
    name: str, split: str, data_dir: str, vocab_size: int | None, lengths: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole split encoded in memory (read-only), cached per process."""
    entry = get_entry(name)
    vocab = load_vocab(name, data_dir, vocab_size)
    source = sources.open_source(entry, split, data_dir)
    parts = [
        encode_examples(
            sources.read_examples(source, np.arange(i, min(i + 4096, len(source)))),
            entry,
            vocab,
            lengths,
        )
        for i in range(0, len(source), 4096)
    ]
    arrays = tuple(np.concatenate([p[j] for p in parts]) for j in range(3)) if parts else None
    if arrays is None:
        arrays = (np.zeros((0, lengths[0]), np.int32), np.zeros((0, lengths[1]), np.int32))
        arrays += (np.zeros((0,), np.int32),)
    for a in arrays:
        a.setflags(write=False)
    return arrays


class TextExamples:
    """Random access to one split as token arrays."""

    def __init__(
        self,
        entry: DatasetEntry,
        split: str,
        data_dir: str,
        *,
        cache: bool | None,
        vocab_size: int | None,
        max_length: int | None,
    ):
        self.lengths = sequence_lengths(entry, max_length)
        self.in_memory = bool(entry.embedded if cache is None else cache)
        self._entry = entry
        if self.in_memory:
            self._arrays = load_split_tokens(entry.name, split, data_dir, vocab_size, self.lengths)
            self._len = len(self._arrays[2])
        else:
            self._source = sources.open_source(entry, split, data_dir)
            self._len = len(self._source)
            self._vocab = load_vocab(entry.name, data_dir, vocab_size)

    def __len__(self) -> int:
        return self._len

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.in_memory:
            return tuple(a[indices] for a in self._arrays)
        examples = sources.read_examples(self._source, indices)
        return encode_examples(examples, self._entry, self._vocab, self.lengths)


class TextBatchMaker:
    """Process `process_index`'s part of global text batch k, as a function of k alone."""

    def __init__(self, examples: TextExamples, **stream_kwargs: Any):
        self._examples = examples
        self._positions = stream.BatchPositions(len(examples), **stream_kwargs)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        _, valid, indices = self._positions(step)
        b = len(valid)
        s, t = self._examples.lengths
        if valid.all():
            inputs, targets, length = self._examples.read(indices)
            return {"inputs": inputs, "targets": targets, "length": length, "mask": valid}
        batch = {
            "inputs": np.zeros((b, s), np.int32),
            "targets": np.zeros((b, t), np.int32),
            "length": np.zeros((b,), np.int32),
            "mask": valid,
        }
        if valid.any():
            read = self._examples.read(indices)
            for key, values in zip(("inputs", "targets", "length"), read, strict=True):
                batch[key][valid] = values
        return batch
