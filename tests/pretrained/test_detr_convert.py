"""DETR converter (attn_jax/pretrained/detr.py) against transformers' DetrForObjectDetection.

Reference models are built from DetrConfig with random weights (no download), redrawn so that
every tensor matters and the queries' boxes differ: frozen batch norm statistics calibrated on
the image with random noise and random affine terms (a deep random ResNet otherwise repeats one
feature vector over the whole image), Xavier transformer weights with random biases and norm
affines, N(0, 9) object queries and sharper attention (transformers' own init leaves the 100
queries, and so their boxes, near-identical).

Checked: the base model (timm ResNet-50, d 256, 6 + 6 layers, 100 queries, 91 classes) gives the
reference's class logits and boxes within 1e-4 on scikit-learn's china.jpg preprocessed by
DetrImageProcessor at shortest edge 160 (160 x 239, a 5 x 8 feature map), batched with a crop
that the processor pads (at the processor's default 800 x 1199, measured once outside the suite,
the largest differences were 1.0e-5 on logits and 8e-7 on boxes) and has the published
parameter count; a small model saved by `save_pretrained` (the hub's tensor names) or pickled
with transformers 5's in-memory names loads from its directory and, through `predict_detect`
with our own preprocessing, gives the reference's raw outputs and its post-processed
detections; mismatched tensors and unsupported configs fail with one line naming them.
"""

from __future__ import annotations

import json
import types

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

from transformers import DetrConfig, DetrForObjectDetection  # noqa: E402
from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil  # noqa: E402

from attn_jax.models.detr import PUBLISHED_PARAMS  # noqa: E402
from attn_jax.pretrained.checkpoint_files import PretrainedError  # noqa: E402
from attn_jax.pretrained.detr import (  # noqa: E402
    convert_detr_tensors,
    detr_kwargs_from_config,
    load_detr,
    post_process_detections,
    predict_detect,
)

SMALL_LABELS = {0: "N/A", 1: "person", 2: "bicycle", 3: "car", 4: "boat"}


def _randomise(model: torch.nn.Module, seed: int, inputs: dict) -> torch.nn.Module:
    """Weights that make every tensor matter (module docstring); eval mode."""
    g = torch.Generator().manual_seed(seed)
    backbone = model.model.backbone
    last_norms = {"bn3"} if any(n.endswith("bn3") for n, _ in backbone.named_modules()) else {"bn2"}

    def calibrator(last: bool):
        def calibrate(module, args):
            # Statistics of the norm's actual input (a trained network's kind): without them a
            # deep random ResNet's features are one vector repeated over the image.
            x = args[0]
            n = x.shape[1]
            noise = 1 + 0.2 * torch.randn(n, generator=g)
            module.running_mean.copy_(x.mean((0, 2, 3)) * noise)
            var = x.var((0, 2, 3)).clamp(min=1e-2)
            module.running_var.copy_(var * (torch.rand(n, generator=g) + 0.5))
            # Small last-norm scales, as trained ResNets have: dominant residual branches make
            # the network chaotic, multiplying float32 rounding by ~5 per stage.
            low = 0.1 if last else 0.5
            module.weight.copy_(low + torch.rand(n, generator=g) * low)
            module.bias.copy_(torch.randn(n, generator=g) * 0.1)

        return calibrate

    hooks = [
        module.register_forward_pre_hook(calibrator(name.split(".")[-1] in last_norms))
        for name, module in backbone.named_modules()
        if type(module).__name__ == "DetrFrozenBatchNorm2d"
    ]
    with torch.no_grad():
        model.model.backbone(inputs["pixel_values"], inputs["pixel_mask"])
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        # transformers draws N(0, 0.02) weights and zero biases: near-uniform attention and 100
        # near-identical queries. DETR's own init (Xavier, N(0, 1) queries) plus random biases and
        # norm affines exercises every tensor; on top, queries N(0, 9) and q, k x 2 sharpen the
        # attention, and values and FFN outputs x 0.3 keep six post-norm layers from averaging
        # the image tokens into one, so that each query sees its own part of the image.
        for name, param in model.named_parameters():
            if name.startswith("model.backbone."):
                continue  # timm's He init; the frozen norms above are buffers
            if name == "model.query_position_embeddings.weight":
                param.copy_(3 * torch.randn(param.shape, generator=g))
            elif param.ndim > 1:
                bound = (6 / (param.shape[0] + param[0].numel())) ** 0.5
                param.copy_((torch.rand(param.shape, generator=g) * 2 - 1) * bound)
            elif "norm" in name and name.endswith(".weight"):
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=g))
            else:
                param.copy_(0.2 * torch.randn(param.shape, generator=g))
            if ".q_proj.weight" in name or ".k_proj.weight" in name:
                param.mul_(2.0)
            elif ".v_proj." in name or ".fc2." in name:
                param.mul_(0.3)
    return model.eval()


def _processor(shortest: int) -> DetrImageProcessorPil:
    return DetrImageProcessorPil(
        size={"shortest_edge": shortest, "longest_edge": round(shortest * 1333 / 800)}
    )


