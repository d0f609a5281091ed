"""Figures drawn with matplotlib from what models and tasks return (a model's `aux`, a task's or a
pretrained predictor's outputs). The plotting layer sits above models/, tasks/ and pretrained/:
nothing below it imports matplotlib, and each module here imports it lazily, inside the function
that draws, so that importing attn_jax costs no matplotlib start-up.

- `predictions`: `launch.py predict` on several images (top labels, detections, caption
  probabilities).
"""
