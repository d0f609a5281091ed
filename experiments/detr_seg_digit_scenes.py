"""DETR's mask head (Carion et al. 2020, sec. 4.4) on the embedded digit scenes: per-query masks
from multi-head attention maps over the encoder memory and an FPN-style conv decoder, trained with
DICE and focal losses on the box/class-matched queries, evaluated with panoptic quality (PQ, SQ,
RQ; Kirillov et al. 2019) and COCO mask AP.

The scenes have things only (the ten digit classes) and no stuff classes: the background is
"no segment" (not void), so PQ here is PQ over things (attn_jax/eval/panoptic.py).

As in the paper, the mask head is trained after the box model: start from a finished
experiments/detr_digits.py run, whose parameters fill everything but the new attention maps and
mask decoder (`init_from_fresh`); the whole model then trains on the detection and mask losses
together (the paper freezes the box model for its 25 epochs and reports that training jointly
gives similar results):

  python launch.py train --config experiments/detr_digits.py --workdir runs/detr_digits
  python launch.py train --config experiments/detr_seg_digit_scenes.py \
      --config.init_from=runs/detr_digits

Without init_from the whole model trains from scratch (the README's short test run does that).
plots/panoptic_overlays.png draws the ground-truth and predicted segments over a few scenes,
plots/detections.png the boxes.

Measured (2026-12-04, 2 CPU cores shared with other runs, 70 min; from the detr_digits run of the
README, its best checkpoint at step 16,000): test PQ 0.701 (SQ 0.752, RQ 0.932), mask AP 0.485,
box AP50 0.970 at step 2,500, chosen on validation PQ 0.717; PQ was 0.545 at step 1,000.
"""

import ml_collections

from experiments.detr_digits import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    # detr_digits' data, model and loss, plus the mask head and its losses, for a shorter run.
    c = base_config()
    c.experiment = "detr_seg_digit_scenes"
    c.total_steps = 3_000  # about 53 epochs of the 3,600 training scenes
    c.eval_every = 500
    c.checkpoint_every = 500
    c.target_metric = "validation/PQ"
    c.eval_batch_size = 100
    c.log_every = 50
    # init_from: "<detr_digits workdir>[:<step>]"; the mask head's parameters start fresh.
    c.init_from_fresh = ("bbox_attention", "mask_head")

    c.model.mask_head = True

    c.task.name = "panoptic"
    c.task.mask_weight = 1.0  # focal
    c.task.dice_weight = 1.0
    c.task.panoptic_threshold = 0.85

    c.optim.lr = 1e-4
    c.optim.warmup_steps = 100
    return c
