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
