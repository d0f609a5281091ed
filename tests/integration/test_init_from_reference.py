"""`config.init_from` with a downloaded reference checkpoint: a timm ResNet-50 state dict (random
weights, perturbed batch-norm statistics: no download) goes into DETR's `backbone` with frozen
batch norm, parameters and statistics both, and the backbone then computes timm's
`forward_features`. In process through `init_variables_from` (fast), and through the launcher for
one training step of experiments/detr_r50_digits.py (slow: it compiles DETR-R50's train step).
A workdir source carries batch-norm statistics too, from its latest and its best checkpoints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from attn_jax import config as config_lib
from attn_jax.models import build_model
from attn_jax.models.resnet import ResNet
from attn_jax.train.checkpoint import CheckpointError, init_variables_from

ROOT = Path(__file__).resolve().parents[2]


_SHIM = []


def _torchvision_shim() -> None:
    # timm imports torchvision, whose CPU-only install needs the operator schemas that the
    # converter tests' conftest defines first; the module is kept, since its definitions live
    # as long as it does.
    spec = importlib.util.spec_from_file_location(
        "pretrained_conftest", ROOT / "tests" / "pretrained" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _SHIM.append(module)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(path of a timm resnet50 .safetensors with perturbed BN, the timm model in eval mode)."""
    pytest.importorskip("torch")
    _torchvision_shim()
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(c))
                module.running_var.copy_(torch.rand(c) + 0.5)
                module.weight.copy_(1.0 + 0.2 * torch.randn(c))
                module.bias.copy_(0.1 * torch.randn(c))
    path = tmp_path_factory.mktemp("reference") / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def _timm_features(model, grey: np.ndarray) -> np.ndarray:
    """timm's forward_features on the grey images repeated to RGB, as [B, H, W, C]."""
    import torch

    rgb = np.repeat(grey, 3, axis=-1).transpose(0, 3, 1, 2)
    with torch.no_grad():
        out = model.forward_features(torch.from_numpy(np.ascontiguousarray(rgb)))
    return out.numpy().transpose(0, 2, 3, 1)