def _channels_last(x: torch.Tensor) -> np.ndarray:
    return x.numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def base(china_image):
    """The base reference and its conversion from the in-memory (transformers 5) tensor names:
    (inputs, reference outputs, our outputs, converted variables, torch parameter count).

    The batch holds china.jpg (160 x 239) and a crop of it (160 x 200) that the processor pads
    to 160 x 239, so that the pixel mask, its downsampling, the masked sine encoding and the
    masked keys all count."""
    torch.manual_seed(0)
    config = DetrConfig(use_timm_backbone=True, use_pretrained_backbone=False, num_labels=91)
    crop = china_image.crop((100, 50, 500, 370))
    inputs = _processor(160)(images=[china_image, crop], return_tensors="pt")
    reference = _randomise(DetrForObjectDetection(config), 1, inputs)
    with torch.no_grad():
        expected = reference(**inputs)
    kwargs = detr_kwargs_from_config(config.to_dict())
    tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
    variables = convert_detr_tensors(tensors, kwargs, "base reference")
    from attn_jax.models.detr import DETR

    model = DETR(**kwargs)
    outputs, _ = jax.jit(model.apply)(
        variables, _channels_last(inputs["pixel_values"]), inputs["pixel_mask"].numpy() > 0
    )
    torch_params = sum(p.numel() for p in reference.parameters())
    return inputs, expected, jax.device_get(outputs), variables, torch_params


def test_base_model_matches_reference_logits_and_boxes(base):
    inputs, expected, outputs, _, _ = base
    assert outputs["logits"].shape == (2, 100, 92)
    assert outputs["boxes"].shape == (2, 100, 4)
    mask = inputs["pixel_mask"].numpy()
    assert mask[0].all() and mask[1, :, :200].all() and not mask[1, :, 200:].any()
    # The queries' boxes differ, so that the comparison below can see a misplaced one.
    assert expected.pred_boxes.numpy()[0].std(0).max() > 0.01
    np.testing.assert_allclose(outputs["logits"], expected.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["boxes"], expected.pred_boxes.numpy(), atol=1e-4, rtol=0)


def test_base_model_has_the_published_parameter_count(base):
    _, _, _, variables, torch_params = base
    ours = sum(np.size(leaf) for leaf in jax.tree.leaves(variables["params"]))
    assert ours == torch_params == PUBLISHED_PARAMS["R50"]["params"]
    # ResNet-50's 53 batch norms, 4 frozen vectors each over 26,560 channels in all.
    assert sum(np.size(leaf) for leaf in jax.tree.leaves(variables["batch_stats"])) == 4 * 26_560


@pytest.fixture(scope="module")
def small(tmp_path_factory, china_image):
    """A small reference (timm ResNet-18, d 32, 1 + 2 layers, 8 queries, 5 classes) saved with
    save_pretrained, our conversion of its directory, and the reference processor."""
    torch.manual_seed(0)
    config = DetrConfig(
        use_timm_backbone=True,
        use_pretrained_backbone=False,
        backbone="resnet18",
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=8,
        id2label=SMALL_LABELS,
    )
    processor = _processor(128)
    inputs = processor(images=china_image, return_tensors="pt")
    reference = _randomise(DetrForObjectDetection(config), 2, inputs)
    directory = tmp_path_factory.mktemp("detr_small")
    reference.save_pretrained(directory)
    processor.save_pretrained(directory)
    with torch.no_grad():
        expected = reference(**inputs)
    return types.SimpleNamespace(
        reference=reference,
        directory=directory,
        processor=processor,
        expected=expected,
        pretrained=load_detr(directory),
    )


def test_saved_directory_loads_with_its_config(small):
    pretrained = small.pretrained
    assert pretrained.kind == "detect"
    assert pretrained.labels == list(SMALL_LABELS.values())
    assert (pretrained.model.num_classes, pretrained.model.num_queries) == (5, 8)
    assert pretrained.model.backbone == "resnet18"
    # The converted tree is exactly the one the model initialises (names, nesting, shapes).
    abstract = jax.eval_shape(
        pretrained.model.init,
        jax.random.key(0),
        np.zeros((1, 64, 64, 3), np.float32),
    )
    shapes = lambda tree: jax.tree.map(lambda a: (a.shape, str(a.dtype)), tree)  # noqa: E731
    assert shapes(pretrained.variables) == shapes(dict(abstract))


