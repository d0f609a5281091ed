"""Residual networks and their attention variants, as one configurable ResNet.

He, Zhang, Ren, Sun 2016, "Deep Residual Learning for Image Recognition" (CVPR 2016):
  sec. 3.2, eq. 1:  y = F(x, {W_i}) + x                 identity shortcut
  sec. 3.2, eq. 2:  y = F(x, {W_i}) + W_s x             projection shortcut (option B: 1x1 conv +
                                                        norm where the shape changes)
  Table 1:          stems, basic (two 3x3) and bottleneck (1x1, 3x3, 1x1 with 4x expansion)
                    blocks, stage depths of ResNet-18/34/50/101/152.
  sec. 4.2:         the CIFAR form: a 3x3 stem convolution with no max-pooling (`stem="small"`),
                    which the 8x8 digits need.
The stride of a downsampling bottleneck sits on its 3x3 convolution (the "v1.5" placement of
torchvision and most reimplementations; the paper's original puts it on the first 1x1); the
parameter count is the same either way.

Attention variants, all options of the same network so that experiments differ in one field:
  * `block_attention="se"`: a squeeze-and-excitation block (Hu et al. 2018, "Squeeze-and-Excitation
    Networks", eqs. 2-4, Fig. 3) on each residual branch after its last normalisation and before the
    addition: x_out = ReLU(SE(F(x)) + shortcut).
  * `non_local_stages`: a non-local block (Wang et al. 2018, "Non-local Neural Networks", eqs. 1-6)
    right before the last residual block of each listed stage, the placement of the paper's
    single-block ablation (Table 2a: before the last block of res4, i.e. stage 3 here); with
    `non_local_every=k` one after every k-th block instead (Table 2c's 5- and 10-block models:
    stages (2, 3), k = 2 and 1). Logits are scaled by 1/sqrt(C') by default, as the authors' code.
  * `aa_stages`: every 3x3 convolution of the listed stages' blocks becomes an attention-augmented
    convolution (Bello et al. 2019, "Attention Augmented Convolutional Networks", eq. 5) with
    d_k = kappa F_out and d_v = upsilon F_out (rounded down to multiples of the heads).
Stages are numbered from 1 (torchvision's layer1..layer4, the paper's conv2_x..conv5_x).

Normalisation: the norm layer is a factory chosen by `norm`:
  * "batch" (Ioffe & Szegedy 2015, "Batch Normalization", Algorithm 1; the papers' and the
    default): flax's BatchNorm with torch's settings (eps 1e-5, running averages updated as
    r = 0.9 r + 0.1 batch, i.e. torch's momentum 0.1). Training normalises with the statistics of
    the global batch (under jit with the batch sharded over devices, the reductions span every
    device) and updates the running averages in the 'batch_stats' collection, which the trainer
    carries in its state; evaluation (`train=False`) normalises with the running averages. One
    difference from torch: the running variance averages the biased batch variance (torch's the
    unbiased one, larger by n / (n - 1)).
  * "group" (Wu & He 2018, "Group Normalization", stateless; the digits experiments' choice).
  * "frozen_batch" (a batch norm whose statistics AND affine terms are frozen, as DETR's backbone
    uses: y = (x - mean) / sqrt(var + eps) * scale + bias, all four vectors constants of the
    'batch_stats' collection that a converted checkpoint fills (`init_from`); applied without
    that collection the layer is the identity).
  * "none".
Batch and group norms carry one trainable scale and bias per channel, so their parameter counts
are those of the published ResNets: ResNet-50 has 25,557,032 parameters at 1000 classes
(`PUBLISHED_PARAMS`, asserted in the tests). A frozen batch norm has no parameters (DETR's
reference keeps them as buffers, which parameter counts exclude): ResNet-50 with it has
25,557,032 - 53,120 = 25,503,912.

Padding: the 7x7 stem convolution and the max-pool pad symmetrically as torch does. The 3x3
convolutions pad (1, 1) on each side by default (`padding="symmetric"`), as torchvision, timm and
the papers' code do, so that converted torch weights (attn_jax/pretrained/resnet.py) give the
reference's outputs. `padding="same"` is XLA's "SAME", which differs only for a stride-2
convolution on an even-sized map: it pads (0, 1), shifting the sampling grid by one pixel.

The model returns (logits, aux) with aux["stem"], aux["stage1"]..aux["stageN"] (the feature maps a
detection or segmentation head reads) and aux["pre_logits"] (the pooled features).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention.aaconv import AttentionAugmentedConv
from attn_jax.attention.channel import SqueezeExcitation
from attn_jax.attention.non_local import NON_LOCAL_MODES, NonLocalBlock
from attn_jax.models.variants import VariantTable, preset_kwargs

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "small")
NORMS = ("batch", "group", "frozen_batch", "none")
PADDINGS = ("symmetric", "same")
BLOCK_ATTENTIONS = (None, "se")

RESNET_VARIANTS = VariantTable(
    "ResNet",
    "He et al. 2016, Table 1; Hu et al. 2018, Table 14",
    {
        "resnet18": dict(block="basic", stage_sizes=(2, 2, 2, 2)),
        "resnet34": dict(block="basic", stage_sizes=(3, 4, 6, 3)),
        "resnet50": dict(block="bottleneck", stage_sizes=(3, 4, 6, 3)),
        "resnet101": dict(block="bottleneck", stage_sizes=(3, 4, 23, 3)),
        "resnet152": dict(block="bottleneck", stage_sizes=(3, 8, 36, 3)),
        "se_resnet50": dict(block="bottleneck", stage_sizes=(3, 4, 6, 3), block_attention="se"),
        # The digits experiments: 8x8 inputs, three basic stages at 8x8, 4x4 and 2x2.
        "digits": dict(block="basic", stage_sizes=(2, 2, 2), width=32, stem="small"),
    },
)

# Trainable parameters at 1000 classes and 224x224 inputs: torchvision's counts of the batch-norm
# ResNets, and 28,088,024 for SE-ResNet-50 (ResNet-50 + 16 SE blocks with biases, r = 16).
PUBLISHED_PARAMS: dict[str, int] = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "se_resnet50": 28_088_024,
}


class GroupNorm(nn.Module):
    """Group normalisation over [B, ..., C] with gcd(groups, C) groups, so that any width works.

    Attributes:
      groups: the wanted number of groups (32 in Wu & He 2018).
      epsilon: added to the variance.
      scale_init: initialiser of the per-channel scale (zeros to start a branch at zero).
    """

    groups: int = 32
    epsilon: float = 1e-5
    scale_init: Callable[..., jax.Array] = nn.initializers.ones_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # flax's GroupNorm does the work; this layer only picks a group count that divides C.
        return nn.GroupNorm(
            num_groups=math.gcd(self.groups, x.shape[-1]),
            epsilon=self.epsilon,
            scale_init=self.scale_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="norm",
        )(x)


class FrozenBatchNorm(nn.Module):
    """Frozen batch norm: (x - mean) / sqrt(var + eps) * scale + bias, none of it trained.

    The four per-channel vectors are constants, not parameters: they live in the 'batch_stats'
    collection (`scale`, `bias`, `mean`, `var`), where a converted checkpoint puts them. `init`
    creates them with a fresh batch norm's values (scale from `scale_init`, bias 0, mean 0,
    var 1) so that their tree is known; applied without a 'batch_stats' collection the layer is
    the identity.
    """

    epsilon: float = 1e-5
    scale_init: Callable[..., jax.Array] = nn.initializers.ones_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if not (self.is_initializing() or self.has_variable("batch_stats", "scale")):
            return x
        shape = (x.shape[-1],)

        def constant(name: str, init: Callable[..., jax.Array]) -> jax.Array:
            # A fixed key: the constants' initial values must not depend on the params stream.
            make = lambda: init(jax.random.key(0), shape, self.param_dtype)  # noqa: E731
            return self.variable("batch_stats", name, make).value

        scale = constant("scale", self.scale_init)
        bias = constant("bias", nn.initializers.zeros_init())
        mean = constant("mean", nn.initializers.zeros_init())
        var = constant("var", nn.initializers.ones_init())
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(self.dtype or x.dtype)


def make_norm(
    kind: str,
    *,
    train: bool = False,
    groups: int = 32,
    epsilon: float = 1e-5,
    dtype: Any = None,
    param_dtype=jnp.float32,
) -> Callable[..., nn.Module]:
    """A norm-layer factory `norm(name=..., scale_init=...)` for the blocks (see the module doc).

    Args:
      kind: one of `NORMS`.
      train: batch norm normalises with the batch's statistics and updates its running averages
        (else it reads them); the other kinds ignore it.
      groups: groups of the group norm.
      epsilon: added to the variance.
      dtype: computation dtype.
      param_dtype: parameter dtype.

    Raises:
      ValueError: unknown kind.
    """
    if kind == "batch":
        # flax's momentum is the weight of the old average: 0.9 is torch's momentum=0.1.
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=epsilon,
            dtype=dtype,
            param_dtype=param_dtype,
        )
    if kind == "group":
        return functools.partial(
            GroupNorm, groups=groups, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype
        )
    if kind == "frozen_batch":
        return functools.partial(
            FrozenBatchNorm, epsilon=epsilon, dtype=dtype, param_dtype=param_dtype
        )
    if kind == "none":
        return lambda name=None, scale_init=None: lambda x: x  # noqa: ARG005
    raise ValueError(f"unknown norm {kind!r}; valid norms: {list(NORMS)}")


class ResidualBlock(nn.Module):
    """A basic or bottleneck residual block (He et al. 2016, Fig. 5), optionally with SE on the
    residual branch and attention-augmented 3x3 convolutions.

    Attributes:
      features: the 3x3 width (output = features, or 4 x features for a bottleneck).
      block: "basic" or "bottleneck".
      strides: the block's downsampling stride (on the 3x3 convolution).
      norm: the norm factory.
      zero_init_residual: start the branch's last norm scale at zero (the block starts as identity).
      attention: None or "se".
      se_reduction: SE's r.
      aa: None, or AttentionAugmentedConv kwargs beyond features/strides (key/value fractions).
      padding: "symmetric" (one pixel on every side, as torch) or "same" for the 3x3
        convolutions (module docstring).
    """

    features: int
    block: str = "basic"
    strides: int = 1
    norm: Callable[..., nn.Module] = GroupNorm
    zero_init_residual: bool = False
    attention: str | None = None
    se_reduction: int = 16
    aa: dict[str, Any] | None = None
    padding: str = "symmetric"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _conv3x3(self, features: int, strides: int, name: str) -> Callable[[jax.Array], jax.Array]:
        if self.aa is None:
            return nn.Conv(
                features,
                (3, 3),
                strides=strides,
                padding=((1, 1), (1, 1)) if self.padding == "symmetric" else "SAME",
                use_bias=False,
                kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )
        heads = self.aa["num_heads"]
        round_down = lambda n: (int(n * features) // heads) * heads  # noqa: E731
        return AttentionAugmentedConv(
            features,
            key_dim=max(round_down(self.aa["key_fraction"]), heads),
            value_dim=max(round_down(self.aa["value_fraction"]), heads),
            num_heads=heads,
            strides=(strides, strides),
            relative=self.aa["relative"],
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            padding="SAME",
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        last_scale = (
            nn.initializers.zeros_init() if self.zero_init_residual else nn.initializers.ones_init()
        )
        if self.block == "basic":
            out_features = self.features
            y = self._conv3x3(self.features, self.strides, "conv1")(x)
            y = nn.relu(self.norm(name="norm1")(y))
            y = self._conv3x3(self.features, 1, "conv2")(y)
            y = self.norm(name="norm2", scale_init=last_scale)(y)
        else:
            out_features = 4 * self.features
            y = conv(self.features, (1, 1), name="conv1")(x)
            y = nn.relu(self.norm(name="norm1")(y))
            y = self._conv3x3(self.features, self.strides, "conv2")(y)
            y = nn.relu(self.norm(name="norm2")(y))
            y = conv(out_features, (1, 1), name="conv3")(y)
            y = self.norm(name="norm3", scale_init=last_scale)(y)
        if self.attention == "se":
            # Hu et al. Fig. 3: on the residual branch, before the identity is added.
            y = SqueezeExcitation(
                reduction=self.se_reduction,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="se",
            )(y)
        shortcut = x
        if x.shape[-1] != out_features or self.strides != 1:
            shortcut = conv(out_features, (1, 1), strides=self.strides, name="shortcut_conv")(x)
            shortcut = self.norm(name="shortcut_norm")(shortcut)
        return nn.relu(y + shortcut)  # eq. 1 / eq. 2


class ResNet(nn.Module):
    """ResNet classifier (He et al. 2016) with optional SE, non-local and AA-conv; returns
    (logits, aux).

    Attributes:
      num_classes: output classes; 0 = no head (a backbone): the output is the pooled features.
      stage_sizes: blocks per stage (Table 1); the width doubles and the map halves per stage.
      block: "basic" or "bottleneck".
      width: channels of the stem and of the first stage's 3x3 convolutions (64 in the paper).
      stem: "imagenet" (7x7/2 convolution and 3x3/2 max-pool) or "small" (one 3x3/1 convolution,
        no pooling: the CIFAR form for small images).
      norm: "batch" (running averages in 'batch_stats'), "group", "frozen_batch" (no
        parameters; constants in 'batch_stats') or "none" (module doc).
      norm_groups: groups of the group norm (gcd with the channels is taken).
      norm_epsilon: epsilon of the norms.
      zero_init_residual: start each block's last norm scale at zero.
      block_attention: None or "se" (an SE block in every residual block).
      se_reduction: SE's r.
      non_local_stages: stages (from 1) that get non-local blocks (placed by non_local_every).
      non_local_every: 0: one block before the stage's last block (the paper's single-block
        ablation); k >= 1: one after every k-th block, as the authors' code (`idx % k == k - 1`):
        stages (2, 3) (res3, res4) of resnet50 with k = 2 are the paper's 5-block model, k = 1
        its 10-block model.
      non_local_mode: the non-local pairwise function (`NON_LOCAL_MODES`).
      non_local_subsample: max-pool phi and g by 2 (sec. 3.3 of Wang et al.).
      non_local_scale_logits: scale the embedded-Gaussian logits by inner_dim^-0.5, as the
        authors' code does (eq. 3 does not).
      aa_stages: stages (from 1) whose 3x3 convolutions are attention-augmented.
      aa_key_fraction: kappa = d_k / F_out.
      aa_value_fraction: upsilon = d_v / F_out.
      aa_heads: N_h.
      aa_relative: use the 2D relative position logits.
      padding: "symmetric" pads every 3x3 convolution by one pixel on each side, as torch does
        (needed to reproduce converted torch weights); "same" pads as XLA's "SAME" (module
        docstring).
      dtype: computation dtype (bfloat16: the norms still compute in float32, flax's and ours);
        the logits are float32.
      param_dtype: parameter dtype.
    """

    num_classes: int | None = None
    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    block: str = "bottleneck"
    width: int = 64
    stem: str = "imagenet"
    norm: str = "batch"
    norm_groups: int = 32
    norm_epsilon: float = 1e-5
    zero_init_residual: bool = False
    block_attention: str | None = None
    se_reduction: int = 16
    non_local_stages: tuple[int, ...] = ()
    non_local_every: int = 0
    non_local_mode: str = "embedded_gaussian"
    non_local_subsample: bool = True
    non_local_scale_logits: bool = True
    aa_stages: tuple[int, ...] = ()
    aa_key_fraction: float = 0.4
    aa_value_fraction: float = 0.2
    aa_heads: int = 8
    aa_relative: bool = True
    padding: str = "symmetric"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        # Checked at construction, so that a bad config fails while it is read.
        for field, value, allowed in (
            ("block", self.block, BLOCKS),
            ("stem", self.stem, STEMS),
            ("norm", self.norm, NORMS),
            ("block_attention", self.block_attention, BLOCK_ATTENTIONS),
            ("non_local_mode", self.non_local_mode, NON_LOCAL_MODES),
            ("padding", self.padding, PADDINGS),
        ):
            if value not in allowed:
                raise ValueError(f"ResNet {field}={value!r} is not one of {list(allowed)}")
        if self.num_classes is None or self.num_classes < 0:
            raise ValueError(
                f"ResNet needs num_classes >= 0 (0 for a backbone without head), got "
                f"{self.num_classes}"
            )
        if self.non_local_every < 0:
            raise ValueError(f"ResNet non_local_every must be >= 0, got {self.non_local_every}")
        n = len(self.stage_sizes)
        for field in ("non_local_stages", "aa_stages"):
            bad = [s for s in getattr(self, field) if not 1 <= s <= n]
            if bad:
                raise ValueError(
                    f"ResNet {field} {list(bad)} out of range: stages are numbered 1..{n}"
                )
        if not 0 < self.aa_value_fraction < 1 or self.aa_key_fraction <= 0:
            raise ValueError(
                "ResNet aa_value_fraction must be in (0, 1) and aa_key_fraction > 0; got "
                f"{self.aa_value_fraction}, {self.aa_key_fraction}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self, images: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Classifies a batch of images.

        Args:
          images: float [B, H, W, C].
          train: batch norm uses the batch's statistics and updates its running averages
          (the 'batch_stats' collection must then be mutable); else it uses the averages.

        Returns:
          (logits [B, num_classes], aux) with the stem and stage feature maps and "pre_logits";
          with num_classes=0 the output is the pooled features [B, C_last].
        """
        if images.ndim != 4:
            raise ValueError(
                f"ResNet expects images [B, H, W, C]; got shape {images.shape} (add a channel axis)"
            )
        norm = make_norm(
            self.norm,
            train=train,
            groups=self.norm_groups,
            epsilon=self.norm_epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
        aux: dict[str, jax.Array] = {}
        if self.stem == "imagenet":
            x = nn.Conv(
                self.width,
                (7, 7),
                strides=2,
                padding=[(3, 3), (3, 3)],
                use_bias=False,
                kernel_init=kernel_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="stem_conv",
            )(images)
            x = nn.relu(norm(name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        else:
            x = nn.Conv(
                self.width,
                (3, 3),
                padding="SAME",
                use_bias=False,
                kernel_init=kernel_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="stem_conv",
            )(images)
            x = nn.relu(norm(name="stem_norm")(x))
        aux["stem"] = x

        aa = dict(
            key_fraction=self.aa_key_fraction,
            value_fraction=self.aa_value_fraction,
            num_heads=self.aa_heads,
            relative=self.aa_relative,
        )
        non_local = functools.partial(
            NonLocalBlock,
            mode=self.non_local_mode,
            subsample=self.non_local_subsample,
            scale_logits=self.non_local_scale_logits,
            # Without a norm, W_z itself starts at zero: still the identity at init.
            norm=None if self.norm == "none" else norm,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        every = self.non_local_every
        for s, num_blocks in enumerate(self.stage_sizes, start=1):
            for i in range(num_blocks):
                if s in self.non_local_stages and not every and i == num_blocks - 1:
                    x = non_local(name=f"stage{s}_non_local")(x)
                x = ResidualBlock(
                    features=self.width * 2 ** (s - 1),
                    block=self.block,
                    strides=2 if (i == 0 and s > 1) else 1,
                    norm=norm,
                    zero_init_residual=self.zero_init_residual,
                    attention=self.block_attention,
                    se_reduction=self.se_reduction,
                    aa=aa if s in self.aa_stages else None,
                    padding=self.padding,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"stage{s}_block{i}",
                )(x)
                if s in self.non_local_stages and every and i % every == every - 1:
                    x = non_local(name=f"stage{s}_non_local{i}")(x)
            aux[f"stage{s}"] = x

        x = jnp.mean(x, axis=(1, 2))  # global average pooling
        aux["pre_logits"] = x
        if not self.num_classes:
            return x, aux
        logits = nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head"
        )(x)
        return logits.astype(jnp.float32), aux

    def figure_data(self, params: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """What attn_jax.figures draws after training, from the weights the attention variants
        sow on up to 64 eval images: "non_local_attention" (each non-local block's weights),
        "aaconv_attention" (the first AA-conv layer's head-averaged weights) and "se_excitation"
        (the SE gates of each stage's last block, the paper's Fig. 6), each present only when the
        model has that variant; a plain ResNet has none. Batch norms use the statistics of
        these images.
        """
        images = np.asarray(batch["image"])[:64]
        labels = np.asarray(batch["label"])[:64]
        # One compiled forward pass: op by op, the many small attention ops each compile alone.
        # The trainer hands over parameters only, so a batch norm normalises with these images'
        # statistics (it would otherwise need running averages it is not given).
        train = self.norm == "batch"
        forward = jax.jit(
            lambda p, x: self.apply(
                {"params": p}, x, train=train, mutable=["intermediates", "batch_stats"]
            )
        )
        _, state = forward(params, images)
        inter = state.get("intermediates", {})
        flat: dict[str, np.ndarray] = {}  # "stage2_block0/conv1/attention" -> first sown value

        def collect(tree: Any, prefix: str) -> None:
            for key, value in tree.items():
                if isinstance(value, tuple):
                    flat[prefix + key] = np.asarray(value[0])
                else:
                    collect(value, prefix + key + "/")

        collect(inter, "")
        figures: dict[str, Any] = {}
        non_local = [
            (k.split("/")[0], v)
            for k, v in flat.items()
            if "_non_local" in k and k.endswith("attention")
        ]
        if non_local:
            figures["non_local_attention"] = {"images": images, "labels": labels, "maps": non_local}
        aaconv = [
            ("/".join(k.split("/")[:2]), v.mean(axis=1))
            for k, v in flat.items()
            if "_block" in k and k.endswith("attention")
        ]
        if aaconv:
            figures["aaconv_attention"] = {"images": images, "labels": labels, "maps": aaconv[:1]}
        se = {k.split("/")[0]: v for k, v in flat.items() if k.endswith("excitation")}
        last_blocks = {f"stage{s}_block{n - 1}" for s, n in enumerate(self.stage_sizes, start=1)}
        gates = {k: v for k, v in se.items() if k in last_blocks}
        if gates:
            figures["se_excitation"] = {"labels": labels, "gates": gates}
        return figures


def resnet_kwargs(variant: str | None, **overrides: Any) -> dict[str, Any]:
    """ResNet constructor kwargs of a variant, with the non-None `overrides` taking precedence.

    Args:
      variant: a name in `RESNET_VARIANTS`, or None to take every field from `overrides`.
      **overrides: ResNet fields; None values are ignored.

    Returns:
      a new dict of ResNet fields.

    Raises:
      ValueError: unknown variant.
    """
    kwargs = preset_kwargs(RESNET_VARIANTS, variant, overrides)
    # block_attention=None is a real choice, but None also means "unset" in configs: "none" spells
    # the plain block explicitly.
    if kwargs.get("block_attention") == "none":
        kwargs["block_attention"] = None
    return kwargs
