"""TransFG (He et al. 2022): overlapping patches, the part selection module and the last layer on
[class; parts]; the paper's ViT-B_16 parameter count, computed independently."""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.attention.rollout import transfg_part_selection
from attn_jax.figures.examples import draw_examples
from attn_jax.models import build_model, count_params
from attn_jax.models.transfg import TransFG, overlapping_grid

# "tiny": P = 4, S = 2, D = 32, L = 3, 4 heads; 12x12 images give a 5x5 grid of patches.
IMAGES = jax.random.normal(jax.random.key(3), (2, 12, 12, 1))
GRID = 5


@pytest.fixture(scope="module")
def tiny():
    model = build_model({"name": "transfg", "variant": "tiny", "num_classes": 7})
    params = jax.jit(model.init)(jax.random.key(0), IMAGES)["params"]
    return model, params


@pytest.fixture(scope="module")
def sown(tiny):
    """(logits, aux, intermediates) of the tiny model with every attention's weights sown."""
    model, params = tiny
    apply = functools.partial(model.clone(sow_weights=True).apply, mutable=["intermediates"])
    (logits, aux), state = jax.jit(apply)({"params": params}, IMAGES)
    return logits, aux, state["intermediates"]["Transformer"]


def test_shapes_and_selected_tokens_are_patches(tiny, sown):
    model, params = tiny
    logits, aux, _ = sown
    assert logits.shape == (2, 7)
    assert aux["parts"].shape == (2, model.num_heads) and aux["parts"].dtype == jnp.int32
    parts = np.asarray(aux["parts"])
    assert parts.min() >= 1 and parts.max() <= GRID * GRID  # never the class token (0)
    assert aux["pre_logits"].shape == (2, 32)
    np.testing.assert_array_equal(aux["pre_logits"], aux["tokens"][:, 0])
    # N = ((H - P) // S + 1)^2 overlapping patches, plus the class token.
    assert overlapping_grid((12, 12), 4, 2) == (GRID, GRID)
    assert overlapping_grid((448, 448), 16, 12) == (37, 37)
    assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 26, 32)


def test_last_layer_sees_the_class_token_and_one_token_per_head(sown):
    _, _, encoder = sown
    (weights,) = encoder["part_layer"]["MultiHeadDotProductAttention_1"]["attention"]
    assert weights.shape == (2, 4, 1 + 4, 1 + 4)
    (first,) = encoder["encoderblock_0"]["MultiHeadDotProductAttention_1"]["attention"]
    assert first.shape == (2, 4, 1 + GRID * GRID, 1 + GRID * GRID)


def test_parts_are_the_selection_from_the_first_layers_weights(sown):
    _, aux, encoder = sown
    layers = [
        encoder[f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"]["attention"][0]
        for i in range(2)
    ]
    # The last layer's weights are not part of the product: any stand-in gives the same parts.
    stand_in = jnp.zeros_like(layers[0])
    np.testing.assert_array_equal(
        aux["parts"], transfg_part_selection(jnp.stack([*layers, stand_in]))
    )
    # By hand: head h's token is the argmax of the class row of A_1 A_0 over the patches.
    product = np.einsum("bhij,bhjk->bhik", np.asarray(layers[1]), np.asarray(layers[0]))
    np.testing.assert_array_equal(aux["parts"], product[:, :, 0, 1:].argmax(-1) + 1)


def test_uniform_attention_selects_the_first_patch(tiny):
    model, params = tiny
    # Zero queries make every score equal: each attention row is uniform, and so is the class
    # token's row of their product, whose argmax is then the first patch (token 1).
    flat = flax.traverse_util.flatten_dict(params)
    flat = {
        k: jnp.zeros_like(v) if "query" in k and k[1].startswith("encoderblock") else v
        for k, v in flat.items()
    }
    _, aux = jax.jit(model.apply)({"params": flax.traverse_util.unflatten_dict(flat)}, IMAGES)
    np.testing.assert_array_equal(aux["parts"], np.ones((2, 4), np.int32))


def test_vit_b16_parameter_count_with_overlapping_patches():
    # ViT-B/16 counted from its parts (FAITHFULNESS 17: 12 d^2 + 13 d per block), on the
    # 37 x 37 grid of 448 px inputs with slide step 12; 200 classes (CUB-200-2011). TransFG's
    # part_norm replaces ViT's encoder_norm, so only the position embedding grows.
    d, layers, classes, patch = 768, 12, 200, 16
    tokens = 1 + ((448 - patch) // 12 + 1) ** 2
    expected = (
        patch * patch * 3 * d + d  # patch embedding
        + d  # class token
        + tokens * d  # position embedding
        + layers * (12 * d * d + 13 * d)  # blocks, the part layer included
        + 2 * d  # part_norm
        + d * classes + classes  # head
    )  # fmt: skip
    model = build_model({"name": "transfg", "variant": "B_16", "num_classes": classes})
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 448, 448, 3), float)
    )
    assert count_params(shapes["params"]) == expected == 86_853_320


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(depth=1), "depth=1"),
        (dict(slide_step=5), "slide_step=5"),
        (dict(num_heads=3), "divisible"),
    ],
)
def test_bad_fields_are_named_at_construction(fields, message):
    base = dict(num_classes=3, patch_size=4, hidden_size=32, depth=3, num_heads=4, mlp_dim=8)
    with pytest.raises(ValueError, match=message):
        TransFG(**{**base, **fields})


def test_figure_draws_the_selected_parts(tiny, tmp_path):
    model, params = tiny
    batch = {
        "image": np.asarray(IMAGES),
        "label": np.array([1, 2]),
        "mask": np.array([True, False]),  # the padding example is not drawn
    }
    data = model.figure_data(params, batch)["transfg_parts"]
    assert data["images"].shape[0] == 1 and data["parts"].shape == (1, 4)
    assert data["grid_hw"] == (GRID, GRID) and data["stride_hw"] == (2, 2)
    (path,) = draw_examples({"transfg_parts": data}, tmp_path)
    assert path.name == "transfg_parts.png" and path.stat().st_size > 1000
