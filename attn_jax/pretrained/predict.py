"""`launch.py predict`: run a converted checkpoint on one image, or on several as one batch.

  predict classify      --weights DIR --image FILE [--image FILE ...] [--top-k 5] [--out FIG.png]
                        [--json] [--explain [--out DIR]]
  predict detect        --weights DIR --image FILE [--image FILE ...] [--threshold 0.5]
                        [--out PNG] [--json]
  predict rank-captions --weights DIR --image FILE [--image FILE ...] --caption "..."
                        [--caption "..." ...] [--out FIG.png] [--json]

The checkpoint is converted once, and all images are preprocessed and run in one batch (one
compiled forward pass; DETR pads the batch to its largest image and masks the padding, as the
reference processor does). Every image is read before the conversion starts, so a bad file fails
at once, in one line.

Figures: `detect` draws the boxes on the image (default runs/predict/<image>_detections.png), or
with several images a grid of them (default runs/predict/detections.png). `classify` with several
images and `rank-captions` write a figure only when --out names one: a grid of the images with
their top label and probability, and the images beside the matrix of caption probabilities.
`classify --explain` writes attention heatmaps of one image into the directory --out.

Each command prints readable lines (with several images, each image's name, then its lines
indented); with --json its last line is one JSON object:

  {"task", "weights", "images": [path, ...], "results": [one object per image, in --image order],
   "figure": the path written, where a figure was written}

Each result holds "image" (the path) and "image_size" [height, width] of the original, and:
  classify       "predictions" [{"label", "label_id", "probability"}] best first, "logits" [classes]
  detect         "detections" [{"label", "label_id", "score", "box": [x0, y0, x1, y1]}] in pixels
                 of the original image, "logits" [queries][classes + 1], "boxes" [queries][4]
                 normalised (cx, cy, w, h)
  rank-captions  "captions", "probabilities" [captions], "logits_per_image" [1][captions],
                 "image_embeds" [1][E], "text_embeds" [captions][E]
With one --image the top-level object also carries that image's result keys ("image",
"predictions", "logits", ...; detect also "out_png"; classify --explain "explanations"), the
schema from before batching, so that scripts written for it keep working. The raw outputs let
scripts compare them with the reference's.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.errors import UserError
from attn_jax.pretrained.checkpoint_files import Pretrained, PretrainedError

KINDS = {"classify": "classify", "detect": "detect", "rank-captions": "contrastive"}
DEFAULT_OUT = Path("runs") / "predict"
# What config.json says a checkpoint is, so that a wrong command fails before the conversion
# (attn_jax.pretrained.load has the converters; these are the kinds they return).
_MODEL_TYPE_KINDS = {"vit": "classify", "detr": "detect", "clip": "contrastive"}
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf")


def classify_fn(pretrained: Pretrained) -> Callable[..., Any]:
    """The jitted (variables, images) -> logits of a classifier, compiled once per `Pretrained`
    (and input shape)."""
    if "forward" not in pretrained.extras:
        from attn_jax.pretrained.vit import classifier_forward

        pretrained.extras["forward"] = classifier_forward(pretrained.model)
    return pretrained.extras["forward"]


def predict_classify_batch(
    pretrained: Pretrained, images: Sequence[Any], *, top_k: int = 5
) -> list[dict[str, Any]]:
    """Classifies several images in one batch with a converted classifier (ViT, Swin).

    Args:
      pretrained: a kind "classify" `Pretrained`.
      images: image paths, PIL images or uint8 [H, W, 3] arrays (at least one).
      top_k: how many classes to report per image (at most the number of classes).

    Returns:
      per image, in order: {"predictions": [{"label", "label_id", "probability"}] best first,
      "logits": raw [classes], "image_size": [height, width] of the original image};
      JSON-serialisable.

    Raises:
      ValueError: no images, top_k < 1 or a `Pretrained` of another kind.
      ImageError: an image that cannot be read.
    """
    from attn_jax.pretrained.preprocess import read_image

    if pretrained.kind != "classify":
        raise ValueError(
            f"predict_classify needs a classification checkpoint; got kind {pretrained.kind!r}"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k}")
    if not images:
        raise ValueError("predict_classify_batch needs at least one image")
    pictures = [read_image(image) for image in images]
    inputs = pretrained.preprocess.batch(pictures)
    logits = np.asarray(classify_fn(pretrained)(pretrained.variables, inputs["image"]))
    z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    probabilities = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    labels = pretrained.labels
    results = []
    for row, (picture, probs) in enumerate(zip(pictures, probabilities, strict=True)):
        order = np.argsort(-probs, kind="stable")[: min(top_k, probs.shape[0])]
        predictions = [
            {
                "label": labels[i] if labels is not None and i < len(labels) else str(i),
                "label_id": int(i),
                "probability": float(probs[i]),
            }
            for i in order
        ]
        results.append(
            {
                "predictions": predictions,
                "logits": logits[row].tolist(),
                "image_size": [picture.height, picture.width],
            }
        )
    return results


def predict_classify(pretrained: Pretrained, image: Any, *, top_k: int = 5) -> dict[str, Any]:
    """Classifies one image with a converted classifier (ViT, Swin): `predict_classify_batch` of
    one image.

    Args:
      pretrained: a kind "classify" `Pretrained`.
      image: an image path, a PIL image or a uint8 [H, W, 3] array.
      top_k: how many classes to report (at most the number of classes).

    Returns:
      {"predictions": [{"label", "label_id", "probability"}] best first, "logits": raw [classes],
      "image_size": [height, width] of the original image}; JSON-serialisable.

    Raises:
      ValueError: top_k < 1 or a `Pretrained` of another kind.
      ImageError: an image that cannot be read.
    """
    return predict_classify_batch(pretrained, [image], top_k=top_k)[0]


def add_predict_parser(sub: Any) -> None:
    """Adds the `predict` command, with its three subcommands, to launch.py's subparsers."""
    p = sub.add_parser(
        "predict",
        help="run a downloaded pretrained checkpoint (ViT, Swin, DETR, CLIP) on images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="task", required=True, metavar="{classify,detect,rank-captions}")

    def common(name: str, help_text: str) -> argparse.ArgumentParser:
        q = tasks.add_parser(name, help=help_text)
        q.add_argument(
            "--weights",
            required=True,
            help="checkpoint directory (config.json, model.safetensors or pytorch_model.bin, "
            "preprocessor_config.json) or a timm Swin state dict file",
        )
        q.add_argument(
            "--image",
            required=True,
            action="append",
            help="image file (JPEG, PNG, ...); repeat it to run several images as one batch",
        )
        q.add_argument("--json", action="store_true", help="end with one JSON line of raw outputs")
        return q

    q = common("classify", "top-k classes of an image classifier (ViT, Swin)")
    q.add_argument("--top-k", type=_positive_int, default=5, help="classes to print (default 5)")
    q.add_argument(
        "--explain",
        action="store_true",
        help="also write attention heatmaps (rollout, per-head maps) of one image as PNGs",
    )
    q.add_argument(
        "--out",
        help="figure of the images with their top labels (.png, .jpg, .pdf; none by default); "
        f"with --explain, the directory of its PNGs (default {DEFAULT_OUT}/<image>_explain)",
    )

    q = common("detect", "objects, scores and boxes of a DETR detector")
    q.add_argument(
        "--threshold", type=float, default=0.5, help="minimum score in [0, 1) (default 0.5)"
    )
    q.add_argument(
        "--out",
        help=f"image with the boxes drawn (default {DEFAULT_OUT}/<image>_detections.png; with "
        f"several images a grid, default {DEFAULT_OUT}/detections.png)",
    )

    q = common("rank-captions", "softmax over captions of a CLIP model")
    q.add_argument("--caption", action="append", required=True, help="a candidate caption (repeat)")
    q.add_argument(
        "--out", help="figure of the images beside their caption probabilities (none by default)"
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _lazy(module: str, name: str, feature: str) -> Callable[..., Any]:
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise UserError(f"{feature} is not available in this version of attn_jax") from None


def _config_kind(weights: str | Path) -> str | None:
    """The kind config.json announces, read without converting anything; None when it cannot
    tell (then `load` reports whatever is wrong)."""
    path = Path(weights)
    if path.is_file():
        return "classify"  # a bare state dict is read as a timm Swin
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    architecture = config.get("architecture")
    if isinstance(architecture, str):
        return "classify" if architecture.startswith("swin") else None
    return _MODEL_TYPE_KINDS.get(config.get("model_type"))


def _check_kind(args: argparse.Namespace, kind: str) -> None:
    if kind != KINDS[args.task]:
        wanted = {v: k for k, v in KINDS.items()}.get(kind, "<none>")
        raise PretrainedError(
            f"--weights {args.weights} holds a {kind} model; use `predict {wanted}` "
            f"for it, or pass a {KINDS[args.task]} checkpoint to `predict {args.task}`"
        )


def _figure_path(args: argparse.Namespace, paths: Sequence[Path]) -> Path | None:
    """Where the figure goes (None: no figure), checked before any work."""
    if args.task == "classify" and args.explain:
        return None  # --out is the directory of the heatmaps
    if args.out:
        out = Path(args.out)
    elif args.task == "detect":
        name = f"{paths[0].stem}_detections.png" if len(paths) == 1 else "detections.png"
        out = DEFAULT_OUT / name
    else:
        return None
    if out.suffix.lower() not in FIGURE_SUFFIXES or out.is_dir():
        raise UserError(
            f"--out {out} is not a figure file; give a path ending in {', '.join(FIGURE_SUFFIXES)}"
        )
    return out


def _unwritable(path: Path, error: OSError) -> UserError:
    return UserError(
        f"cannot write {path} ({error.strerror or type(error).__name__}); pass an --out path "
        "in a writable directory"
    )


def run_predict(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs `launch.py predict TASK ...`; prints readable lines through `echo` and returns the
    JSON-serialisable result (the launcher prints it as the last line with --json; the module
    docstring gives its schema).

    Raises:
      UserError: unreadable weights or images, weights of another kind than the task needs,
        --explain with several images, or an --out that cannot be written.
    """
    from attn_jax.pretrained import load
    from attn_jax.pretrained.preprocess import read_image, to_rgb

    paths = [Path(p) for p in args.image]
    several = len(paths) > 1
    if args.task == "classify" and args.explain and several:
        raise UserError(
            f"--explain explains one image but {len(paths)} were given; pass a single --image"
        )
    figure = _figure_path(args, paths)
    if args.task == "detect" and not 0.0 <= args.threshold < 1.0:
        raise UserError(f"--threshold must be in [0, 1); got {args.threshold}")
    # Bad images and a checkpoint of the wrong kind fail before the (slow) conversion.
    pictures = [read_image(path) for path in paths]
    announced = _config_kind(args.weights)
    if announced is not None:
        _check_kind(args, announced)
    pretrained = load(args.weights)
    _check_kind(args, pretrained.kind)

    def display() -> list[np.ndarray]:
        return [np.asarray(to_rgb(picture)) for picture in pictures]

    names = [path.name for path in paths]
    extra: dict[str, Any] = {}
    if args.task == "classify":
        results = predict_classify_batch(pretrained, pictures, top_k=args.top_k)
        for name, result in zip(names, results, strict=True):
            if several:
                echo(name)
            for p in result["predictions"]:
                echo(f"{'  ' if several else ''}{p['probability']:.4f}  {p['label']}")
        if args.explain:
            explain = _lazy(
                "attn_jax.programs.explain", "explain_classification", "predict classify --explain"
            )
            out_dir = Path(args.out) if args.out else DEFAULT_OUT / f"{paths[0].stem}_explain"
            written = [str(p) for p in explain(pretrained, paths[0], out_dir)]
            for path in written:
                echo(f"wrote {path}")
            extra["explanations"] = written
        elif figure is not None:
            from attn_jax.figures.predictions import plot_classifications

            try:
                plot_classifications(display(), results, figure, names=names)
            except OSError as e:
                raise _unwritable(figure, e) from None
    elif args.task == "detect":
        if several:
            detect = _lazy("attn_jax.pretrained.detr", "predict_detect_batch", "predict detect")
            results = detect(pretrained, pictures, threshold=args.threshold)
        else:
            detect = _lazy("attn_jax.pretrained.detr", "predict_detect", "predict detect")
            try:
                results = [
                    detect(pretrained, pictures[0], threshold=args.threshold, out_png=figure)
                ]
            except OSError as e:
                raise _unwritable(figure, e) from None
        for name, result in zip(names, results, strict=True):
            if several:
                echo(name)
            indent = "  " if several else ""
            for d in result["detections"]:
                box = ", ".join(f"{v:.1f}" for v in d["box"])
                echo(f"{indent}{d['score']:.3f}  {d['label']}  [{box}]")
            if not result["detections"]:
                echo(f"{indent}no detection scores above {args.threshold}")
        if several:
            from attn_jax.figures.predictions import plot_detections

            try:
                plot_detections(display(), results, figure, names=names)
            except OSError as e:
                raise _unwritable(figure, e) from None
        elif results[0].get("out_png"):
            figure = None  # reported as "out_png", as before batching
            echo(f"wrote {results[0]['out_png']}")
    else:
        captions = list(args.caption)
        if several:
            rank = _lazy(
                "attn_jax.pretrained.clip", "predict_rank_captions_batch", "predict rank-captions"
            )
            results = rank(pretrained, pictures, captions)
        else:
            rank = _lazy(
                "attn_jax.pretrained.clip", "predict_rank_captions", "predict rank-captions"
            )
            results = [rank(pretrained, pictures[0], captions)]
        for name, result in zip(names, results, strict=True):
            if several:
                echo(name)
            probabilities = result.get("probabilities", result.get("probs"))
            for caption, prob in zip(captions, probabilities or (), strict=False):
                echo(f"{'  ' if several else ''}{float(prob):.4f}  {caption}")
        if figure is not None:
            from attn_jax.figures.predictions import plot_caption_probabilities

            matrix = [result["probabilities"] for result in results]
            try:
                plot_caption_probabilities(display(), captions, matrix, figure, names=names)
            except OSError as e:
                raise _unwritable(figure, e) from None
    if figure is not None:
        echo(f"wrote {figure}")
        extra["figure"] = str(figure)
    for path, result in zip(paths, results, strict=True):
        result["image"] = str(path)
    summary = {
        "task": args.task,
        "weights": str(args.weights),
        "images": [str(p) for p in paths],
        "results": results,
        **extra,
    }
    return summary if several else {**results[0], **summary}


def format_json(result: dict[str, Any]) -> str:
    """One JSON line; numpy values become lists and numbers."""
    return json.dumps(result, default=_to_json)


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = [
    "add_predict_parser",
    "classify_fn",
    "format_json",
    "predict_classify",
    "predict_classify_batch",
    "run_predict",
]