def test_predict_detect_matches_reference_outputs_and_post_processing(small, china_image, tmp_path):
    expected = small.expected
    scores = torch.softmax(expected.logits, -1)[0, :, :-1].max(-1).values.sort().values.numpy()
    # A threshold in the widest gap between two scores: rounding cannot move a query across it.
    gap = int(np.argmax(np.diff(scores)))
    assert scores[gap + 1] - scores[gap] > 1e-3
    threshold = float(scores[gap] + scores[gap + 1]) / 2
    out_png = tmp_path / "detections.png"
    result = predict_detect(small.pretrained, china_image, threshold=threshold, out_png=out_png)

    np.testing.assert_allclose(result["logits"], expected.logits.numpy()[0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result["boxes"], expected.pred_boxes.numpy()[0], atol=1e-4, rtol=0)
    (hf,) = small.processor.post_process_object_detection(
        expected, threshold=threshold, target_sizes=[(china_image.height, china_image.width)]
    )
    detections = result["detections"]
    assert len(detections) == len(hf["scores"]) == len(scores) - gap - 1
    assert [d["label_id"] for d in detections] == hf["labels"].tolist()
    assert [d["label"] for d in detections] == [SMALL_LABELS[i] for i in hf["labels"].tolist()]
    np.testing.assert_allclose([d["score"] for d in detections], hf["scores"].numpy(), atol=1e-5)
    np.testing.assert_allclose([d["box"] for d in detections], hf["boxes"].numpy(), atol=0.05)
    assert result["image_size"] == [427, 640]
    json.dumps(result)  # what `predict detect --json` prints

    from PIL import Image

    with Image.open(out_png) as drawn:
        assert drawn.size == china_image.size
        changed = np.any(np.asarray(drawn.convert("RGB")) != np.asarray(china_image), axis=-1)
    x0, y0, _, y1 = (int(round(v)) for v in detections[0]["box"])
    assert 0 <= x0 < china_image.width and y0 + 40 < min(y1, china_image.height)
    # The first box's left edge is drawn where the box is (below its caption).
    assert changed[y0 + 20 : min(y1, china_image.height), x0].mean() > 0.9
    assert changed.mean() < 0.2  # boxes, not a repainted image


def test_torch_pickle_with_transformers5_names_converts_identically(small, tmp_path):
    # A state_dict() saved by hand carries the in-memory names (backbone.model, o_proj, mlp.fc1).
    state = small.reference.state_dict()
    assert any(".o_proj." in k for k in state) and any(".mlp.fc1." in k for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((small.directory / "config.json").read_text())
    variables = load_detr(tmp_path).variables
    same = jax.tree.map(np.array_equal, variables, small.pretrained.variables)
    assert all(jax.tree.leaves(same))


def test_mismatched_tensors_are_reported_by_name(small):
    tensors = {k: v.numpy() for k, v in small.reference.state_dict().items()}
    kwargs = detr_kwargs_from_config(json.loads((small.directory / "config.json").read_text()))
    del tensors["model.decoder.layers.1.encoder_attn.k_proj.weight"]
    tensors["model.query_position_embeddings.weight"] = np.zeros((9, 32), np.float32)
    tensors["model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(PretrainedError) as error:
        convert_detr_tensors(tensors, kwargs, "ckpt")
    message = str(error.value)
    assert "\n" not in message
    assert "missing 1: model.decoder.layers.1.encoder_attn.k_proj.weight" in message
    assert "model.query_position_embeddings.weight (9, 32) != expected (8, 32)" in message
    assert "unused 1: model.extra.weight" in message


@pytest.mark.parametrize(
    "change, words",
    [
        ({"dilation": True}, "DC5"),
        ({"use_timm_backbone": False}, "use_timm_backbone=false"),
        ({"backbone_config": {"model_type": "resnet"}}, "'resnet' backbone"),
        ({"backbone": "resnet50d"}, "'resnet50d'"),
        ({"position_embedding_type": "learned"}, "'learned'"),
        ({"decoder_ffn_dim": 1024}, "FFN width"),
        ({"model_type": "vit"}, "not 'detr'"),
    ],
)
def test_unsupported_configs_fail_in_one_line(change, words):
    # The hub's facebook/detr-resnet-50 config.json as transformers 4.x wrote it (abridged).
    config = {"model_type": "detr", "use_timm_backbone": True, "backbone": "resnet50"}
    assert detr_kwargs_from_config(config)["backbone"] == "resnet50"
    with pytest.raises(PretrainedError, match=words) as error:
        detr_kwargs_from_config({**config, **change})
    assert "\n" not in str(error.value)


def test_post_processing_on_hand_computed_numbers():
    # Query 0: class 1 with probability e^2 / (e^2 + 2) = 0.787; query 1 mostly "no object".
    logits = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], np.float32)
    boxes = np.array([[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]], np.float32)
    (det,) = post_process_detections(logits, boxes, (100, 200), threshold=0.5, labels=["a", "b"])
    assert (det["label"], det["label_id"]) == ("b", 1)
    assert det["score"] == pytest.approx(np.e**2 / (np.e**2 + 2), abs=1e-6)
    # (cx, cy, w, h) = (0.5, 0.5, 0.2, 0.4) on a 200-wide, 100-high image.
    assert det["box"] == pytest.approx([80.0, 30.0, 120.0, 70.0], abs=1e-4)
    assert post_process_detections(logits, boxes, (100, 200), threshold=0.8) == []


def test_predict_detect_rejects_bad_arguments(small, china_image):
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        predict_detect(small.pretrained, china_image, threshold=1.5)
    classify = types.SimpleNamespace(**{**vars(small.pretrained), "kind": "classify"})
    with pytest.raises(ValueError, match="kind 'detect'"):
        predict_detect(classify, china_image)
