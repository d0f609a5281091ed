"""Attention alignments of sequence models, as Bahdanau et al. 2015 (Fig. 3) draw them: the
weights of each decoded token over the source tokens (attn_jax/tasks/seq2seq.py decodes and
labels them in `figure_data`; this module draws).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.figures.backend import pyplot, save


def plot_alignments(
    weights,
    source: list[str],
    target: list[str],
    path: str | Path,
    *,
    title: str = "",
    head_names: list[str] | None = None,
) -> Path:
    """Heatmap(s) of attention weights [T, S] (or [H, T, S], one panel per head), target tokens
    down the side and source tokens along the top; returns `path`."""
    plt = pyplot()
    w = np.asarray(weights, dtype=np.float32)
    w = w[None] if w.ndim == 2 else w
    w = w[:, : len(target), : len(source)]
    heads = w.shape[0]
    cols = min(heads, 4)
    rows = -(-heads // cols)
    cell = 0.22
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(
            max(3.0, cell * len(source) + 1.5) * cols,
            max(2.5, cell * len(target) + 1.5) * rows,
        ),
        squeeze=False,
    )
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(w[h], cmap="gray_r", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(source)), source, fontsize=7)
        ax.set_yticks(range(len(target)), target, fontsize=7)
        ax.xaxis.tick_top()
        if heads > 1:
            ax.set_xlabel(head_names[h] if head_names else f"head {h}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_alignment_examples(data: Mapping[str, Any], path: str | Path) -> list[Path]:
    """One `plot_alignments` file per example, `<stem>_<i>.png` beside `path`.

    Args:
      data: "examples", a list of {"weights" [T, S] or [H, T, S], "source" [S] and "target" [T]
        token labels, "title"}.
      path: names the files: `attention.png` gives attention_0.png, attention_1.png, ...

    Returns:
      the paths written, in example order.
    """
    path = Path(path)
    return [
        plot_alignments(
            ex["weights"],
            ex["source"],
            ex["target"],
            path.with_name(f"{path.stem}_{i}{path.suffix}"),
            title=ex.get("title", ""),
        )
        for i, ex in enumerate(data["examples"])
    ]
