"""`launch.py predict`: run a converted checkpoint on one image.

  predict classify      --weights DIR --image FILE [--top-k 5] [--json] [--explain [--out DIR]]
  predict detect        --weights DIR --image FILE [--threshold 0.5] [--out PNG] [--json]
  predict rank-captions --weights DIR --image FILE --caption "..." [--caption "..." ...] [--json]

Each command prints readable lines; with --json its last line is one JSON object that also carries
the raw outputs (classify: `logits`; detect: `logits`, `boxes`; rank-captions: `logits_per_image`,
`image_embeds`, `text_embeds`), so that scripts can compare them with the reference's.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.errors import UserError
from attn_jax.pretrained.checkpoint_files import Pretrained, PretrainedError

KINDS = {"classify": "classify", "detect": "detect", "rank-captions": "contrastive"}
DEFAULT_OUT = Path("runs") / "predict"


def classify_fn(pretrained: Pretrained) -> Callable[..., Any]:
    """The jitted (variables, image) -> logits of a classifier, compiled once per `Pretrained`."""
    if "forward" not in pretrained.extras:
        from attn_jax.pretrained.vit import classifier_forward

        pretrained.extras["forward"] = classifier_forward(pretrained.model)
    return pretrained.extras["forward"]


def predict_classify(pretrained: Pretrained, image: Any, *, top_k: int = 5) -> dict[str, Any]:
    """Classifies one image with a converted classifier (ViT, Swin).

    Args:
      pretrained: a kind "classify" `Pretrained`.
      image: an image path, a PIL image or a uint8 [H, W, 3] array.
      top_k: how many classes to report (at most the number of classes).

    Returns:
      {"predictions": [{"label", "label_id", "probability"}] best first, "logits": raw [classes],
      "image_size": [height, width] of the original image}; JSON-serialisable.

    Raises:
      ValueError: top_k < 1 or a `Pretrained` of another kind.
    """
    from attn_jax.pretrained.preprocess import load_image

    if pretrained.kind != "classify":
        raise ValueError(
            f"predict_classify needs a classification checkpoint; got kind {pretrained.kind!r}"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k}")
    picture = load_image(image)
    inputs = pretrained.preprocess(picture)
    logits = np.asarray(classify_fn(pretrained)(pretrained.variables, inputs["image"]))[0]
    z = logits.astype(np.float64) - logits.max()
    probabilities = np.exp(z) / np.exp(z).sum()
    order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(logits))]
    labels = pretrained.labels
    predictions = [
        {
            "label": labels[i] if labels is not None and i < len(labels) else str(i),
            "label_id": int(i),
            "probability": float(probabilities[i]),
        }
        for i in order
    ]
    return {
        "predictions": predictions,
        "logits": logits.tolist(),
        "image_size": [picture.height, picture.width],
    }


def add_predict_parser(sub: Any) -> None:
    """Adds the `predict` command, with its three subcommands, to launch.py's subparsers."""
    p = sub.add_parser(
        "predict",
        help="run a downloaded pretrained checkpoint (ViT, Swin, DETR, CLIP) on one image",
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
        q.add_argument("--image", required=True, help="image file (JPEG, PNG, ...)")
        q.add_argument("--json", action="store_true", help="end with one JSON line of raw outputs")
        return q

    q = common("classify", "top-k classes of an image classifier (ViT, Swin)")
    q.add_argument("--top-k", type=_positive_int, default=5, help="classes to print (default 5)")
    q.add_argument(
        "--explain",
        action="store_true",
        help="also write attention heatmaps (rollout, per-head maps) as PNGs",
    )
    q.add_argument(
        "--out", help=f"directory for --explain's PNGs (default {DEFAULT_OUT}/<image>_explain)"
    )

    q = common("detect", "objects, scores and boxes of a DETR detector")
    q.add_argument(
        "--threshold", type=float, default=0.5, help="minimum score in [0, 1) (default 0.5)"
    )
    q.add_argument(
        "--out", help=f"PNG with the boxes drawn (default {DEFAULT_OUT}/<image>_detections.png)"
    )

    q = common("rank-captions", "softmax over captions of a CLIP model")
    q.add_argument("--caption", action="append", required=True, help="a candidate caption (repeat)")


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


def run_predict(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs `launch.py predict TASK ...`; prints readable lines through `echo` and returns the
    JSON-serialisable result (the launcher prints it as the last line with --json).

    Raises:
      UserError: unreadable weights or image, or weights of another kind than the task needs.
    """
    from attn_jax.pretrained import load
    from attn_jax.pretrained.preprocess import load_image

    image_path = Path(args.image)
    load_image(image_path)  # a bad image fails before the (slow) conversion
    pretrained = load(args.weights)
    if pretrained.kind != KINDS[args.task]:
        wanted = {v: k for k, v in KINDS.items()}.get(pretrained.kind, "<none>")
        raise PretrainedError(
            f"--weights {args.weights} holds a {pretrained.kind} model; use `predict {wanted}` "
            f"for it, or pass a {KINDS[args.task]} checkpoint to `predict {args.task}`"
        )
    if args.task == "classify":
        result = predict_classify(pretrained, image_path, top_k=args.top_k)
        for p in result["predictions"]:
            echo(f"{p['probability']:.4f}  {p['label']}")
        if args.explain:
            explain = _lazy(
                "attn_jax.programs.explain", "explain_classification", "predict classify --explain"
            )
            out_dir = Path(args.out) if args.out else DEFAULT_OUT / f"{image_path.stem}_explain"
            written = [str(p) for p in explain(pretrained, image_path, out_dir)]
            for path in written:
                echo(f"wrote {path}")
            result["explanations"] = written
    elif args.task == "detect":
        predict_detect = _lazy("attn_jax.pretrained.detr", "predict_detect", "predict detect")
        if not 0.0 <= args.threshold < 1.0:
            raise UserError(f"--threshold must be in [0, 1); got {args.threshold}")
        out_png = Path(args.out) if args.out else DEFAULT_OUT / f"{image_path.stem}_detections.png"
        result = predict_detect(pretrained, image_path, threshold=args.threshold, out_png=out_png)
        for d in result["detections"]:
            box = ", ".join(f"{v:.1f}" for v in d["box"])
            echo(f"{d['score']:.3f}  {d['label']}  [{box}]")
        if not result["detections"]:
            echo(f"no detection scores above {args.threshold}")
        if result.get("out_png"):
            echo(f"wrote {result['out_png']}")
    else:
        rank = _lazy("attn_jax.pretrained.clip", "predict_rank_captions", "predict rank-captions")
        result = rank(pretrained, image_path, list(args.caption))
        probabilities = result.get("probabilities", result.get("probs"))
        if probabilities is not None:
            for caption, prob in zip(args.caption, probabilities, strict=False):
                echo(f"{float(prob):.4f}  {caption}")
    result["task"] = args.task
    result["weights"] = str(args.weights)
    result["image"] = str(image_path)
    return result


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


__all__ = ["add_predict_parser", "classify_fn", "format_json", "predict_classify", "run_predict"]
