"""Plain CNN and MLP classifiers: shapes, parameter counts against hand-computed values, errors."""

import jax
import jax.numpy as jnp
import pytest

from attn_jax.models import build_model, count_params
from attn_jax.models.cnn import cnn_param_count, mlp_param_count


def _init(model, shape):
    """Parameter and output shapes without compiling or running anything."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    logits, aux = jax.eval_shape(model.apply, {"params": params}, x)
    return params, logits, aux


def test_cnn_shapes_and_hand_computed_param_count():
    # 8x8x1 digits, features (32, 64), 3x3, dense 128, 10 classes:
    # conv0 3*3*1*32+32 = 320; conv1 3*3*32*64+64 = 18,496; after two pools 2x2x64 = 256 ->
    # dense 256*128+128 = 32,896; head 128*10+10 = 1,290; total 53,002.
    model = build_model({"name": "cnn"})
    params, logits, aux = _init(model, (3, 8, 8, 1))
    assert logits.shape == (3, 10)
    assert aux["pre_logits"].shape == (3, 128)
    assert count_params(params) == 320 + 18_496 + 32_896 + 1_290 == 53_002
    assert params["conv1"]["kernel"].shape == (3, 3, 32, 64)


@pytest.mark.parametrize("shape", [(2, 24, 24, 1), (2, 17, 13, 3), (1, 32, 32, 3)])
def test_cnn_any_image_size_matches_formula(shape):
    # Odd sides floor at each pool: 17x13 -> 8x6 -> 4x3.
    model = build_model({"name": "cnn", "features": [8, 16], "dense": 32, "num_classes": 5})
    params, logits, _ = _init(model, shape)
    assert logits.shape == (shape[0], 5)
    assert count_params(params) == cnn_param_count(shape[1:], (8, 16), 3, 32, 5)
    if shape == (2, 17, 13, 3):
        # 3*3*3*8+8 = 224; 3*3*8*16+16 = 1,168; 4*3*16 = 192 -> 192*32+32 = 6,176; 32*5+5 = 165.
        assert count_params(params) == 224 + 1_168 + 6_176 + 165


def test_mlp_shapes_and_hand_computed_param_count():
    # 8x8x1 = 64 inputs: 64*256+256 = 16,640; 256*256+256 = 65,792; 256*10+10 = 2,570.
    model = build_model({"name": "mlp"})
    params, logits, aux = _init(model, (4, 8, 8, 1))
    assert logits.shape == (4, 10)
    assert aux["pre_logits"].shape == (4, 256)
    assert count_params(params) == 16_640 + 65_792 + 2_570 == 85_002
    assert mlp_param_count((8, 8, 1)) == 85_002
    model = build_model({"name": "mlp", "hidden": [16], "num_classes": 3})
    params, logits, _ = _init(model, (2, 5, 7, 2))
    assert logits.shape == (2, 3)
    assert count_params(params) == 70 * 16 + 16 + 16 * 3 + 3


def test_models_differ_per_example_and_are_batch_independent():
    model = build_model({"name": "cnn", "variant": "tiny"})
    x = jax.random.normal(jax.random.key(1), (4, 12, 12, 1))
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    apply = jax.jit(model.apply)
    full, _ = apply({"params": params}, x)
    one, _ = apply({"params": params}, x[2:3])
    assert jnp.allclose(full[2:3], one, atol=1e-5)
    assert not jnp.allclose(full[0], full[1])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"images \[B, H, W, C\]"):
        _init(build_model({"name": "cnn"}), (8, 8))
    with pytest.raises(ValueError, match="pooling stages"):
        _init(build_model({"name": "cnn", "features": [4, 4, 4]}), (1, 6, 6, 1))
    with pytest.raises(ValueError, match="unknown mlp variant"):
        build_model({"name": "mlp", "variant": "huge"})
    with pytest.raises(ValueError, match="unknown field 'hiden'"):
        build_model({"name": "mlp", "hiden": [4]})
