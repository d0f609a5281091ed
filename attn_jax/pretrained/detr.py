"""Hugging Face DetrForObjectDetection checkpoints (timm ResNet backbone) as attn_jax DETR.

Carion, Massa, Synnaeve, Usunier, Kirillov, Zagoruyko 2020, "End-to-End Object Detection with
Transformers" (ECCV 2020). The model is attn_jax/models/detr.py; this module maps the reference
checkpoint onto it and implements the paper's inference (sec. 3.1 and appendix A.4 / the official
`PostProcess`): p = softmax(class logits) over K + 1 classes, the "no object" column dropped, each
query's score max_k p_k and label argmax_k p_k, boxes (cx, cy, w, h) -> (x0, y0, x1, y1) scaled to
the ORIGINAL image's pixels, kept where the score exceeds a threshold, as
`DetrImageProcessor.post_process_object_detection` does.

The checkpoint's config.json decides the architecture: d_model, heads, FFN widths, layers,
num_queries, the class count (len(id2label), else num_labels, else Hugging Face's default 2; the
class head has K + 1 outputs) and the timm backbone (resnet18/34/50/101). The details where
implementations differ were checked against the reference: frozen batch norm with eps 1e-5 (its
affine terms and statistics go to our 'batch_stats'), torch's symmetric padding of the stride-2 3x3
convolutions (the ResNet's `padding="symmetric"`), the 2D sine encoding of the downsampled pixel
mask (d/2 channels per axis, normalize with eps 1e-6, scale 2 pi, temperature 10000,
[pos_y | pos_x]), the padding cells masked as keys in the encoder and in the cross-attention, and
no dilation. The backbone's names are torchvision's, mapped by attn_jax/pretrained/resnet.py.

Tensor names: checkpoints written by transformers 4.x (the published facebook/detr-resnet-50) and
by `save_pretrained` of 5.x use `model.backbone.conv_encoder.model.*`, `self_attn.out_proj` and
`layers.N.fc1`; the in-memory names of 5.x (`model.backbone.model.*`, `o_proj`, `mlp.fc1`), as a
`model.state_dict()` saved by hand holds them, are accepted too.

Not supported (a one-line PretrainedError says so): the Hugging Face ResNet backbone
(use_timm_backbone=false), DC5 (dilation), learned position embeddings, activations other than
ReLU, and different encoder/decoder head counts or FFN widths. With `auxiliary_loss: true` in its
config, transformers feeds each layer's NORMALISED output to the next decoder layer, unlike the
official code and this model; the published checkpoints have it false.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attn_jax.pretrained.checkpoint_files import (
    Pretrained,
    PretrainedError,
    TensorSource,
    read_config,
    read_json,
    read_state_dict,
    weights_file,
)

# timm ResNets whose layout (7x7 stem, max-pool, torchvision blocks) our ResNet reproduces.
TIMM_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")

# transformers 5.x in-memory names -> the names checkpoints are saved under (4.x, the hub).
_RENAMES = (
    (re.compile(r"^model\.backbone\.model\."), "model.backbone.conv_encoder.model."),
    (re.compile(r"\.o_proj\."), ".out_proj."),
    (re.compile(r"(layers\.\d+)\.mlp\.(fc[12])\."), r"\1.\2."),
)


def canonical_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors under the saved (4.x / hub) names, whichever naming they came with."""
    out = {}
    for name, value in tensors.items():
        for pattern, replacement in _RENAMES:
            name = pattern.sub(replacement, name)
        out[name] = value
    return out


def _timm_backbone(config: Mapping[str, Any], where: str) -> tuple[str, bool]:
    """(timm model name, dilation) of a DETR config in its 4.x or 5.x form."""
    backbone_config = config.get("backbone_config")
    if isinstance(backbone_config, Mapping):
        if backbone_config.get("model_type") != "timm_backbone":
            raise PretrainedError(
                f"{where}: DETR with the {backbone_config.get('model_type')!r} backbone is not "
                "supported; only the timm ResNet backbone (use_timm_backbone=true, as in "
                "facebook/detr-resnet-50) converts"
            )
        name = backbone_config.get("backbone") or "resnet50"
        dilation = bool(config.get("dilation")) or backbone_config.get("output_stride") == 16
    else:
        if not config.get("use_timm_backbone", True):
            raise PretrainedError(
                f"{where}: DETR with the Hugging Face ResNet backbone (use_timm_backbone=false) is "
                "not supported; only the timm ResNet backbone (as in facebook/detr-resnet-50) "
                "converts"
            )
        name = config.get("backbone") or "resnet50"
        dilation = bool(config.get("dilation"))
    # "timm/resnet50.a1_in1k" names the same architecture as "resnet50".
    name = name.removeprefix("timm/").split(".")[0]
    return name, dilation