def _expected(model) -> dict[str, np.ndarray]:
    """{our path: value} of the backbone, from the timm model (the stem summed over RGB)."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    out = {}

    def bn(ours: str, theirs: str) -> None:
        for a, b in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean")):
            out[f"{ours}/{a}"] = state[f"{theirs}.{b}"]
        out[f"{ours}/var"] = state[f"{theirs}.running_var"]

    out["stem_conv/kernel"] = state["conv1.weight"].transpose(2, 3, 1, 0).sum(2, keepdims=True)
    bn("stem_norm", "bn1")
    for s, n in enumerate((3, 4, 6, 3), start=1):
        for i in range(n):
            for k in (1, 2, 3):
                w = state[f"layer{s}.{i}.conv{k}.weight"]
                out[f"stage{s}_block{i}/conv{k}/kernel"] = w.transpose(2, 3, 1, 0)
                bn(f"stage{s}_block{i}/norm{k}", f"layer{s}.{i}.bn{k}")
            if i == 0:
                w = state[f"layer{s}.0.downsample.0.weight"]
                out[f"stage{s}_block0/shortcut_conv/kernel"] = w.transpose(2, 3, 1, 0)
                bn(f"stage{s}_block0/shortcut_norm", f"layer{s}.0.downsample.1")
    return out


def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(k.key) for k in p): np.asarray(x) for p, x in leaves}


def _check_backbone(params, batch_stats, model) -> None:
    """Exactly timm's weights and statistics in the backbone; its features timm's within 1e-4."""
    got = {**_flat(params["backbone"]), **_flat(batch_stats["backbone"])}
    expected = _expected(model)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    backbone = ResNet(num_classes=0, norm="frozen_batch", padding="symmetric")
    grey = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype(np.float32)
    variables = {"params": params["backbone"], "batch_stats": batch_stats["backbone"]}
    _, aux = jax.jit(lambda v, x: backbone.apply(v, x))(variables, grey)
    want = _timm_features(model, grey)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(np.asarray(aux["stage4"]), want, atol=1e-4 * max(scale, 1.0))


def test_reference_resnet50_fills_the_backbone_of_detr_r50(reference):
    path, model = reference
    config = config_lib.load_config(ROOT / "experiments" / "detr_r50_digits.py")
    config.model.num_classes = 10
    detr = build_model(config.model)
    variables = jax.eval_shape(
        lambda: detr.init(jax.random.key(0), jnp.zeros((1, 64, 64, 1)), jnp.ones((1, 64, 64)))
    )
    fresh = jax.tree.map(lambda s: jnp.full(s.shape, 7.0, s.dtype), dict(variables))
    params = fresh.pop("params")
    params, state, report = init_variables_from(str(path), params, fresh, into="backbone")
    _check_backbone(params, state["batch_stats"], model)
    # Outside the backbone nothing moved; timm's classifier fc is what the source has left over.
    assert np.all(np.asarray(params["input_proj"]["kernel"]) == 7.0)
    assert (report.ignored_arrays, report.ignored) == (2, 2048 * 1000 + 1000)
    assert report.statistics_arrays == 4 * 53 and report.loaded_arrays == 53
    line = report.summary()
    assert "into backbone" in line and "stem_conv/kernel for 1-channel images" in line
    assert "\n" not in line


def test_a_reference_that_does_not_fit_is_one_line(reference, tmp_path):
    path, _ = reference
    # A group-normalised backbone has no place for batch-norm statistics: every norm is named.
    model = ResNet(num_classes=0, norm="group")
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables["params"])
    with pytest.raises(CheckpointError) as err:
        init_variables_from(str(path), params, {})
    assert "missing stage1_block0/norm1/norm/bias" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="init_into 'backbon' is not a subtree"):
        init_variables_from(str(path), params, {}, into="backbon")


@pytest.mark.slow
def test_detr_r50_digits_trains_a_step_from_a_timm_state_dict(reference, train_run):
    path, model = reference
    workdir, result = train_run(
        "--config",
        str(ROOT / "experiments" / "detr_r50_digits.py"),
        f"--config.init_from={path}",
        "--config.init_into=backbone",
        "--config.num_epochs=0",
        "--config.total_steps=1",
        "--config.batch_size=4",
        "--config.eval_batch_size=8",
        "--config.evals.test.split=test[:8]",
        "--config.data.augment=false",
        "--config.optim.warmup_steps=0",
        "--config.optim.lr_multipliers.backbone=0.0",  # the backbone frozen
        "--config.plots=false",
        timeout=900,
    )
    assert result["step"] == 1
    state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "latest" / "1" / "state")
    _check_backbone(state["params"], state["model_state"]["batch_stats"], model)


def test_a_workdir_source_carries_batch_norm_statistics_from_either_manager(tmp_path):
    import optax

    from attn_jax.train.checkpoint import Checkpointer
    from attn_jax.train.state import TrainState

    model = ResNet(num_classes=3, stage_sizes=(1,), block="basic", width=4, stem="small")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    params = variables["params"]
    saved = {"batch_stats": jax.tree.map(lambda v: v + 0.25, variables["batch_stats"])}
    ckpt = Checkpointer(tmp_path / "source")
    state = TrainState(
        step=jnp.asarray(5, jnp.int32),
        params=params,
        opt_state=optax.sgd(0.1).init(params),
        rng=jnp.zeros((2,), jnp.uint32),
        model_state=saved,
    )
    ckpt.save(5, state, {"epoch": 0}, force=True)
    ckpt.save_best(5, params, {"test/accuracy": 0.5}, saved)
    ckpt.wait()
    ckpt.close()
    fresh = {"batch_stats": variables["batch_stats"]}
    for spec in (f"{tmp_path / 'source'}:5", str(tmp_path / "source")):  # latest, best
        _, state_out, report = init_variables_from(spec, params, fresh)
        got, want = _flat(state_out), _flat(saved)
        assert got.keys() == want.keys()
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value, err_msg=f"{spec}: {name}")
        assert report.statistics_arrays == len(jax.tree.leaves(saved)) and report.fresh == 0
