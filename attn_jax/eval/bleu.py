"""Corpus BLEU (Papineni et al. 2002) through sacreBLEU (Post 2018), split into sums.

sacreBLEU's corpus score is a function of statistics summed over sentences: per n-gram order the
matched and the total n-grams, plus the hypothesis and reference lengths. Computing those per
sentence on the host (`bleu_statistics`, run from the compiled evaluation step through
`jax.pure_callback`) lets BLEU add up over batches, devices and processes like every other
evaluation sum; `bleu_from_statistics` then gives exactly `sacrebleu.corpus_bleu` of the same
strings (13a tokenization, exponential smoothing, sacreBLEU's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

MAX_ORDER = 4
NUM_STATS = 2 * MAX_ORDER + 2  # matches per order, totals per order, hypothesis and ref length
_BLEU = BLEU()


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """[N, NUM_STATS] float32: per sentence, matches[1..4], totals[1..4], hyp_len, ref_len."""
    stats = np.zeros((len(hypotheses), NUM_STATS), np.float32)
    for i, (hyp, ref) in enumerate(zip(hypotheses, references, strict=True)):
        score = _BLEU.corpus_score([hyp], [[ref]])
        stats[i] = [*score.counts, *score.totals, score.sys_len, score.ref_len]
    return stats


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU in [0, 100] from statistics summed over sentences ([NUM_STATS])."""
    stats = np.asarray(stats, np.float64).round().astype(np.int64)
    return float(
        BLEU.compute_bleu(
            correct=stats[:MAX_ORDER].tolist(),
            total=stats[MAX_ORDER : 2 * MAX_ORDER].tolist(),
            sys_len=int(stats[-2]),
            ref_len=int(stats[-1]),
            smooth_method="exp",
        ).score
    )
