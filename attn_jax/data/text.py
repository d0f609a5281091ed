"""Vocabularies of the text datasets: token ids <-> strings.

Every vocabulary reserves the same four ids, so that models and tasks need not ask:
PAD = 0 (padding, masked out of losses), BOS = 1 (start of the decoder input, which the task
prepends), EOS = 2 (ends every source and target sequence), UNK = 3 (a symbol outside the
vocabulary). `decode` stops at the first EOS and skips PAD and BOS, so a model's padded output
decodes to the string it means.

- `CharVocab`: one id per character, ids 4.. in the order of the given characters (the embedded
  datasets `dates` and `reverse`, whose builders define their characters).
- `SentencePieceVocab`: a sentencepiece subword model (Kudo and Richardson, 2018) trained with the
  same four reserved ids (wmt14; see sequences.py for how it is trained).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
NUM_RESERVED = 4


def _ids_until_eos(ids: Iterable[int]) -> list[int]:
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i not in (PAD, BOS):
            out.append(i)
    return out


class CharVocab:
    """Characters <-> ids: PAD, BOS, EOS, UNK, then `chars` in order (ids 4, 5, ...).

    Attributes:
        chars: the characters, each once.
        size: number of ids, NUM_RESERVED + len(chars).
    """

    def __init__(self, chars: str):
        assert len(set(chars)) == len(chars), f"repeated characters in {chars!r}"
        self.chars = chars
        self.size = NUM_RESERVED + len(chars)
        self._ids = {c: NUM_RESERVED + i for i, c in enumerate(chars)}

    def encode(self, text: str) -> list[int]:
        """The ids of the characters of `text` (UNK for unknown ones), without EOS."""
        return [self._ids.get(c, UNK) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The string of `ids` up to the first EOS; PAD and BOS are skipped, UNK reads '?'."""
        return "".join(
            self.chars[i - NUM_RESERVED] if NUM_RESERVED <= i < self.size else "?"
            for i in _ids_until_eos(ids)
        )

    def __repr__(self) -> str:
        return f"CharVocab(size={self.size}, chars={self.chars!r})"


class SentencePieceVocab:
    """A sentencepiece model whose ids 0..3 are PAD, BOS, EOS, UNK.

    Attributes:
        path: the .model file.
        size: the configured vocabulary size, the size of the embedding tables. The model may hold
            fewer pieces when its training text is small (it is trained with a soft limit); every
            id it produces is below `size`.
    """

    def __init__(self, path: str, size: int):
        import sentencepiece as spm

        self.path = path
        self.size = size
        self._sp = spm.SentencePieceProcessor(model_file=path)
        assert (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(), self._sp.unk_id()) == (
            PAD,
            BOS,
            EOS,
            UNK,
        ), path
        assert self._sp.get_piece_size() <= size, (path, size)

    def encode(self, text: str) -> list[int]:
        """The subword ids of `text`, without EOS."""
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids` up to the first EOS; PAD and BOS are skipped."""
        pieces = self._sp.get_piece_size()
        return self._sp.decode([i for i in _ids_until_eos(ids) if i < pieces])

    def __getstate__(self):  # picklable for grain worker processes
        return {"path": self.path, "size": self.size}

    def __setstate__(self, state):
        self.__init__(state["path"], state["size"])

    def __repr__(self) -> str:
        return f"SentencePieceVocab(size={self.size}, path={self.path!r})"


def pad_sequences(seqs: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """int32 [len(seqs), length]: each sequence, then EOS, then PAD; sequences longer than
    `length - 1` are cut so that EOS always fits."""
    out = np.zeros((len(seqs), length), np.int32)
    for i, seq in enumerate(seqs):
        seq = seq[: length - 1]
        out[i, : len(seq)] = seq
        out[i, len(seq)] = EOS
    return out
