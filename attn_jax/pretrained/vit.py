"""Hugging Face ViTForImageClassification checkpoints as attn_jax ViT.

Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani, Minderer, Heigold, Gelly,
Uszkoreit, Houlsby 2021, "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale" (ICLR 2021). The model is attn_jax/models/vit.py (eqs. 1-4: patch embedding, class token,
learned position embedding, pre-LN blocks, the class token's final LayerNorm output fed to a
linear head); this module maps the transformers port (e.g. google/vit-base-patch16-224) onto it.

Where the transformers port differs from the official JAX ViT that our defaults follow, the
converted model takes the port's values from config.json: exact erf GELU ("hidden_act": "gelu";
the tanh variants "gelu_new" / "gelu_pytorch_tanh" map to `gelu_approximate=True`), LayerNorm
epsilon `layer_norm_eps` (1e-12, not 1e-6), biases on all four attention projections
(`qkv_bias: true`), pool "token", no pre-logits layer, labels from `id2label`.

Layouts: torch Linear weights are [out, in] (ours [in, out], split per head as [in, heads, Dh] for
query/key/value and [heads, Dh, out] for the output projection); the patch Conv is [D, C, P, P]
(ours [P, P, C, D]).

Tensor names: checkpoints on the hub and those written by `save_pretrained` use
`vit.encoder.layer.N.attention.attention.query`, `...attention.output.dense`,
`intermediate.dense`, `output.dense`; the in-memory names of transformers 5.x
(`vit.layers.N.attention.q_proj`, `o_proj`, `mlp.fc1`, `mlp.fc2`), as a hand-saved
`model.state_dict()` holds them, are accepted too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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

# transformers 5.x in-memory names -> the names checkpoints are saved under (the hub's).
_RENAMES = (
    (
        re.compile(r"^vit\.layers\.(\d+)\.attention\.q_proj\."),
        r"vit.encoder.layer.\1.attention.attention.query.",
    ),
    (
        re.compile(r"^vit\.layers\.(\d+)\.attention\.k_proj\."),
        r"vit.encoder.layer.\1.attention.attention.key.",
    ),
    (
        re.compile(r"^vit\.layers\.(\d+)\.attention\.v_proj\."),
        r"vit.encoder.layer.\1.attention.attention.value.",
    ),
    (
        re.compile(r"^vit\.layers\.(\d+)\.attention\.o_proj\."),
        r"vit.encoder.layer.\1.attention.output.dense.",
    ),
    (re.compile(r"^vit\.layers\.(\d+)\.mlp\.fc1\."), r"vit.encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^vit\.layers\.(\d+)\.mlp\.fc2\."), r"vit.encoder.layer.\1.output.dense."),
    (re.compile(r"^vit\.layers\.(\d+)\."), r"vit.encoder.layer.\1."),
)

_GELUS = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}


def canonical_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors under the saved (hub) names, whichever transformers naming they came with."""
    out = {}
    for name, value in tensors.items():
        for pattern, replacement in _RENAMES:
            name, count = pattern.subn(replacement, name)
            if count:
                break
        out[name] = value
    return out


def labels_from_config(config: Mapping[str, Any]) -> list[str] | None:
    """id2label as a list by index, or None if the config has no (complete) id2label."""
    id2label = config.get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    by_index = {int(k): str(v) for k, v in id2label.items()}
    if sorted(by_index) != list(range(len(by_index))):
        return None
    return [by_index[i] for i in range(len(by_index))]


def vit_kwargs_from_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """attn_jax ViT fields equivalent to a transformers ViTConfig (config.json).

    Raises:
      PretrainedError: a model type or setting with no equivalent, naming the key.
    """
    if config.get("model_type") != "vit":
        raise PretrainedError(
            f"{where}: model_type {config.get('model_type')!r} is not 'vit'; pass a "
            "ViTForImageClassification checkpoint directory"
        )
    act = config.get("hidden_act", "gelu")
    if act not in _GELUS:
        raise PretrainedError(
            f"{where}: hidden_act {act!r} is not supported; supported: {sorted(_GELUS)}"
        )
    if not config.get("qkv_bias", True):
        raise PretrainedError(
            f"{where}: qkv_bias false is not supported (our attention has biases on all four "
            "projections); convert a checkpoint with qkv_bias true"
        )
    if config.get("num_channels", 3) != 3:
        raise PretrainedError(f"{where}: num_channels {config['num_channels']} is not 3 (RGB)")
    labels = labels_from_config(config)
    num_classes = len(labels) if labels else int(config.get("num_labels", 2))
    patch = config.get("patch_size", 16)
    return dict(
        num_classes=num_classes,
        patch_size=tuple(patch) if isinstance(patch, list | tuple) else int(patch),
        hidden_size=int(config.get("hidden_size", 768)),
        depth=int(config.get("num_hidden_layers", 12)),
        num_heads=int(config.get("num_attention_heads", 12)),
        mlp_dim=int(config.get("intermediate_size", 3072)),
        pool="token",
        head="linear",
        representation_size=None,
        layernorm_epsilon=float(config.get("layer_norm_eps", 1e-12)),
        gelu_approximate=_GELUS[act],
    )


