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

Measured: not yet (needs a finished detr_digits run first, about 55 min on 2 CPU cores, then this
run).
"""

import ml_collections

from attn_jax.config import TRAIN_WITHOUT_VALIDATION, adamw_config, run_config
from attn_jax.data import data_config


def get_config() -> ml_collections.ConfigDict:
    c = run_config(
        "detr_seg_digit_scenes",
        batch_size=64,
        total_steps=3_000,  # about 53 epochs of the 3,600 training scenes
        eval_every=500,
        target_metric="validation/PQ",
        eval_batch_size=100,
        log_every=50,
    )
    c.data = data_config(name="digit_detection", augment=True, train_split=TRAIN_WITHOUT_VALIDATION)
    # "<detr_digits workdir>[:<step>]"; the mask head's parameters start fresh.
    c.init_from = ""
    c.init_from_fresh = ("bbox_attention", "mask_head")

    c.model = ml_collections.ConfigDict()
    c.model.name = "detr"
    c.model.variant = "digits"
    c.model.num_classes = ml_collections.config_dict.placeholder(int)  # None: the dataset's (10)
    c.model.num_queries = 10
    c.model.dropout_rate = 0.1
    c.model.mask_head = True
    c.model.attention_fn = "dot_product"  # a function of attn_jax/attention/registry.py
    c.model.attention_impl = "auto"  # or xla | cudnn | explicit | blockwise
    c.model.dtype = "float32"  # bfloat16: bf16 computation, float32 parameters

    c.task = ml_collections.ConfigDict()
    c.task.name = "panoptic"
    c.task.eos_coef = 0.1
    c.task.aux_loss = True
    c.task.mask_weight = 1.0  # focal
    c.task.dice_weight = 1.0
    c.task.panoptic_threshold = 0.85

    c.optim = adamw_config(1e-4, weight_decay=1e-4, warmup_steps=100, grad_clip_norm=0.1)
    return c
