"""The transformer-block family that ViT, CLIP, SimMIM/MAE, SETR, the Transformer and DETR compose
(and whose MLP, stochastic depth and initialisers Swin's blocks reuse), in models/ because it
composes the mechanisms of attn_jax/attention/ into layers.

A block is the layer of Vaswani et al. 2017 ("Attention Is All You Need", sec. 3.1) in either
arrangement of its LayerNorms:

  post-LN (the paper, DETR):          x = LN(x + Drop(Sublayer(x)))
  pre-LN (ViT eqs. 2-3, CLIP, MAE):   x = x + Drop(Sublayer(LN(x)))

with the sublayers self-attention, optionally cross-attention to a memory (the decoder of the
Transformer and of DETR), and an MLP, FFN(x) = act(x W_1 + b_1) W_2 + b_2 (eq. 2 with ReLU; GELU
in ViT, QuickGELU in CLIP). Positions may be added to the query and key inputs only, never to the
values (DETR, Carion et al. 2020, sec. 3.2). Stochastic depth (Huang et al. 2016, "Deep Networks
with Stochastic Depth") drops a sample's whole residual branch. The attention of every sublayer is
`attn_jax.attention.MultiHeadAttention`, so the model's `attention_fn` (a registered function)
and `attention_impl` (xla, cudnn, explicit, blockwise or auto) reach every block.

`stack_blocks` runs `depth` blocks in the calling module's scope, unrolled (one named subtree per
block, as checkpoints hold them) or with `nn.scan` (parameters stacked on a leading depth axis),
each optionally rematerialised (`nn.remat`), and returns every block's output tokens as
aux["block00"], aux["block01"], ...; `BlockStack` is the same as a submodule of its own.

Parameter names are data (`BlockNames`): each family keeps the names of its reference
checkpoints (official JAX ViT, OpenAI CLIP, DETR, ...), so that converters map tensors one to one
and trained checkpoints keep loading.

Tensor parallelism: the attention and MLP parameters name their Flax logical axes ("heads",
"mlp", "embed"; `attention.multi_head.with_logical_axes`), which train/sharding.py's `TP_RULES`
map to the `model` mesh axis. They are boxed only while logical axis rules are set, when the
trainer reads the axes; any other `init` returns the same plain arrays as without them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attn_jax.attention import MultiHeadAttention
from attn_jax.attention.dot_product import check_implementation
from attn_jax.attention.dropout import Dropout
from attn_jax.attention.dropout import dropout as masked_dropout
from attn_jax.attention.multi_head import with_logical_axes
from attn_jax.attention.registry import check_attention_fn

Initializer = Callable[..., jax.Array]
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "quick_gelu")


def quick_gelu(x: jax.Array) -> jax.Array:
    """x * sigmoid(1.702 x): the GELU approximation of OpenAI's released CLIP models."""
    return x * jax.nn.sigmoid(1.702 * x)


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The MLP activation called `name`: "gelu" (exact erf, PyTorch's nn.GELU), "gelu_tanh"
    (the tanh approximation of the official JAX ViT), "relu" or "quick_gelu" (CLIP).

    Raises:
      ValueError: an unknown name.
    """
    # Under jax.checkpoint the backward recomputes GELU from its input instead of keeping the
    # erf/tanh linearisation residuals: ViT-Ti/16's step plans 443 MiB less (benchmarks/README.md),
    # at the cost of one elementwise pass. PyTorch's GELU backward does the same.
    if name == "gelu":
        return jax.checkpoint(functools.partial(nn.gelu, approximate=False))
    if name == "gelu_tanh":
        return jax.checkpoint(functools.partial(nn.gelu, approximate=True))
    if name == "relu":
        return nn.relu
    if name == "quick_gelu":
        return quick_gelu
    raise ValueError(f"unknown activation {name!r}: choose one of {list(ACTIVATIONS)}")


def check_attention_config(attention_fn: Any, attention_impl: str | None) -> None:
    """Raises a one-line UserError for an unregistered `attention_fn` or an unknown
    `attention_impl`; models call it at construction, so a bad config fails while it is read."""
    check_attention_fn(attention_fn)
    check_implementation(attention_impl)


class AttentionModel(nn.Module, kw_only=True):
    """The fields every module built on the attention core shares (keyword-only), checked when
    the module is built: `attention_fn`, a function registered in attn_jax/attention/registry.py
    ("dot_product": eq. 1 of Vaswani et al. 2017); `attention_impl`, the path that computes it
    ("auto", "xla", "cudnn", "explicit" or "blockwise", attention/dot_product.py); `dtype`, the
    computation dtype (None: float32; with bfloat16, LayerNorms and the softmax still compute in
    float32 and outputs come back in float32); `param_dtype`, the parameters' dtype. A model
    hands them down to its blocks and sub-models with `shared_fields()`.
    """

    attention_fn: str = "dot_product"
    attention_impl: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_attention_config(self.attention_fn, self.attention_impl)
        super().__post_init__()

    def shared_fields(self) -> dict[str, Any]:
        """attention_fn, attention_impl, dtype and param_dtype, for a block or a sub-model."""
        return dict(
            attention_fn=self.attention_fn,
            attention_impl=self.attention_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )


def torch_linear_init() -> Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear and Conv weights
    (kaiming_uniform with a = sqrt(5), variance 1 / (3 fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear and Conv biases."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def drop_path(x: jax.Array, rate: float | jax.Array, rng: jax.Array | None) -> jax.Array:
    """Stochastic depth: each sample's whole branch is dropped with probability `rate` and the
    kept ones scaled by 1 / (1 - rate); identity when `rng` is None (evaluation). `rate` may be a
    traced scalar (a scanned stack's per-layer rate)."""
    if rng is None:
        return x
    return masked_dropout(x, rate, rng, shape=(x.shape[0],) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class BlockNames:
    """Submodule names of a block, as a family's checkpoints spell them."""

    self_norm: str
    self_attention: str
    mlp_norm: str
    mlp: str
    fc1: str
    fc2: str
    cross_norm: str = "cross_norm"
    cross_attention: str = "cross_attention"


class Mlp(nn.Module):
    """fc2(Dropout(act(fc1(x)))) [then act], width -> hidden -> width.

    Attributes:
      hidden: the inner width (ViT's mlp_dim, the Transformer's d_ff).
      activation: a name of `ACTIVATIONS`.
      activation_on_output: also apply the activation after fc2 (the Keras ViT example).
      dropout_rate: dropout after the inner activation (the residual dropout is the block's).
      kernel_init: fc1's kernel initializer.
      out_kernel_init: fc2's; None = kernel_init.
      bias_init: fc1's bias initializer.
      out_bias_init: fc2's; None = bias_init.
      names: the names of the two Dense layers.
    """

    hidden: int
    activation: str = "gelu"
    activation_on_output: bool = False
    dropout_rate: float = 0.0
    kernel_init: Initializer = nn.initializers.xavier_uniform()
    out_kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros_init()
    out_bias_init: Initializer | None = None
    names: tuple[str, str] = ("fc1", "fc2")
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        act = activation_fn(self.activation)
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        # Megatron's split for tensor parallelism: fc1 by columns and fc2 by rows on the hidden
        # units, so the activation needs no communication and fc2 ends in one sum.
        h = dense(
            self.hidden,
            kernel_init=with_logical_axes(self.kernel_init, ("embed", "mlp")),
            bias_init=with_logical_axes(self.bias_init, ("mlp",)),
            name=self.names[0],
        )(x)
        h = Dropout(self.dropout_rate)(act(h), deterministic=not train)
        y = dense(
            x.shape[-1],
            kernel_init=with_logical_axes(
                self.out_kernel_init or self.kernel_init, ("mlp", "embed")
            ),
            bias_init=with_logical_axes(self.out_bias_init or self.bias_init, ("embed",)),
            name=self.names[1],
        )(h)
        return act(y) if self.activation_on_output else y


def _with_pos(x: jax.Array, pos: jax.Array | None) -> jax.Array:
    return x if pos is None else x + pos.astype(x.dtype)


class TransformerBlock(AttentionModel):
    """One pre- or post-LN block: self-attention, [cross-attention,] MLP (module docstring).

    `train`, `sow_weights`, `decode` and what to return are fields, not call arguments, so that
    the block maps carry -> (carry, output) as `nn.scan` and `nn.remat` take it.

    Attributes:
      num_heads: attention heads.
      mlp_dim: MLP inner width.
      names: the submodule names (`BlockNames`).
      qkv_features: total query/key/value width; None = the block width.
      pre_norm: LayerNorm on the sublayer inputs (pre-LN) rather than after the residual sums.
      cross_attention: add a sublayer attending to `memory` (a decoder block).
      causal: self-attention query i sees keys j <= i only.
      activation: MLP activation (`ACTIVATIONS`).
      mlp_activation_on_output: activation after the MLP's second layer too.
      dropout_rate: dropout on each sublayer's output before the residual sum.
      mlp_dropout_rate: dropout inside the MLP, after the activation.
      attention_dropout_rate: dropout on the attention weights.
      dropout_after_attention: apply `dropout_rate` after the attention sublayers too.
      drop_path_rate: stochastic depth rate of both (all) residual branches.
      layernorm_epsilon: LayerNorm epsilon (computed in float32 whatever the dtype).
      attention_init: query/key/value kernel initializer.
      attention_out_init: output projection kernel initializer; None = attention_init.
      mlp_init, mlp_out_init, mlp_bias_init, mlp_out_bias_init: the MLP's (see `Mlp`).
      train: dropout and stochastic depth on (needs the 'dropout' RNG stream).
      sow_weights: sow every attention's weights into 'intermediates'.
      decode: use the key/value cache of the attention layers (autoregressive decoding).
      return_tokens: output the block's tokens (aux "tokens").
      return_cross_weights: output the cross-attention weights (aux "cross_attention").
      return_weights: output the self-attention weights [B, H, T, T] (aux "attention"), for a
        model that reads them in its own forward pass (TransFG's part selection), where sown
        weights are out of reach unless the caller makes 'intermediates' mutable.
      (and `AttentionModel`'s attention_fn, attention_impl, dtype, param_dtype)
    """

    num_heads: int
    mlp_dim: int
    names: BlockNames
    qkv_features: int | None = None
    pre_norm: bool = True
    cross_attention: bool = False
    causal: bool = False
    activation: str = "gelu"
    mlp_activation_on_output: bool = False
    dropout_rate: float = 0.0
    mlp_dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dropout_after_attention: bool = True
    drop_path_rate: float = 0.0
    layernorm_epsilon: float = 1e-6
    attention_init: Initializer = nn.initializers.xavier_uniform()
    attention_out_init: Initializer | None = None
    mlp_init: Initializer = nn.initializers.xavier_uniform()
    mlp_out_init: Initializer | None = None
    mlp_bias_init: Initializer = nn.initializers.zeros_init()
    mlp_out_bias_init: Initializer | None = None
    train: bool = False
    sow_weights: bool = False
    decode: bool = False
    return_tokens: bool = False
    return_cross_weights: bool = False
    return_weights: bool = False

    def _norm(self, name: str) -> Callable[[jax.Array], jax.Array]:
        norm = nn.LayerNorm(
            epsilon=self.layernorm_epsilon,
            dtype=jnp.float32,
            param_dtype=self.param_dtype,
            name=name,
        )
        return lambda x: norm(x).astype(x.dtype)

    def _residual(self, x, y, norm, rate, *, dropout: bool = True) -> jax.Array:
        if dropout:
            y = Dropout(self.dropout_rate)(y, deterministic=not self.train)
        if self.train and self.drop_path_rate > 0.0:
            y = drop_path(y, rate, self.make_rng("dropout"))
        return x + y if self.pre_norm else norm(x + y)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        memory: jax.Array | None = None,
        mask: jax.Array | None = None,
        memory_mask: jax.Array | None = None,
        query_pos: jax.Array | None = None,
        memory_pos: jax.Array | None = None,
        drop_path_rate: jax.Array | float | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Transforms tokens x [B, T, D]; the arguments are positional so that `nn.scan` can
        broadcast them over the blocks.

        Args:
          x: [B, T, D] tokens.
          memory: [B, S, Dm] what cross-attention attends to.
          mask: bool self-attention mask, broadcastable to [B, H, T, T] (True = may attend).
          memory_mask: bool cross-attention mask, broadcastable to [B, H, T, S].
          query_pos: [B | 1, T, D] added to the query (and self-attention key) inputs.
          memory_pos: [B | 1, S, Dm] added to the cross-attention key input.
          drop_path_rate: overrides the field's rate (a scanned stack's per-layer rate).

        Returns:
          (tokens [B, T, D], aux) with aux "tokens" and "cross_attention" as requested.
        """
        n = self.names
        rate = self.drop_path_rate if drop_path_rate is None else drop_path_rate
        attention = functools.partial(
            MultiHeadAttention,
            num_heads=self.num_heads,
            qkv_features=self.qkv_features,
            out_features=x.shape[-1],
            dropout_rate=self.attention_dropout_rate,
            kernel_init=self.attention_init,
            out_kernel_init=self.attention_out_init,
            sow_weights=self.sow_weights,
            attention_fn=self.attention_fn,
            implementation=self.attention_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        norm = self._norm(n.self_norm)
        h = norm(x) if self.pre_norm else x
        self_attention = attention(name=n.self_attention)
        call = dict(
            mask=mask, train=self.train, decode=self.decode, return_weights=self.return_weights
        )
        if query_pos is None:
            y = self_attention(h, causal=self.causal and not self.decode, **call)
        else:
            assert not self.decode, "positions on q/k are for parallel decoding, not the cache"
            hq = _with_pos(h, query_pos)
            y = self_attention(hq, hq, h, causal=self.causal, **call)
        aux: dict[str, jax.Array] = {}
        if self.return_weights:
            y, aux["attention"] = y
        x = self._residual(x, y, norm, rate, dropout=self.dropout_after_attention)

        if self.cross_attention:
            assert memory is not None, "a cross-attention block needs the memory"
            norm = self._norm(n.cross_norm)
            h = norm(x) if self.pre_norm else x
            y = attention(name=n.cross_attention)(
                _with_pos(h, query_pos),
                _with_pos(memory, memory_pos),
                memory,
                mask=memory_mask,
                train=self.train,
                decode=self.decode,
                return_weights=self.return_cross_weights,
            )
            if self.return_cross_weights:
                y, aux["cross_attention"] = y
            x = self._residual(x, y, norm, rate, dropout=self.dropout_after_attention)

        norm = self._norm(n.mlp_norm)
        h = norm(x) if self.pre_norm else x
        y = Mlp(
            self.mlp_dim,
            activation=self.activation,
            activation_on_output=self.mlp_activation_on_output,
            dropout_rate=self.mlp_dropout_rate,
            kernel_init=self.mlp_init,
            out_kernel_init=self.mlp_out_init,
            bias_init=self.mlp_bias_init,
            out_bias_init=self.mlp_out_bias_init,
            names=(n.fc1, n.fc2),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=n.mlp,
        )(h, train=self.train)
        x = self._residual(x, y, norm, rate)
        if self.return_tokens:
            aux["tokens"] = x
        return x, aux


def _scan_name(name: str) -> str:
    return name.replace("_{i}", "").replace("{i}", "")


def stack_blocks(
    x: jax.Array,
    *,
    depth: int,
    block: Mapping[str, Any],
    name: str,
    scan: bool = False,
    remat: bool = False,
    drop_path_rate: float = 0.0,
    memory: jax.Array | None = None,
    mask: jax.Array | None = None,
    memory_mask: jax.Array | None = None,
    query_pos: jax.Array | None = None,
    memory_pos: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Runs `depth` `TransformerBlock`s in the scope of the calling (compact) module.

    Args:
      x: [B, T, D] tokens.
      depth: number of blocks.
      block: `TransformerBlock` fields shared by every block.
      name: block name with an "{i}" for the index ("encoderblock_{i}"); a scanned stack is one
        submodule named without the index ("encoderblock").
      scan: `nn.scan` over the blocks (parameters, sown weights and caches stacked on a leading
        depth axis; one compiled body).
      remat: rematerialise each block's activations in the backward pass.
      drop_path_rate: stochastic depth of the last block; the rates grow linearly from 0 over the
        blocks (Huang et al. 2016's linear decay rule, as Swin and timm apply it).
      memory, mask, memory_mask, query_pos, memory_pos: passed to every block.

    Returns:
      (tokens [B, T, D], aux) with aux["blockNN"] each block's output tokens when the block
      fields ask for `return_tokens`, and aux["cross_attention"] (a list over the blocks) with
      `return_cross_weights`, aux["attention"] (the same for self-attention) with
      `return_weights`.
    """
    rates = np.linspace(0.0, drop_path_rate, depth) if depth > 1 else np.full(depth, drop_path_rate)
    block_cls = TransformerBlock
    if remat:
        # Under scan the loop body is a separate computation; CSE across it cannot undo remat.
        block_cls = nn.remat(block_cls, prevent_cse=not scan)
    args = (memory, mask, memory_mask, query_pos, memory_pos)
    if scan:
        stack = nn.scan(
            block_cls,
            variable_axes={"params": 0, "intermediates": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * len(args) + (0,),
            length=depth,
            # The stacked depth axis has no logical name: never split by tensor parallelism.
            metadata_params={nn.PARTITION_NAME: None},
        )
        fields = dict(block, drop_path_rate=float(drop_path_rate))
        x, stacked = stack(name=_scan_name(name), **fields)(x, *args, jnp.asarray(rates))
        outs = [jax.tree_util.tree_map(lambda a, i=i: a[i], stacked) for i in range(depth)]
    else:
        outs = []
        for i in range(depth):
            fields = dict(block, drop_path_rate=float(rates[i]))
            x, out = block_cls(name=name.format(i=i), **fields)(x, *args)
            outs.append(out)
    aux: dict[str, Any] = {}
    for i, out in enumerate(outs):
        if "tokens" in out:
            aux[f"block{i:02d}"] = out["tokens"]
    if outs and "cross_attention" in outs[0]:
        aux["cross_attention"] = [out["cross_attention"] for out in outs]
    if outs and "attention" in outs[0]:
        aux["attention"] = [out["attention"] for out in outs]
    return x, aux


class BlockStack(nn.Module):
    """`stack_blocks` as a submodule of its own, with an optional final LayerNorm.

    Attributes:
      depth: number of blocks.
      block: `TransformerBlock` fields shared by every block.
      block_name: block name pattern ("resblocks_{i}").
      scan: `nn.scan` over the blocks.
      remat: rematerialise each block.
      drop_path_rate: stochastic depth of the last block (linear from 0).
      final_norm: name of a LayerNorm applied to the output (pre-LN stacks), or None.
      layernorm_epsilon: its epsilon.
    """

    depth: int
    block: Mapping[str, Any]
    block_name: str = "block_{i}"
    scan: bool = False
    remat: bool = False
    drop_path_rate: float = 0.0
    final_norm: str | None = None
    layernorm_epsilon: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        block_fields: Mapping[str, Any] | None = None,
        **inputs: jax.Array | None,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """(tokens [B, T, D], aux) of `stack_blocks`, then the final norm if any.

        Args:
          x: [B, T, D] tokens.
          train: the blocks' `train`.
          block_fields: further block fields for this call (e.g. `decode`).
          **inputs: `memory`, `mask`, `memory_mask`, `query_pos`, `memory_pos` of
            `stack_blocks`.
        """
        x, aux = stack_blocks(
            x,
            depth=self.depth,
            block=dict(self.block, train=train, **(block_fields or {})),
            name=self.block_name,
            scan=self.scan,
            remat=self.remat,
            drop_path_rate=self.drop_path_rate,
            **inputs,
        )
        if self.final_norm is not None:
            norm = nn.LayerNorm(
                epsilon=self.layernorm_epsilon,
                dtype=jnp.float32,
                param_dtype=self.param_dtype,
                name=self.final_norm,
            )
            x = norm(x).astype(x.dtype)
        return x, aux


__all__ = [
    "ACTIVATIONS",
    "AttentionModel",
    "BlockNames",
    "BlockStack",
    "Mlp",
    "TransformerBlock",
    "activation_fn",
    "check_attention_config",
    "drop_path",
    "quick_gelu",
    "stack_blocks",
    "torch_bias_init",
    "torch_linear_init",
]
