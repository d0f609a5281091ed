"""Converters from reference checkpoints (Hugging Face, timm) into attn_jax models.

`load(path)` reads a checkpoint the user downloaded and returns a `Pretrained`: our Linen model,
its variables, and the preprocessing of the checkpoint's reference processor.

  path                                              converter
  HF directory, config.json "model_type": "vit"     vit.load_vit        (ViTForImageClassification)
  HF directory, config.json "model_type": "detr"    detr.load_detr      (DetrForObjectDetection)
  HF directory, config.json "model_type": "clip"    clip.load_clip      (CLIPModel)
  timm hub directory, "architecture": "swin_..."    swin.load_timm_swin
  a state dict file (.safetensors, .pth, .bin)      swin.load_timm_swin (timm / official Swin)

One file per source model family; each imports jax and the model lazily, so that importing this
package costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from attn_jax.pretrained.checkpoint_files import Pretrained, PretrainedError, read_config

_HF_LOADERS = {
    "vit": ("attn_jax.pretrained.vit", "load_vit"),
    "detr": ("attn_jax.pretrained.detr", "load_detr"),
    "clip": ("attn_jax.pretrained.clip", "load_clip"),
}


def load(path: str | Path) -> Pretrained:
    """The converted checkpoint at `path` (see the module docstring for what is recognised).

    Raises:
      PretrainedError: a missing path, a directory without config.json, or a model family with
        no converter; one line naming it and what is supported.
    """
    import importlib

    path = Path(path)
    if path.is_file():
        from attn_jax.pretrained.swin import load_timm_swin

        return load_timm_swin(path)
    if not path.is_dir():
        raise PretrainedError(
            f"checkpoint {path} does not exist; pass a downloaded checkpoint directory "
            "(config.json plus model.safetensors or pytorch_model.bin) or a timm Swin state dict"
        )
    config = read_config(path)
    architecture = config.get("architecture")
    if isinstance(architecture, str):
        if architecture.startswith("swin"):
            from attn_jax.pretrained.swin import load_timm_swin

            return load_timm_swin(path)
        raise PretrainedError(
            f"{path / 'config.json'}: timm architecture {architecture!r} has no converter; "
            "supported timm models: swin_* (Swin V1)"
        )
    model_type = config.get("model_type")
    if model_type not in _HF_LOADERS:
        raise PretrainedError(
            f"{path / 'config.json'}: model_type {model_type!r} has no converter; supported: "
            f"{sorted(_HF_LOADERS)} (Hugging Face) and timm swin_* directories"
        )
    module_name, function = _HF_LOADERS[model_type]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise PretrainedError(
            f"{path / 'config.json'}: the {model_type} converter is not available in this "
            "version of attn_jax"
        ) from None
    return getattr(module, function)(path)


__all__ = ["Pretrained", "PretrainedError", "load"]
