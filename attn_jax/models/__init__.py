"""Architectures composed from attention mechanisms, chosen by name from a config.

A model returns `(output, aux)`, never a loss; `build_model` turns a config mapping
{"name": ..., "variant": ..., **fields} into a Linen module and rejects misspelt fields in one line.
Each registered model names its variant table (models/variants.py); nested mappings in the config
(a sub-model's fields, e.g. SETR's `encoder`) arrive as plain dicts, and `dtype` may be spelt as a
string ("bfloat16": bfloat16 computation, float32 parameters).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.models import pretext
from attn_jax.models.clip import (
    CLIP,
    CLIP_VARIANTS,
    TEXT_MLM_VARIANTS,
    TextEncoder,
    clip_kwargs,
    text_mlm_kwargs,
)
from attn_jax.models.cnn import CNN, CNN_VARIANTS, MLP, MLP_VARIANTS, cnn_kwargs, mlp_kwargs
from attn_jax.models.detr import DETR, DETR_VARIANTS, detr_kwargs
from attn_jax.models.feature_select import (
    FEATURE_SELECT_VARIANTS,
    FeatureSelectMLP,
    feature_select_kwargs,
)
from attn_jax.models.mim import (
    MAE,
    MAE_VARIANTS,
    SIMMIM_VARIANTS,
    SimMIM,
    mae_kwargs,
    simmim_kwargs,
)
from attn_jax.models.ram import RAM, RAM_VARIANTS, ram_kwargs, ram_param_count
from attn_jax.models.resnet import RESNET_VARIANTS, ResNet, resnet_kwargs
from attn_jax.models.seq2seq import (
    BAHDANAU_VARIANTS,
    SEQ2SEQ_VARIANTS,
    Seq2Seq,
    Seq2SeqAttention,
    bahdanau_kwargs,
    seq2seq_kwargs,
)
from attn_jax.models.setr import SETR, SETR_VARIANTS, setr_kwargs
from attn_jax.models.stn import STN, STN_VARIANTS, stn_kwargs
from attn_jax.models.swin import SWIN_VARIANTS, Swin, swin_kwargs
from attn_jax.models.transfg import TRANSFG_VARIANTS, TransFG, transfg_kwargs
from attn_jax.models.transformer import (
    TRANSFORMER_VARIANTS,
    Transformer,
    transformer_kwargs,
    transformer_param_count,
)
from attn_jax.models.variants import VariantTable
from attn_jax.models.vit import VIT_VARIANTS, ViT, patchify, vit_kwargs


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model: its Linen class, its variant table, and the function that decodes
    `variant` + overrides into kwargs (the table's `decode`, plus any model-specific checks)."""

    module: type[nn.Module]
    variants: VariantTable
    decode: Callable[..., dict[str, Any]]


MODELS: dict[str, ModelEntry] = {
    "vit": ModelEntry(ViT, VIT_VARIANTS, vit_kwargs),
    "cnn": ModelEntry(CNN, CNN_VARIANTS, cnn_kwargs),
    "mlp": ModelEntry(MLP, MLP_VARIANTS, mlp_kwargs),
    "stn": ModelEntry(STN, STN_VARIANTS, stn_kwargs),
    "seq2seq": ModelEntry(Seq2Seq, SEQ2SEQ_VARIANTS, seq2seq_kwargs),
    "bahdanau": ModelEntry(Seq2SeqAttention, BAHDANAU_VARIANTS, bahdanau_kwargs),
    "transformer": ModelEntry(Transformer, TRANSFORMER_VARIANTS, transformer_kwargs),
    "resnet": ModelEntry(ResNet, RESNET_VARIANTS, resnet_kwargs),
    "swin": ModelEntry(Swin, SWIN_VARIANTS, swin_kwargs),
    "detr": ModelEntry(DETR, DETR_VARIANTS, detr_kwargs),
    "setr": ModelEntry(SETR, SETR_VARIANTS, setr_kwargs),
    "ram": ModelEntry(RAM, RAM_VARIANTS, ram_kwargs),
    "feature_select": ModelEntry(FeatureSelectMLP, FEATURE_SELECT_VARIANTS, feature_select_kwargs),
    "simmim": ModelEntry(SimMIM, SIMMIM_VARIANTS, simmim_kwargs),
    "mae": ModelEntry(MAE, MAE_VARIANTS, mae_kwargs),
    "clip": ModelEntry(CLIP, CLIP_VARIANTS, clip_kwargs),
    "text_mlm": ModelEntry(TextEncoder, TEXT_MLM_VARIANTS, text_mlm_kwargs),
    "colorizer": ModelEntry(
        pretext.Colorizer, pretext.COLORIZER_VARIANTS, pretext.colorizer_kwargs
    ),
    "bert": ModelEntry(pretext.BertPretraining, pretext.BERT_VARIANTS, pretext.bert_kwargs),
    "transfg": ModelEntry(TransFG, TRANSFG_VARIANTS, transfg_kwargs),
}
DTYPES = ("float32", "bfloat16", "float16")