def detr_kwargs_from_config(
    config: Mapping[str, Any], where: str = "config.json"
) -> dict[str, Any]:
    """attn_jax DETR constructor kwargs for a Hugging Face DetrConfig (as a config.json dict).

    Args:
      config: the parsed config.json.
      where: what the config is (a path), for error messages.

    Returns:
      kwargs of `attn_jax.models.detr.DETR`.

    Raises:
      PretrainedError: a DETR variant this converter does not reproduce (module docstring).
    """
    if config.get("model_type") != "detr":
        raise PretrainedError(
            f"{where} has model_type {config.get('model_type')!r}, not 'detr'; point --weights at "
            "a DetrForObjectDetection checkpoint"
        )
    backbone, dilation = _timm_backbone(config, where)
    if backbone not in TIMM_RESNETS:
        raise PretrainedError(
            f"{where}: DETR backbone {backbone!r} is not supported; supported timm backbones: "
            f"{', '.join(TIMM_RESNETS)}"
        )
    if dilation:
        raise PretrainedError(
            f"{where}: DETR-DC5 (dilation=true) is not supported; use a checkpoint without "
            "dilation such as facebook/detr-resnet-50"
        )
    if config.get("position_embedding_type", "sine") != "sine":
        raise PretrainedError(
            f"{where}: position_embedding_type {config.get('position_embedding_type')!r} is not "
            "supported; only DETR's 'sine' encoding converts"
        )
    if config.get("activation_function", "relu") != "relu":
        raise PretrainedError(
            f"{where}: activation_function {config.get('activation_function')!r} is not "
            "supported; only 'relu' (DETR's) converts"
        )
    heads = config.get("encoder_attention_heads", 8)
    ffn = config.get("encoder_ffn_dim", 2048)
    if (
        config.get("decoder_attention_heads", 8) != heads
        or config.get("decoder_ffn_dim", 2048) != ffn
    ):
        raise PretrainedError(
            f"{where}: encoder and decoder differ in attention heads or FFN width, which this "
            "DETR cannot represent; only checkpoints with equal ones convert"
        )
    return dict(
        num_classes=_num_classes(config),
        num_queries=config.get("num_queries", 100),
        d_model=config.get("d_model", 256),
        num_heads=heads,
        d_ff=ffn,
        num_encoder_layers=config.get("encoder_layers", 6),
        num_decoder_layers=config.get("decoder_layers", 6),
        dropout_rate=config.get("dropout", 0.1),
        layer_norm_epsilon=1e-5,  # torch's nn.LayerNorm default
        pos_temperature=10_000.0,
        backbone=backbone,
        backbone_norm="frozen_batch",
        backbone_padding="symmetric",
    )


def _num_classes(config: Mapping[str, Any]) -> int:
    id2label = config.get("id2label")
    if id2label:
        return len(id2label)
    return int(config.get("num_labels", 2))  # PretrainedConfig's default


def labels_from_config(config: Mapping[str, Any]) -> list[str]:
    """Class names by index from id2label (Hugging Face's "LABEL_i" where absent)."""
    id2label = config.get("id2label") or {}
    return [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(_num_classes(config))]


