"""Attention mechanisms as pure functions and small Linen modules; nothing here knows training."""

from attn_jax.attention.aaconv import AttentionAugmentedConv, rel_to_abs, relative_logits_2d
from attn_jax.attention.additive import (
    AdditiveAttention,
    additive_attention,
    additive_scores,
    qkv_attention,
)
from attn_jax.attention.channel import SqueezeExcitation, excite, squeeze
from attn_jax.attention.dot_product import (
    IMPLEMENTATIONS,
    AttentionConfigError,
    choose_implementation,
    dot_product_attention_weights,
    scaled_dot_product_attention,
)
from attn_jax.attention.feature_selection import (
    FeatureGate,
    straight_through_top_k,
    top_k_mask,
)
from attn_jax.attention.glimpse import glimpse_boxes, glimpse_sensor, patch_sides
from attn_jax.attention.masks import (
    causal_mask,
    combine_masks,
    large_negative,
    mask_to_bias,
    masked_softmax,
    padding_mask,
)
from attn_jax.attention.multi_head import MultiHeadAttention
from attn_jax.attention.non_local import NON_LOCAL_MODES, NonLocalBlock, non_local_weights
from attn_jax.attention.positional import sinusoidal_position_encoding
from attn_jax.attention.registry import attention_names, get_attention, register_attention
from attn_jax.attention.saliency import (
    gaussian_pyramid,
    itti_koch_saliency,
    itti_koch_saliency_jit,
    normalize_map,
)
from attn_jax.attention.spatial_transformer import (
    affine_grid,
    affine_pixel_coords,
    bilinear_sample,
    spatial_transform,
)
from attn_jax.attention.windows import (
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_merge,
    window_partition,
)

__all__ = [
    "IMPLEMENTATIONS",
    "AttentionConfigError",
    "attention_names",
    "choose_implementation",
    "get_attention",
    "register_attention",
    "WindowAttention",
    "relative_position_index",
    "shifted_window_mask",
    "window_merge",
    "window_partition",
    "affine_grid",
    "affine_pixel_coords",
    "bilinear_sample",
    "spatial_transform",
    "FeatureGate",
    "straight_through_top_k",
    "top_k_mask",
    "gaussian_pyramid",
    "itti_koch_saliency",
    "itti_koch_saliency_jit",
    "normalize_map",
    "AttentionAugmentedConv",
    "rel_to_abs",
    "relative_logits_2d",
    "SqueezeExcitation",
    "excite",
    "squeeze",
    "NON_LOCAL_MODES",
    "NonLocalBlock",
    "non_local_weights",
    "glimpse_boxes",
    "glimpse_sensor",
    "patch_sides",
    "AdditiveAttention",
    "additive_attention",
    "additive_scores",
    "masked_softmax",
    "qkv_attention",
    "MultiHeadAttention",
    "causal_mask",
    "combine_masks",
    "dot_product_attention_weights",
    "large_negative",
    "mask_to_bias",
    "padding_mask",
    "scaled_dot_product_attention",
    "sinusoidal_position_encoding",
]