def image_size_from_config(config: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) the position embeddings were trained for."""
    size = config.get("image_size", 224)
    return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) else (int(size),) * 2


def convert_vit_tensors(
    tensors: Mapping[str, np.ndarray],
    kwargs: Mapping[str, Any],
    image_size: tuple[int, int],
    where: str,
) -> dict[str, Any]:
    """{"params": ...} of our ViT from a ViTForImageClassification state dict.

    Raises:
      PretrainedError: one line naming missing, misshaped and unused tensors.
    """
    src = TensorSource(canonical_names(tensors), where, ignore=("vit.pooler.",))
    d, heads, mlp = kwargs["hidden_size"], kwargs["num_heads"], kwargs["mlp_dim"]
    ph, pw = (
        (kwargs["patch_size"],) * 2
        if isinstance(kwargs["patch_size"], int)
        else kwargs["patch_size"]
    )
    tokens = (image_size[0] // ph) * (image_size[1] // pw) + 1
    dh = d // heads

    def linear(name: str, n_in: int, n_out: int) -> dict[str, np.ndarray]:
        w = src.take(f"{name}.weight", (n_out, n_in))
        b = src.take(f"{name}.bias", (n_out,))
        return {"kernel": _t(w), "bias": b}

    def norm(name: str) -> dict[str, np.ndarray]:
        return {"scale": src.take(f"{name}.weight", (d,)), "bias": src.take(f"{name}.bias", (d,))}

    conv_w = src.take("vit.embeddings.patch_embeddings.projection.weight", (d, 3, ph, pw))
    params: dict[str, Any] = {
        "embedding": {
            "kernel": None if conv_w is None else np.transpose(conv_w, (2, 3, 1, 0)),
            "bias": src.take("vit.embeddings.patch_embeddings.projection.bias", (d,)),
        },
        "cls": src.take("vit.embeddings.cls_token", (1, 1, d)),
    }
    transformer: dict[str, Any] = {
        "posembed_input": {
            "pos_embedding": src.take("vit.embeddings.position_embeddings", (1, tokens, d))
        },
        "encoder_norm": norm("vit.layernorm"),
    }
    for i in range(kwargs["depth"]):
        p = f"vit.encoder.layer.{i}"
        attention = {}
        for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
            lin = linear(f"{p}.attention.attention.{theirs}", d, d)
            attention[ours] = {
                "kernel": _reshape(lin["kernel"], (d, heads, dh)),
                "bias": _reshape(lin["bias"], (heads, dh)),
            }
        out = linear(f"{p}.attention.output.dense", d, d)
        attention["out"] = {"kernel": _reshape(out["kernel"], (heads, dh, d)), "bias": out["bias"]}
        transformer[f"encoderblock_{i}"] = {
            "LayerNorm_0": norm(f"{p}.layernorm_before"),
            "MultiHeadDotProductAttention_1": attention,
            "LayerNorm_2": norm(f"{p}.layernorm_after"),
            "MlpBlock_3": {
                "Dense_0": linear(f"{p}.intermediate.dense", d, mlp),
                "Dense_1": linear(f"{p}.output.dense", mlp, d),
            },
        }
    params["Transformer"] = transformer
    params["head"] = linear("classifier", d, kwargs["num_classes"])
    src.check()
    return {"params": params}


def _t(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else np.ascontiguousarray(x.T)


def _reshape(x: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if x is None else x.reshape(shape)


def load_vit(directory: str | Path) -> Pretrained:
    """A ViTForImageClassification directory (config.json, model.safetensors or
    pytorch_model.bin, optional preprocessor_config.json) as a kind "classify" `Pretrained`.

    `extras["forward"]` is the jitted `(variables, image [B, H, W, 3]) -> logits [B, classes]`.

    Raises:
      PretrainedError: a directory without config or weights, another model type, or tensors that
        do not match the config (named).
    """
    directory = Path(directory)
    config = read_config(directory)
    path = weights_file(directory)
    return vit_from_tensors(
        config,
        read_state_dict(path),
        read_json(directory, "preprocessor_config.json"),
        where=str(directory),
    )


def vit_from_tensors(
    config: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    processor_config: Mapping[str, Any] | None = None,
    where: str = "checkpoint",
) -> Pretrained:
    """`load_vit` from what its files hold: config.json, the state dict (either transformers
    naming, numpy arrays) and preprocessor_config.json (None: resize to the config's image_size,
    HF's other class defaults)."""
    import jax
    import jax.numpy as jnp

    from attn_jax.models.vit import ViT
    from attn_jax.pretrained.preprocess import from_hf_processor_config

    kwargs = vit_kwargs_from_config(config, f"{where}/config.json")
    image_size = image_size_from_config(config)
    variables = convert_vit_tensors(tensors, kwargs, image_size, where)
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables)
    model = ViT(**kwargs)
    if processor_config is None:
        # Without the file, HF's class default (224 px) would not fit other image sizes.
        processor_config = {"size": {"height": image_size[0], "width": image_size[1]}}
    preprocess = from_hf_processor_config(processor_config, model_type="vit")
    if preprocess.output_size(*image_size) != image_size:
        raise PretrainedError(
            f"{where}/preprocessor_config.json makes {preprocess.output_size(*image_size)} "
            f"images but the model's position embeddings are for image_size {image_size}; "
            "use the checkpoint's own preprocessor_config.json"
        )
    return Pretrained(
        model=model,
        variables=variables,
        preprocess=preprocess,
        kind="classify",
        labels=labels_from_config(config),
        config=dict(config),
        extras={"forward": classifier_forward(model), "image_size": image_size},
    )


def classifier_forward(model: Any):
    """jit of (variables, images) -> float32 logits, with full-precision matmuls (the reference
    numbers are float32; TF32 on a GPU would move them by ~1e-3)."""
    import jax
    import jax.numpy as jnp

    def forward(variables, images):
        with jax.default_matmul_precision("highest"):
            logits, _ = model.apply(variables, images)
        return logits.astype(jnp.float32)

    return jax.jit(forward)


__all__ = [
    "canonical_names",
    "classifier_forward",
    "convert_vit_tensors",
    "image_size_from_config",
    "labels_from_config",
    "load_vit",
    "vit_from_tensors",
    "vit_kwargs_from_config",
]
