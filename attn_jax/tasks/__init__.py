"""Tasks: what is optimized and measured for a kind of problem; the trainer knows none by name."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from attn_jax.tasks.bert import NextSentenceMaskedLanguage
from attn_jax.tasks.classification import Classification
from attn_jax.tasks.colorization import Colorization
from attn_jax.tasks.contrastive import Contrastive
from attn_jax.tasks.detection import Detection
from attn_jax.tasks.jigsaw import Jigsaw
from attn_jax.tasks.masked_image import MaskedImageModeling
from attn_jax.tasks.masked_language import MaskedLanguage
from attn_jax.tasks.panoptic import PanopticDetection
from attn_jax.tasks.reinforce import Reinforce
from attn_jax.tasks.segmentation import Segmentation
from attn_jax.tasks.seq2seq import Seq2SeqTask
from attn_jax.tasks.transfg import TransFGClassification

TASKS = {
    "classification": Classification,
    "seq2seq": Seq2SeqTask,
    "reinforce": Reinforce,
    "segmentation": Segmentation,
    "detection": Detection,
    "panoptic": PanopticDetection,
    "contrastive": Contrastive,
    "masked_language": MaskedLanguage,
    "masked_image": MaskedImageModeling,
    "jigsaw": Jigsaw,
    "colorization": Colorization,
    "bert": NextSentenceMaskedLanguage,
    "transfg": TransFGClassification,
}


def build_task(task_cfg: Mapping, *, num_classes: int):
    """Builds the task named by `task_cfg.name` with the rest of `task_cfg` as arguments."""
    kwargs = dict(task_cfg)
    name = kwargs.pop("name", "classification")
    if name not in TASKS:
        near = difflib.get_close_matches(name, TASKS, n=1)
        raise ValueError(
            f"unknown task {name!r}; known tasks: {sorted(TASKS)}"
            + (f" (did you mean {near[0]!r}?)" if near else "")
        )
    return TASKS[name](num_classes=num_classes, **kwargs)
