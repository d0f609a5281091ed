"""Figures drawn with matplotlib from what models and tasks return (a model's `aux`, a task's
`figure_data`, a pretrained predictor's outputs). The plotting layer sits above tasks/ and models/
and below train/, pretrained/ and programs/ (docs/architecture.md): nothing below it imports
matplotlib, and each module here imports it lazily, inside the function that draws (through
`backend.pyplot`), so that importing attn_jax costs no matplotlib start-up.

- `examples`: the registry of figure kinds that tasks and models produce, drawn after training.
- `curves`: learning curves from a run's metric records.
- `glimpses`, `attention_maps`, `detection`, `contrastive`, `reconstructions`, `segmentation`,
  `alignments`: the figures of `examples`, by theme.
- `explanations`, `saliency`, `chapter`: the figures of the programs of attn_jax/programs/.
- `predictions`: `launch.py predict` on several images (top labels, detections, caption
  probabilities).
"""
