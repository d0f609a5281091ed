"""Learning curves as the textbook plots them: train and evaluation accuracy, train and evaluation
loss, one line per split, from the records of a run's metrics.jsonl (the trainer reads them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attn_jax.figures.backend import pyplot, save


def plot_curves(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    metrics: Sequence[str] = ("accuracy", "loss"),
    *,
    name: str = "",
) -> list[Path]:
    """Writes <out_dir>/<metric>.png for each metric some record holds.

    Args:
      records: metric records, each with "step", "split" and metric values (a run's
        metrics.jsonl lines).
      out_dir: where the PNGs go (created).
      metrics: the metrics to draw, one figure each.
      name: the run's name, shown in the titles.

    Returns:
      the files written (metrics no record holds are skipped).
    """
    plt = pyplot()
    records = list(records)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for split in sorted({r["split"] for r in records}):
            points = [
                (r["step"], r[metric]) for r in records if r["split"] == split and metric in r
            ]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, label=split, marker="o" if len(points) < 30 else None)
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} ({name})" if name else metric)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(save(fig, Path(out_dir) / f"{metric}.png"))
    return written
