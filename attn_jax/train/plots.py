"""Learning curves as the textbook plots them: train and test accuracy, train and test loss."""

from __future__ import annotations

from pathlib import Path

from attn_jax.train.metric_writers import read_metrics


def plot_curves(workdir: str | Path, metrics=("accuracy", "loss")) -> list[Path]:
    """Writes <workdir>/plots/<metric>.png for each metric present; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    out_dir = Path(workdir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
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
        ax.set_title(f"{metric} ({Path(workdir).name})")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


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
    down the side and source tokens along the top, as Bahdanau et al. 2015 (fig. 3) draw them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
