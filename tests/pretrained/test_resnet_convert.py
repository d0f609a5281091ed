"""torchvision/timm ResNet state dicts -> attn_jax ResNet (attn_jax/pretrained/resnet.py): the
architecture read from the names, logits equal to the reference's in evaluation mode (random
weights and perturbed batch-norm statistics, no download), one-line errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from attn_jax.models.resnet import ResNet
from attn_jax.pretrained.checkpoint_files import PretrainedError
from attn_jax.pretrained.resnet import convert_resnet_tensors, resnet_kwargs_from_tensors

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def resnet18():
    """A random timm resnet18 (basic blocks) with non-trivial batch norms, in eval mode."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(c))
                module.running_var.copy_(torch.rand(c) + 0.5)
                module.weight.copy_(1.0 + 0.2 * torch.randn(c))
                module.bias.copy_(0.1 * torch.randn(c))
    return model


def _tensors(model, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("frozen", [False, True])
def test_converted_resnet18_gives_the_references_logits(resnet18, frozen):
    kwargs, variables = convert_resnet_tensors(_tensors(resnet18), "resnet18", frozen=frozen)
    assert kwargs["stage_sizes"] == (2, 2, 2, 2) and kwargs["block"] == "basic"
    assert kwargs["num_classes"] == 7
    assert kwargs["norm"] == ("frozen_batch" if frozen else "batch")
    model = ResNet(**kwargs)
    x = np.random.default_rng(0).normal(size=(2, 48, 40, 3)).astype(np.float32)
    logits, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    with torch.no_grad():
        want = resnet18(torch.from_numpy(np.array(x.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4, rtol=1e-4)
    # Exactly the tree the model builds, in the layout of its norm.
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)


def test_wrapper_prefix_is_dropped_and_the_architecture_read(resnet18):
    kwargs = resnet_kwargs_from_tensors(_tensors(resnet18, "module."), "ddp.pth")
    assert (kwargs["width"], kwargs["stem"], kwargs["padding"]) == (64, "imagenet", "symmetric")


def test_what_is_not_a_resnet_is_one_line(resnet18):
    with pytest.raises(PretrainedError, match="not a torchvision/timm ResNet") as err:
        resnet_kwargs_from_tensors({"patch_embed.proj.weight": np.zeros(1)}, "vit.pth")
    assert "\n" not in str(err.value)
    tensors = _tensors(resnet18)
    del tensors["layer2.1.bn2.running_var"]
    with pytest.raises(PretrainedError, match=r"missing 1: layer2\.1\.bn2\.running_var"):
        convert_resnet_tensors(tensors, "broken.pth")
