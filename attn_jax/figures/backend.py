"""The one place that chooses matplotlib's backend and writes a figure file, shared by the drawing
modules of attn_jax/figures/. pyplot is imported on first use, never at import time, so that
importing attn_jax (and the trainer) costs no matplotlib start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files only, no window, safe on a headless host."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Writes `fig` to `path` (parent folders created), closes it and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def displayable(image: Any) -> Any:
    """A normalized network input [H, W, C] min-max stretched to [0, 1] for display; one channel
    becomes a 2D array (drawn with a grey colour map)."""
    import numpy as np

    image = np.asarray(image, np.float32)
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return image[..., 0] if image.shape[-1] == 1 else image
