"""COCO-style detection and mask AP through pycocotools (Lin et al. 2014, "Microsoft COCO: Common
Objects in Context", ECCV 2014; the metric definitions of cocodataset.org/#detection-eval).

AP is the mean over IoU thresholds 0.50:0.05:0.95 and over categories of the area under the
precision/recall curve, sampled at the 101 recall points 0, 0.01, ..., 1 after making precision
monotone (the interpolation of pycocotools' COCOeval). AP50/AP75 fix the IoU threshold; APs/m/l
restrict to objects of area < 32^2, 32^2..96^2 and > 96^2 pixels; AR1/AR10/AR100 are the recalls
with at most that many detections per image (every AP keeps an image's 100 highest-scoring
detections per category, COCO's standard maxDets). Values are -1 where no ground truth falls in a
range (pycocotools' convention), e.g. APs on a split without small objects.

The ground truth here has boxes only: an object's area is its box area unless `gt_areas` is given
(the official annotations use the segmentation area, so APs/m/l can differ a little from official
numbers; AP, AP50 and AP75 over all areas do not depend on it). `coco_segmentation_metrics` is the
same evaluation for binary masks (pycocotools' "segm": mask IoU, mask area).
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _coco_from_annotations(images: list[dict], categories: list[dict], annotations: list[dict]):
    coco = COCO()  # empty: the constructor reads no file without a path
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index..." on stdout
        coco.createIndex()
    return coco


def _images_and_categories(image_ids, image_sizes, gt_labels, det_labels):
    """COCO's image and category records for an evaluation, after checking the image arrays."""
    if len(np.unique(image_ids)) != len(image_ids):
        raise ValueError("image_ids must be unique; give every evaluated image its own id")
    if len(image_sizes) != len(image_ids):
        raise ValueError(f"image_sizes has {len(image_sizes)} rows for {len(image_ids)} images")
    images = [
        {"id": int(i), "height": int(h), "width": int(w)}
        for i, (h, w) in zip(image_ids.tolist(), image_sizes.tolist(), strict=True)
    ]
    # Categories without ground truth are left out of the mean by COCOeval, so listing every
    # label seen in either set changes nothing but lets no detection be dropped unseen.
    categories = [{"id": int(c)} for c in np.union1d(gt_labels, det_labels).tolist()]
    return images, categories


def _annotations(image_ids, labels, geometries: list[dict], scores=None) -> list[dict]:
    """COCO annotation records, one per object: its image, category and score (detections) with
    its geometry ("bbox" and "area", and "segmentation" for masks) from `geometries`."""
    anns = []
    # Ids start at 1: COCOeval records matches as the partner's id and treats 0 as "unmatched".
    for i, (image_id, label, geometry) in enumerate(
        zip(image_ids.tolist(), labels.tolist(), geometries, strict=True)
    ):
        ann = {"id": i + 1, "image_id": int(image_id), "category_id": int(label), "iscrowd": 0}
        ann.update(geometry)
        if scores is not None:
            ann["score"] = float(scores[i])
        anns.append(ann)
    return anns


def _box_geometries(boxes, areas) -> list[dict]:
    xywh = _xyxy_to_xywh(boxes).tolist()
    return [
        {"bbox": box, "area": float(area)} for box, area in zip(xywh, areas.tolist(), strict=True)
    ]


