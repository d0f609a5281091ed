"""Shared setup of the converter tests: the torchvision shim and the sample photographs.

The installed torchvision (pulled in by timm) can be a CUDA build whose compiled extension does not
load with the CPU torch wheel; importing it then fails while it registers fake kernels for its
`nms` / `qnms` operators, because those operators were never defined. Defining their schemas first
lets `import torchvision` (and with it timm's transforms) succeed; the operators are never called.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_TORCHVISION_LIBRARY = None


def _define_torchvision_ops() -> None:
    global _TORCHVISION_LIBRARY
    if _TORCHVISION_LIBRARY is not None or importlib.util.find_spec("torch") is None:
        return
    import torch

    try:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:
        # A working torchvision was imported first and defined them itself.
        return
    _TORCHVISION_LIBRARY = library  # the definitions live as long as this reference


_define_torchvision_ops()


def _sample_images_dir() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


@pytest.fixture(scope="session")
def sample_image_paths() -> dict[str, Path]:
    """{"china": Path, "flower": Path}: the JPEG photographs that scikit-learn ships."""
    directory = _sample_images_dir()
    return {"china": directory / "china.jpg", "flower": directory / "flower.jpg"}


@pytest.fixture(scope="session")
def china_path(sample_image_paths) -> Path:
    """scikit-learn's china.jpg (427 x 640 RGB)."""
    return sample_image_paths["china"]


@pytest.fixture(scope="session")
def china_image(china_path):
    """china.jpg as an RGB PIL image."""
    from PIL import Image

    with Image.open(china_path) as image:
        return image.convert("RGB")


def randomize_parameters(module, seed: int):
    """Overwrites every parameter of a torch module with seeded random values and returns it.

    Reference models come with zero biases and unit LayerNorm scales, under which a converter that
    drops or swaps those tensors still matches; random values make every tensor count. Matrices
    get N(0, 0.02) (the references' init scale, which keeps deep stacks well-conditioned), biases
    and embeddings N(0, 0.1), norm scales 1 + N(0, 0.1), and relative position bias tables
    N(0, 1) so that an indexing error moves the logits far beyond the tolerance.
    """
    import torch

    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, child in module.named_modules():
            for name, param in child.named_parameters(recurse=False):
                full = f"{module_name}.{name}"
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                if isinstance(child, norms) and name == "weight":
                    param.copy_(1.0 + 0.1 * noise)
                elif "relative_position_bias_table" in full:
                    param.copy_(noise)
                elif param.ndim >= 2 and "embed" not in full and "token" not in full:
                    param.copy_(0.02 * noise)
                else:
                    param.copy_(0.1 * noise)
    return module.eval()


@pytest.fixture(scope="session")
def randomize():
    """`randomize_parameters`, for the test modules."""
    return randomize_parameters


SMALL_VIT_LABELS = ["cat", "dog", "ship", "tree"]


@pytest.fixture(scope="session")
def small_vit(tmp_path_factory, randomize):
    """(a two-block random HF ViTForImageClassification at 32 px, its directory): saved by
    `save_pretrained` (the hub's tensor names) with id2label and a preprocessor_config.json."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    labels = dict(enumerate(SMALL_VIT_LABELS))
    config = transformers.ViTConfig(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        image_size=32,
        patch_size=8,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = randomize(transformers.ViTForImageClassification(config), seed=1)
    directory = tmp_path_factory.mktemp("vit_small")
    model.save_pretrained(directory)
    transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return model, directory
