"""Layer norm against batch norm on a real activation tensor, drawn as the chapter draws it.

Both normalize x to (x - mean) / sqrt(var + eps) (then scale and shift, gamma = 1 and beta = 0 at
initialization, as drawn here); they differ in which entries share the mean and the variance.
For token activations x [B, T, D] (B examples, T tokens, D features):

- layer norm (Ba, Kiros, Hinton 2016, "Layer Normalization"): over the D features of one token,
  one (mean, var) per (b, t); the same at training and test time and independent of the batch;
  what the Transformer (Vaswani et al. 2017) and ViT use;
- batch norm (Ioffe & Szegedy 2015, "Batch Normalization"), training mode: over the B * T
  entries of one feature, one (mean, var) per d; it couples the examples of a batch.

The tensor is the residual stream after one block of the default experiment's ViT
(experiments/vit_digits.py) on a batch of test digits: freshly initialized weights, or a trained
run's with `init_from=<workdir>`. The program normalizes it with flax's `nn.LayerNorm` and
`nn.BatchNorm` and writes into `<workdir>/plots/`: normalization_axes.png (the tensor as a
[B*T, D] matrix with the row a layer norm averages over and the column a batch norm averages
over), normalization_statistics.png (the outputs and the per-token / per-feature means and
standard deviations before and after), and a .txt caption for each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from attn_jax import data as data_lib
from attn_jax.errors import UserError
from attn_jax.figures.chapter import plot_normalization_axes, plot_normalization_statistics
from attn_jax.models import build_model

AXES_FIGURE = "normalization_axes.png"
STATISTICS_FIGURE = "normalization_statistics.png"


class NormalizationConfigError(UserError, ValueError):
    """A bad field of the normalization figure's config; one line."""


def normalization_arrays(activations: np.ndarray) -> dict[str, np.ndarray]:
    """Layer norm and batch norm (training mode) of `activations` [B, T, D], and the statistics
    the figure draws: per-token ("ln_*", [B*T]) and per-feature ("bn_*", [D]) means and standard
    deviations, before and after."""
    x = jnp.asarray(activations, jnp.float32)
    layer_norm = nn.LayerNorm()
    ln = layer_norm.apply(layer_norm.init(jax.random.key(0), x), x)
    batch_norm = nn.BatchNorm(use_running_average=False)  # statistics over every axis but D
    bn, _ = batch_norm.apply(batch_norm.init(jax.random.key(0), x), x, mutable=["batch_stats"])
    x, ln, bn = (np.asarray(a, np.float64) for a in (x, ln, bn))
    d = x.shape[-1]
    per_token = lambda a: a.reshape(-1, d)  # noqa: E731 - [B*T, D]
    return {
        "activations": x,
        "layer_norm": ln,
        "batch_norm": bn,
        "ln_mean_before": per_token(x).mean(-1),
        "ln_std_before": per_token(x).std(-1),
        "ln_mean_after": per_token(ln).mean(-1),
        "ln_std_after": per_token(ln).std(-1),
        "bn_mean_before": per_token(x).mean(0),
        "bn_std_before": per_token(x).std(0),
        "bn_mean_after": per_token(bn).mean(0),
        "bn_std_after": per_token(bn).std(0),
    }


def token_activations(config: ml_collections.ConfigDict) -> np.ndarray:
    """The residual stream after block `config.block` of the ViT `config.model` on the first
    `config.batch_size` test images of `config.data`: [B, T, D]."""
    spec = data_lib.dataset_info(config.data)
    fields = dict(config.model)
    if fields.get("num_classes") is None:
        fields["num_classes"] = spec.num_classes
    if fields.get("name") != "vit":
        raise NormalizationConfigError(
            f"the normalization figure reads a ViT's blocks; model.name={fields.get('name')!r}"
        )
    block = int(config.get("block", 0))
    if not 0 <= block < int(fields["depth"]):
        raise NormalizationConfigError(
            f"block={block} is not a block of the {fields['depth']}-block ViT: pick 0 to "
            f"{int(fields['depth']) - 1}"
        )
    model = build_model(dict(fields, return_intermediates=True))
    batches = data_lib.make_dataset(
        config.data, "test", train=False, global_batch_size=int(config.batch_size), seed=0
    )
    images = jnp.asarray(next(iter(batches))["image"])
    params = jax.jit(model.init)(jax.random.key(int(config.get("seed", 0))), images)["params"]
    if config.get("init_from"):
        from attn_jax.train.checkpoint import init_params_from

        params, _ = init_params_from(config.init_from, params)
    _, aux = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, images)
    return np.asarray(aux[f"block{block:02d}"])


def run(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Draws both figures. Config fields: `model` and `data` (a ViT experiment's groups),
    `block`, `batch_size`, `seed`, `init_from` ("" for fresh weights).

    Returns:
      {"files": paths written, "shape": [B, T, D], and the largest |mean| and |std - 1| after
       each normalization over its own groups ("ln_*": tokens, "bn_*": features) and, for
       contrast, over the other's groups}.
    """
    arrays = normalization_arrays(token_activations(config))
    b, t, d = arrays["activations"].shape
    weights = "trained" if config.get("init_from") else "freshly initialized"
    out = Path(workdir) / "plots"
    captions = {
        AXES_FIGURE: (
            f"Which entries share one mean and variance, on the tokens after block "
            f"{int(config.block)} of a {weights} ViT (B={b} digits x T={t} tokens x D={d}): layer "
            "norm averages over the D features of one token (a row), batch norm over the B x T "
            "tokens of one feature (a column)."
        ),
        STATISTICS_FIGURE: (
            "Layer norm gives every token mean 0 and standard deviation 1 over its features "
            "(top); batch norm gives every feature mean 0 and standard deviation 1 over the "
            "batch's tokens (bottom). Dots: each token's / feature's statistics before and after."
        ),
    }
    files = [
        plot_normalization_axes(
            arrays["activations"],
            (0, 0),
            int(np.argmax(arrays["bn_std_before"])),
            out / AXES_FIGURE,
            captions[AXES_FIGURE],
        ),  # fmt: skip
        plot_normalization_statistics(arrays, out / STATISTICS_FIGURE, captions[STATISTICS_FIGURE]),
    ]
    for name, caption in captions.items():
        text = out / name.replace(".png", ".txt")
        text.write_text(caption + "\n")
        files.append(text)
    ln_after, bn_after = arrays["layer_norm"].reshape(-1, d), arrays["batch_norm"].reshape(-1, d)
    return {
        "files": [str(f) for f in files],
        "shape": [b, t, d],
        "ln_token_mean_max": float(np.abs(arrays["ln_mean_after"]).max()),
        "ln_token_std_dev_max": float(np.abs(arrays["ln_std_after"] - 1).max()),
        "bn_feature_mean_max": float(np.abs(arrays["bn_mean_after"]).max()),
        "bn_feature_std_dev_max": float(np.abs(arrays["bn_std_after"] - 1).max()),
        "ln_feature_mean_max": float(np.abs(ln_after.mean(0)).max()),
        "bn_token_mean_max": float(np.abs(bn_after.mean(-1)).max()),
    }
