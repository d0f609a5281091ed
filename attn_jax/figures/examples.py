"""The figures the trainer draws after training, from a task's `figure_data`.

A task that has figures defines `figure_data(model, params, batch, vocab) -> {kind: data}`: it runs
the model on one evaluation batch and returns what to draw as arrays and strings (a classification
task passes the model's own `figure_data(params, batch)` on, so that RAM, STN, feature selection
and the attention ResNets bring their figures). Each kind names a drawing function in `FIGURES`
and the file `<kind>.png` it writes into the run's plots/ folder, so the tasks and models below this
layer never import matplotlib and the trainer knows no figure by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attn_jax.figures.alignments import plot_alignment_examples
from attn_jax.figures.attention_maps import plot_query_attention, plot_se_excitation
from attn_jax.figures.contrastive import plot_similarity_figure
from attn_jax.figures.detection import plot_detection_examples
from attn_jax.figures.explanations import plot_transfg_parts
from attn_jax.figures.glimpses import plot_glimpse_paths, plot_kept_pixels, plot_stn_transforms
from attn_jax.figures.panoptic import plot_panoptic_overlays
from attn_jax.figures.reconstructions import plot_reconstructions
from attn_jax.figures.segmentation import plot_segmentation_figure

Draw = Callable[[Mapping[str, Any], Path], Path | list[Path]]

FIGURES: dict[str, Draw] = {
    "kept_pixels": plot_kept_pixels,
    "glimpse_paths": plot_glimpse_paths,
    "stn_transforms": plot_stn_transforms,
    "non_local_attention": plot_query_attention,
    "aaconv_attention": plot_query_attention,
    "se_excitation": plot_se_excitation,
    "detections": plot_detection_examples,
    "panoptic_overlays": plot_panoptic_overlays,
    "clip_similarity": plot_similarity_figure,
    "reconstructions": plot_reconstructions,
    "segmentation_overlays": plot_segmentation_figure,
    "attention": plot_alignment_examples,
    "transfg_parts": plot_transfg_parts,
}


def draw_examples(figure_data: Mapping[str, Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Draws each figure of `figure_data` into `out_dir/<kind>.png`.

    Args:
      figure_data: {kind: data} as a task's (or model's) `figure_data` returns it.
      out_dir: the folder of the figures (created).

    Returns:
      the files written, in the order of `figure_data`.
    """
    # A kind without a drawing function is a bug in the task or model that produced it.
    unknown = sorted(set(figure_data) - set(FIGURES))
    assert not unknown, f"figure kinds {unknown} have no entry in FIGURES ({sorted(FIGURES)})"
    written: list[Path] = []
    for kind, data in figure_data.items():
        drawn = FIGURES[kind](data, Path(out_dir) / f"{kind}.png")
        written += drawn if isinstance(drawn, list) else [drawn]
    return written