def _linear(source: TensorSource, name: str, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    weight = source.take(f"{name}.weight", (d_out, d_in))
    bias = source.take(f"{name}.bias", (d_out,))
    if weight is None or bias is None:
        return {}
    return {"kernel": weight.T, "bias": bias}


def _layer_norm(source: TensorSource, name: str, width: int) -> dict[str, np.ndarray]:
    scale = source.take(f"{name}.weight", (width,))
    bias = source.take(f"{name}.bias", (width,))
    return {} if scale is None or bias is None else {"scale": scale, "bias": bias}


def _attention(source: TensorSource, name: str, width: int, heads: int) -> dict[str, Any]:
    """torch's [out, in] q/k/v/out projections -> DenseGeneral [D, H, Dh] and [H, Dh, D]."""
    out: dict[str, Any] = {}
    head_dim = width // heads
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        p = _linear(source, f"{name}.{theirs}", width, width)
        if p:
            out[ours] = {
                "kernel": p["kernel"].reshape(width, heads, head_dim),
                "bias": p["bias"].reshape(heads, head_dim),
            }
    p = _linear(source, f"{name}.out_proj", width, width)
    if p:
        out["out"] = {"kernel": p["kernel"].reshape(heads, head_dim, width), "bias": p["bias"]}
    return out


def _conv(source: TensorSource, name: str, shape_ohwi: tuple[int, int, int, int]) -> Any:
    """torch's [O, I, kh, kw] convolution kernel -> flax's [kh, kw, I, O]."""
    o, kh, kw, i = shape_ohwi
    weight = source.take(f"{name}.weight", (o, i, kh, kw))
    return None if weight is None else np.transpose(weight, (2, 3, 1, 0))


def _backbone(source: TensorSource, prefix: str, variant: str) -> tuple[dict, dict]:
    """timm ResNet (conv1/bn1, layerS.I.{convK,bnK,downsample.0/1}) -> our ResNet trees, its
    batch norms frozen (attn_jax/pretrained/resnet.py does the mapping)."""
    from attn_jax.models.resnet import RESNET_VARIANTS
    from attn_jax.pretrained.resnet import convert_resnet_backbone

    spec = RESNET_VARIANTS[variant]
    return convert_resnet_backbone(
        source, prefix, block=spec["block"], stage_sizes=spec["stage_sizes"], frozen=True
    )


def convert_detr_tensors(
    tensors: Mapping[str, np.ndarray], kwargs: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Maps a DetrForObjectDetection state dict onto attn_jax DETR variables.

    Args:
      tensors: {name: array} under either naming (module docstring).
      kwargs: the DETR constructor kwargs (`detr_kwargs_from_config`).
      where: what the tensors are (a path), for error messages.

    Returns:
      {"params": ..., "batch_stats": ...} as numpy arrays.

    Raises:
      PretrainedError: missing, misshaped or unused tensors, all named in one line.
    """
    source = TensorSource(canonical_names(tensors), where, ignore=("num_batches_tracked",))
    d = kwargs["d_model"]
    heads = kwargs["num_heads"]
    d_ff = kwargs["d_ff"]
    backbone_params, backbone_stats = _backbone(
        source, "model.backbone.conv_encoder.model", kwargs["backbone"]
    )
    from attn_jax.models.resnet import RESNET_VARIANTS

    spec = RESNET_VARIANTS[kwargs["backbone"]]
    last = 64 * 2 ** (len(spec["stage_sizes"]) - 1) * (4 if spec["block"] == "bottleneck" else 1)

    def ffn(name: str) -> dict[str, Any]:
        return {
            "linear1": _linear(source, f"{name}.fc1", d, d_ff),
            "linear2": _linear(source, f"{name}.fc2", d_ff, d),
        }

    transformer: dict[str, Any] = {}
    for i in range(kwargs["num_encoder_layers"]):
        theirs = f"model.encoder.layers.{i}"
        transformer[f"encoder_layer{i}"] = {
            "self_attention": _attention(source, f"{theirs}.self_attn", d, heads),
            "norm1": _layer_norm(source, f"{theirs}.self_attn_layer_norm", d),
            "ffn": ffn(theirs),
            "norm2": _layer_norm(source, f"{theirs}.final_layer_norm", d),
        }
    for i in range(kwargs["num_decoder_layers"]):
        theirs = f"model.decoder.layers.{i}"
        transformer[f"decoder_layer{i}"] = {
            "self_attention": _attention(source, f"{theirs}.self_attn", d, heads),
            "norm1": _layer_norm(source, f"{theirs}.self_attn_layer_norm", d),
            "cross_attention": _attention(source, f"{theirs}.encoder_attn", d, heads),
            "norm2": _layer_norm(source, f"{theirs}.encoder_attn_layer_norm", d),
            "ffn": ffn(theirs),
            "norm3": _layer_norm(source, f"{theirs}.final_layer_norm", d),
        }
    transformer["decoder_norm"] = _layer_norm(source, "model.decoder.layernorm", d)
    proj_kernel = _conv(source, "model.input_projection", (d, 1, 1, last))
    proj_bias = source.take("model.input_projection.bias", (d,))
    params = {
        "backbone": backbone_params,
        "input_proj": {"kernel": proj_kernel, "bias": proj_bias},
        "query_embed": source.take(
            "model.query_position_embeddings.weight", (kwargs["num_queries"], d)
        ),
        "transformer": transformer,
        "class_embed": _linear(source, "class_labels_classifier", d, kwargs["num_classes"] + 1),
        "bbox_embed": {
            f"layer{k}": _linear(source, f"bbox_predictor.layers.{k}", d, 4 if k == 2 else d)
            for k in range(3)
        },
    }
    source.check()
    return {"params": params, "batch_stats": {"backbone": backbone_stats}}


def load_detr(directory: str | Path) -> Pretrained:
    """A Hugging Face DetrForObjectDetection directory as an attn_jax DETR, ready to run.

    Args:
      directory: holds config.json, model.safetensors or pytorch_model.bin and (optionally)
        preprocessor_config.json; without the latter, DetrImageProcessor's defaults apply.

    Returns:
      a `Pretrained` with kind "detect", the DETR module, variables {"params", "batch_stats"},
      the DetrImageProcessor-equivalent preprocessing ({"image", "pixel_mask"}) and the labels of
      id2label.

    Raises:
      PretrainedError: an unsupported DETR variant, or weights that do not match config.json.
    """
    import jax

    from attn_jax.models.detr import DETR
    from attn_jax.pretrained.preprocess import from_hf_processor_config

    directory = Path(directory)
    config = read_config(directory)
    kwargs = detr_kwargs_from_config(config, str(directory / "config.json"))
    path = weights_file(directory)
    variables = convert_detr_tensors(read_state_dict(path), kwargs, str(path))
    processor = read_json(directory, "preprocessor_config.json") or {}
    return Pretrained(
        model=DETR(**kwargs),
        variables=jax.tree.map(lambda a: jax.numpy.asarray(a, jax.numpy.float32), variables),
        preprocess=from_hf_processor_config(processor, model_type="detr"),
        kind="detect",
        labels=labels_from_config(config),
        config=config,
    )


def post_process_detections(
    logits: np.ndarray,
    boxes: np.ndarray,
    image_size: tuple[int, int],
    *,
    threshold: float = 0.5,
    labels: list[str] | None = None,
) -> list[dict[str, Any]]:
    """DETR's inference rule for one image (module docstring).

    Args:
      logits: [Q, K + 1] class logits, the last column "no object".
      boxes: [Q, 4] normalised (cx, cy, w, h) relative to the image.
      image_size: (height, width) of the ORIGINAL image, in pixels.
      threshold: keep queries whose score is strictly greater.
      labels: class names by index; None names them by their index.

    Returns:
      [{"label": str, "label_id": int, "score": float, "box": [x0, y0, x1, y1]}] in query order,
      the box in pixels of the original image.
    """
    logits = np.asarray(logits, np.float32)
    shifted = logits - logits.max(-1, keepdims=True)
    prob = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    scores, label_ids = prob[:, :-1].max(-1), prob[:, :-1].argmax(-1)
    cx, cy, w, h = np.moveaxis(np.asarray(boxes, np.float32), -1, 0)
    height, width = image_size
    corners = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    corners = corners * np.asarray([width, height, width, height], np.float32)
    detections = []
    for q in np.flatnonzero(scores > threshold):
        k = int(label_ids[q])
        detections.append(
            {
                "label": labels[k] if labels is not None and k < len(labels) else str(k),
                "label_id": k,
                "score": float(scores[q]),
                "box": [float(v) for v in corners[q]],
            }
        )
    return detections


def draw_detections(image: Any, detections: list[dict[str, Any]], out_png: str | Path) -> Path:
    """Writes `image` with each detection's box, label and score drawn on it to `out_png`."""
    from PIL import ImageDraw, ImageFont

    from attn_jax.pretrained.preprocess import load_image

    canvas = load_image(image).copy()
    draw = ImageDraw.Draw(canvas)
    colors = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6")
    line = max(2, round(min(canvas.size) / 200))
    try:
        font = ImageFont.load_default(size=max(12, 6 * line))
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        font = ImageFont.load_default()
    for i, det in enumerate(detections):
        color = colors[det["label_id"] % len(colors)] if "label_id" in det else colors[i % 7]
        x0, y0, x1, y1 = det["box"]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=line)
        text = f"{det['label']} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        # The caption sits above the box, or inside it where the box touches the top edge.
        shift = bottom - top + 2 if y0 - (bottom - top) - 2 >= 0 else 0
        draw.rectangle([left, top - shift, right + 2, bottom - shift], fill=color)
        draw.text((x0 + 1, y0 - shift), text, fill="white", font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png


def _detect_fn(pretrained: Pretrained) -> Callable[..., Any]:
    """The jitted forward pass of a converted DETR, compiled once per `Pretrained`."""
    if "detect_fn" not in pretrained.extras:
        import jax

        def forward(variables, image, pixel_mask):
            outputs, _ = pretrained.model.apply(variables, image, pixel_mask)
            return outputs["logits"], outputs["boxes"]

        pretrained.extras["detect_fn"] = jax.jit(forward)
    return pretrained.extras["detect_fn"]


def predict_detect_batch(
    pretrained: Pretrained, images: Sequence[Any], *, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Detects objects in several images in one batch with a converted DETR (`load_detr`).

    The batch is padded at the bottom and right to its largest image, with a pixel mask, as
    DetrImageProcessor pads a batch; an image smaller than the largest therefore gets outputs that
    differ from running it alone (the mask keeps the padding out of attention, but the backbone's
    convolutions see it near the image's edges), as with the reference model on the same batch.

    Args:
      pretrained: a kind "detect" `Pretrained`.
      images: image paths, PIL images or uint8 [H, W, 3] arrays (at least one).
      threshold: keep detections whose score (max class probability, no-object excluded) exceeds
        it; in [0, 1).

    Returns:
      per image, in order: {"detections": [{"label", "label_id", "score", "box": [x0, y0, x1,
      y1]}] (pixels of the original image), "logits": raw [Q][K + 1], "boxes": raw [Q][4]
      normalised (cx, cy, w, h), "image_size": [height, width]}; all JSON-serialisable.

    Raises:
      ValueError: no images, a threshold outside [0, 1) or a `Pretrained` of another kind.
      ImageError: an image that cannot be read.
    """
    from attn_jax.pretrained.preprocess import read_image

    if pretrained.kind != "detect":
        raise ValueError(
            f"predict_detect needs a detection checkpoint (kind 'detect'); got kind "
            f"{pretrained.kind!r}; use a DetrForObjectDetection directory"
        )
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"detection threshold must be in [0, 1); got {threshold}")
    if not images:
        raise ValueError("predict_detect_batch needs at least one image")
    pictures = [read_image(image) for image in images]
    inputs = pretrained.preprocess.batch(pictures)
    # A processor with do_pad=false returns no mask: every pixel is then real.
    pixel_mask = inputs.get("pixel_mask", np.ones(inputs["image"].shape[:3], bool))
    logits, boxes = _detect_fn(pretrained)(pretrained.variables, inputs["image"], pixel_mask)
    logits, boxes = np.asarray(logits), np.asarray(boxes)
    results = []
    for picture, image_logits, image_boxes in zip(pictures, logits, boxes, strict=True):
        size = (picture.height, picture.width)
        detections = post_process_detections(
            image_logits, image_boxes, size, threshold=threshold, labels=pretrained.labels
        )
        results.append(
            {
                "detections": detections,
                "logits": image_logits.tolist(),
                "boxes": image_boxes.tolist(),
                "image_size": list(size),
            }
        )
    return results


def predict_detect(
    pretrained: Pretrained,
    image: Any,
    *,
    threshold: float = 0.5,
    out_png: str | Path | None = None,
) -> dict[str, Any]:
    """Detects objects in one image with a converted DETR (`load_detr`), and draws them.

    Args:
      pretrained: a kind "detect" `Pretrained`.
      image: an image path, a PIL image or a uint8 [H, W, 3] array.
      threshold: keep detections whose score (max class probability, no-object excluded) exceeds
        it; in [0, 1).
      out_png: where to write the image with the kept boxes drawn; None draws nothing.

    Returns:
      `predict_detect_batch`'s result for the image, plus "out_png": the written path or None.

    Raises:
      ValueError: a threshold outside [0, 1) or a `Pretrained` of another kind.
      ImageError: an image that cannot be read.
    """
    from attn_jax.pretrained.preprocess import read_image

    picture = read_image(image)
    (result,) = predict_detect_batch(pretrained, [picture], threshold=threshold)
    written = None
    if out_png is not None:
        written = draw_detections(picture, result["detections"], out_png)
    result["out_png"] = str(written) if written is not None else None
    return result


__all__ = [
    "TIMM_RESNETS",
    "canonical_names",
    "convert_detr_tensors",
    "detr_kwargs_from_config",
    "draw_detections",
    "labels_from_config",
    "load_detr",
    "post_process_detections",
    "predict_detect",
    "predict_detect_batch",
]