def _field_names(module: type[nn.Module]) -> tuple[list[str], list[str]]:
    """(all user fields, required fields) of a Linen module class."""
    fields = [f for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    return [f.name for f in fields], required


def _plain(value: Any) -> Any:
    # JSON has no tuples (a config that went through config.json comes back with lists), and a
    # nested ConfigDict becomes the plain dict a module field holds.
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Mapping) or hasattr(value, "to_dict"):
        return {k: _plain(v) for k, v in dict(value).items()}
    return value


def _dtype(name: Any) -> Any:
    if name is None or not isinstance(name, str):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown model.dtype {name!r}: choose one of {list(DTYPES)}")
    return jnp.dtype(name)


def build_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Builds the model named by `model_cfg["name"]` from the remaining keys.

    Args:
      model_cfg: {"name": registered model, "variant": optional preset, **module fields}; fields
        set to None leave the variant's (or the class default) value in place.

    Returns:
      the Linen module.

    Raises:
      ValueError: unknown model name, unknown field, unknown variant, or a required field missing;
        the message is one line naming the key and the valid choices.
    """
    cfg = dict(model_cfg)
    name = cfg.pop("name", None)
    if name not in MODELS:
        near = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}{hint}")
    entry = MODELS[name]
    fields, required = _field_names(entry.module)
    valid = ["variant", *fields]
    for key in cfg:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"unknown field {key!r} for model {name!r}{hint}; valid fields: {valid}"
            )
    variant = cfg.pop("variant", None)
    if "dtype" in cfg:
        cfg["dtype"] = _dtype(cfg["dtype"])
    kwargs = entry.decode(variant, **{k: _plain(v) for k, v in cfg.items()})
    missing = [f for f in required if kwargs.get(f) is None]
    if missing:
        raise ValueError(
            f"model {name!r} misses required field(s) {missing}: set them, or pick a variant "
            f"that defines them"
        )
    return entry.module(**kwargs)


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree (arrays or `jax.ShapeDtypeStruct`s)."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


__all__ = [
    "DETR",
    "DETR_VARIANTS",
    "detr_kwargs",
    "SETR",
    "SETR_VARIANTS",
    "setr_kwargs",
    "SWIN_VARIANTS",
    "Swin",
    "swin_kwargs",
    "TRANSFG_VARIANTS",
    "TransFG",
    "transfg_kwargs",
    "RAM",
    "RAM_VARIANTS",
    "ram_kwargs",
    "ram_param_count",
    "FeatureSelectMLP",
    "feature_select_kwargs",
    "CNN",
    "MLP",
    "cnn_kwargs",
    "mlp_kwargs",
    "STN",
    "stn_kwargs",
    "BAHDANAU_VARIANTS",
    "MODELS",
    "SEQ2SEQ_VARIANTS",
    "TRANSFORMER_VARIANTS",
    "Transformer",
    "Seq2Seq",
    "Seq2SeqAttention",
    "bahdanau_kwargs",
    "seq2seq_kwargs",
    "transformer_kwargs",
    "transformer_param_count",
    "VIT_VARIANTS",
    "ModelEntry",
    "RESNET_VARIANTS",
    "ResNet",
    "resnet_kwargs",
    "ViT",
    "build_model",
    "count_params",
    "patchify",
    "vit_kwargs",
]