def coco_detection_metrics(
    *,
    image_ids: np.ndarray,
    image_sizes: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    det_image_ids: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    gt_areas: np.ndarray | None = None,
    gt_iscrowd: np.ndarray | None = None,
) -> dict[str, float]:
    """COCO box AP and AR of detections against ground truth, both as flat per-box arrays.

    Args:
      image_ids: [I] ids of every evaluated image, those without objects included (their
        detections are false positives).
      image_sizes: [I, 2] (height, width) in pixels.
      gt_image_ids: [G] image id of each ground-truth box.
      gt_boxes: [G, 4] (x0, y0, x1, y1) in pixels.
      gt_labels: [G] category ids.
      det_image_ids: [D] image id of each detection.
      det_boxes: [D, 4] (x0, y0, x1, y1) in pixels.
      det_scores: [D] confidences (the ranking within an image and category).
      det_labels: [D] category ids.
      gt_areas: [G] object areas for the small/medium/large split; default: box areas.
      gt_iscrowd: [G] crowd flags (crowd regions absorb detections without counting as misses).

    Returns:
      {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
      as floats in [0, 1], or -1 where no ground truth falls in the range.
    """
    image_ids = np.asarray(image_ids).reshape(-1)
    image_sizes = np.asarray(image_sizes).reshape(-1, 2)
    gt_image_ids = np.asarray(gt_image_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    det_image_ids = np.asarray(det_image_ids).reshape(-1)
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    det_labels = np.asarray(det_labels).reshape(-1)
    images, categories = _images_and_categories(image_ids, image_sizes, gt_labels, det_labels)
    if not (len(gt_image_ids) == len(gt_boxes) == len(gt_labels)):
        raise ValueError("gt_image_ids, gt_boxes and gt_labels must have one row per box")
    if not (len(det_image_ids) == len(det_boxes) == len(det_scores) == len(det_labels)):
        raise ValueError("det_image_ids, det_boxes, det_scores, det_labels: one row per box")

    gt_xywh = _xyxy_to_xywh(gt_boxes)
    areas = gt_xywh[:, 2] * gt_xywh[:, 3] if gt_areas is None else np.asarray(gt_areas)
    gt_anns = _annotations(gt_image_ids, gt_labels, _box_geometries(gt_boxes, areas))
    if gt_iscrowd is not None:
        for ann, crowd in zip(gt_anns, np.asarray(gt_iscrowd).tolist(), strict=True):
            ann["iscrowd"] = int(crowd)
    det_xywh = _xyxy_to_xywh(det_boxes)
    det_geometries = _box_geometries(det_boxes, det_xywh[:, 2] * det_xywh[:, 3])
    det_anns = _annotations(det_image_ids, det_labels, det_geometries, det_scores)

    return _evaluate(images, categories, gt_anns, det_anns, "bbox")


def _evaluate(images, categories, gt_anns, det_anns, iou_type: str) -> dict[str, float]:
    coco_gt = _coco_from_annotations(images, categories, gt_anns)
    coco_dt = _coco_from_annotations(images, categories, det_anns)
    evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.params.imgIds = [image["id"] for image in images]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # COCOeval prints progress and its summary table
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("%s", log.getvalue())
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats, strict=True)}


def _mask_geometries(masks) -> list[dict]:
    geometries = []
    for mask in masks:
        # Compressed RLE, which COCOeval's segm IoU reads as it is.
        rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
        geometries.append(
            {
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": mask_utils.toBbox(rle).tolist(),
            }
        )
    return geometries


def coco_segmentation_metrics(
    *,
    image_ids: np.ndarray,
    image_sizes: np.ndarray,
    gt_image_ids: np.ndarray,
    gt_masks: np.ndarray,
    gt_labels: np.ndarray,
    det_image_ids: np.ndarray,
    det_masks: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
) -> dict[str, float]:
    """COCO mask AP and AR (pycocotools' "segm" evaluation): `coco_detection_metrics` with the
    IoU of binary masks, run-length encoded by `pycocotools.mask.encode`, in place of boxes, and
    an object's area its mask's pixel count.

    Args:
      image_ids: [I] ids of every evaluated image.
      image_sizes: [I, 2] (height, width) in pixels.
      gt_image_ids: [G] image id of each ground-truth mask.
      gt_masks: [G, H, W] bool masks (or a list of [H_i, W_i] masks, each its image's size).
      gt_labels: [G] category ids.
      det_image_ids: [D] image id of each detection.
      det_masks: [D, H, W] bool masks (or a list, as gt_masks).
      det_scores: [D] confidences.
      det_labels: [D] category ids.

    Returns:
      {"AP", "AP50", ..., "ARl"} as in `coco_detection_metrics`, for masks.
    """
    image_ids = np.asarray(image_ids).reshape(-1)
    image_sizes = np.asarray(image_sizes).reshape(-1, 2)
    gt_image_ids = np.asarray(gt_image_ids).reshape(-1)
    gt_labels = np.asarray(gt_labels).reshape(-1)
    det_image_ids = np.asarray(det_image_ids).reshape(-1)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    det_labels = np.asarray(det_labels).reshape(-1)
    images, categories = _images_and_categories(image_ids, image_sizes, gt_labels, det_labels)
    if not (len(gt_image_ids) == len(gt_masks) == len(gt_labels)):
        raise ValueError("gt_image_ids, gt_masks and gt_labels must have one row per object")
    if not (len(det_image_ids) == len(det_masks) == len(det_scores) == len(det_labels)):
        raise ValueError("det_image_ids, det_masks, det_scores, det_labels: one row per mask")
    gt_anns = _annotations(gt_image_ids, gt_labels, _mask_geometries(gt_masks))
    det_anns = _annotations(det_image_ids, det_labels, _mask_geometries(det_masks), det_scores)
    return _evaluate(images, categories, gt_anns, det_anns, "segm")
