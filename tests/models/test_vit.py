"""ViT (Dosovitskiy et al. 2021): the official testing config's count, eq. 1 patch embedding,
configs (the presets' published counts are in test_param_counts.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.models import ViT, build_model, count_params, patchify, vit_kwargs

TINY = dict(num_classes=5, patch_size=4, hidden_size=16, depth=2, num_heads=2, mlp_dim=32)
IMAGES = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32))


def abstract_params(model: nn.Module, image_size: int):
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), images)["params"]


def test_official_testing_config_count():
    model = ViT(num_classes=1000, patch_size=16, hidden_size=10, depth=1, num_heads=2, mlp_dim=10)
    assert count_params(abstract_params(model, 224)) == 21_390


@pytest.fixture(scope="module")
def tiny_params():
    return jax.jit(ViT(**TINY).init)(jax.random.key(0), IMAGES)["params"]


def test_official_parameter_names(tiny_params):
    p = tiny_params
    assert {"embedding", "cls", "Transformer", "head"} <= set(p)
    assert set(p["Transformer"]) == {
        "posembed_input",
        "encoderblock_0",
        "encoderblock_1",
        "encoder_norm",
    }
    assert set(p["Transformer"]["encoderblock_0"]) == {
        "LayerNorm_0",
        "MultiHeadDotProductAttention_1",
        "LayerNorm_2",
        "MlpBlock_3",
    }
    assert p["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 5, 16)
    assert p["embedding"]["kernel"].shape == (4, 4, 3, 16)
    assert not np.any(p["head"]["kernel"]) and not np.any(p["cls"])


def test_patch_embedding_conv_equals_patches_times_dense():
    # 13 x 9 pixels: the VALID Conv and patchify both drop the incomplete last patch row/column.
    images = jnp.asarray(np.random.default_rng(1).standard_normal((2, 13, 9, 3), np.float32))
    model = ViT(**TINY)

    @jax.jit
    def embed(images):
        params = model.init(jax.random.key(0), images)["params"]
        params["embedding"]["bias"] = jnp.arange(16.0)
        _, state = model.apply(
            {"params": params}, images, capture_intermediates=lambda m, _: m.name == "embedding"
        )
        return params["embedding"], state["intermediates"]["embedding"]["__call__"][0]

    embedding, conv_out = embed(images)  # conv_out: [B, 3, 2, D]
    kernel = embedding["kernel"]
    dense = patchify(images, 4) @ kernel.reshape(-1, kernel.shape[-1]) + embedding["bias"]
    np.testing.assert_allclose(conv_out.reshape(2, 6, 16), dense, atol=1e-5)


@pytest.mark.parametrize(
    "pool,head,tokens,features",
    [
        ("token", "linear", 5, 16),
        ("gap", "linear", 4, 16),
        ("flatten", "linear", 4, 64),
        ("flatten", "textbook_mlp", 4, 12),
    ],
)
def test_output_shapes(pool, head, tokens, features):
    model = ViT(**TINY, pool=pool, head=head, head_hidden=(24, 12), representation_size=None)
    variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
    assert ("cls" in variables["params"]) == (pool == "token")
    logits, aux = jax.eval_shape(model.apply, variables, IMAGES)
    assert logits.shape == (2, 5)
    assert aux["tokens"].shape == (2, tokens, 16)
    assert aux["pre_logits"].shape == (2, features)


def test_representation_layer():
    model = ViT(**TINY, representation_size=7)
    variables = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
    assert variables["params"]["pre_logits"]["kernel"].shape == (16, 7)
    assert jax.eval_shape(model.apply, variables, IMAGES)[1]["pre_logits"].shape == (2, 7)


def test_dropout_only_in_train_and_output_softmax(tiny_params):
    model = ViT(**TINY, dropout_rate=0.3, attention_dropout_rate=0.3, output_softmax=True)
    params = dict(tiny_params)
    # A non-zero head, so that dropout upstream shows in the output.
    head = np.random.default_rng(2).standard_normal(params["head"]["kernel"].shape, np.float32)
    params["head"] = dict(params["head"], kernel=jnp.asarray(head))
    apply = jax.jit(
        lambda p, key, train: model.apply(
            {"params": p}, IMAGES, train=train, rngs={"dropout": key}
        ),
        static_argnums=2,
    )
    train_a, _ = apply(params, jax.random.key(1), True)
    train_b, _ = apply(params, jax.random.key(2), True)
    eval_a, _ = apply(params, jax.random.key(1), False)
    eval_b, _ = apply(params, jax.random.key(2), False)
    assert not np.allclose(train_a, train_b)
    np.testing.assert_array_equal(eval_a, eval_b)
    jax.eval_shape(lambda p: model.apply({"params": p}, IMAGES), params)  # eval needs no rng
    for probs in (train_a, eval_a):
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
        assert bool(jnp.all(probs >= 0))


@pytest.mark.parametrize("scan", [False, True])
def test_attention_weights_are_collectable(tiny_params, scan):
    model = ViT(**TINY, scan=scan)
    params = tiny_params
    if scan:
        params = dict(tiny_params, Transformer=_stack_blocks(tiny_params["Transformer"], 2))
    _, state = jax.eval_shape(
        lambda p: model.apply({"params": p}, IMAGES, sow_weights=True, mutable=["intermediates"]),
        params,
    )
    inter = state["intermediates"]["Transformer"]
    if scan:
        (weights,) = inter["encoderblock"]["MultiHeadDotProductAttention_1"]["attention"]
        assert weights.shape == (2, 2, 2, 5, 5)  # [depth, B, H, T, T]
    else:
        for i in range(2):
            (weights,) = inter[f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"]["attention"]
            assert weights.shape == (2, 2, 5, 5)  # [B, H, T, T]


def _stack_blocks(transformer, depth):
    blocks = [transformer[f"encoderblock_{i}"] for i in range(depth)]
    rest = {k: v for k, v in transformer.items() if not k.startswith("encoderblock_")}
    return dict(rest, encoderblock=jax.tree_util.tree_map(lambda *a: jnp.stack(a), *blocks))


def test_scan_and_remat_equal_the_unrolled_loop(tiny_params):
    params = dict(tiny_params)
    params["head"] = dict(params["head"], kernel=jnp.ones_like(params["head"]["kernel"]))
    loop = ViT(**TINY, return_intermediates=True)
    scanned = ViT(**TINY, return_intermediates=True, scan=True, remat=True)
    scan_params = dict(params, Transformer=_stack_blocks(params["Transformer"], 2))
    assert count_params(scan_params) == count_params(params)

    def loss(model, p):
        logits, aux = model.apply({"params": p}, IMAGES)
        return jnp.sum(logits**2), aux

    (l_loop, aux_loop), g_loop = jax.jit(jax.value_and_grad(lambda p: loss(loop, p), has_aux=True))(
        params
    )
    (l_scan, aux_scan), g_scan = jax.jit(
        jax.value_and_grad(lambda p: loss(scanned, p), has_aux=True)
    )(scan_params)
    np.testing.assert_allclose(l_loop, l_scan, rtol=1e-5)
    assert set(aux_loop) == set(aux_scan) == {"tokens", "pre_logits", "block00", "block01"}
    np.testing.assert_allclose(aux_loop["block01"], aux_scan["block01"], atol=1e-5)
    np.testing.assert_allclose(
        _stack_blocks(g_loop["Transformer"], 2)["encoderblock"]["MlpBlock_3"]["Dense_0"]["kernel"],
        g_scan["Transformer"]["encoderblock"]["MlpBlock_3"]["Dense_0"]["kernel"],
        atol=1e-5,
    )


def test_textbook_preset_structure():
    model = build_model({"name": "vit", "variant": "textbook_cifar10", "num_classes": 10})
    assert (model.pool, model.head, model.class_token) == ("flatten", "textbook_mlp", False)
    assert not model.gelu_approximate and model.mlp_activation_on_output
    assert (model.dropout_rate, model.attention_dropout_rate, model.head_dropout) == (0.1, 0.1, 0.5)
    params = abstract_params(model, 32)
    assert params["head_hidden_0"]["kernel"].shape == (64 * 64, 2048)
    assert params["head_hidden_1"]["kernel"].shape == (2048, 1024)
    mha = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_1"]
    assert mha["query"]["kernel"].shape == (64, 8, 8)  # 8 heads of key_dim 8


def test_vit_kwargs_overrides_and_grammar():
    kw = vit_kwargs("B/16", depth=6, num_heads=None, pool="gap")
    assert (kw["hidden_size"], kw["depth"], kw["num_heads"], kw["pool"]) == (768, 6, 12, "gap")
    assert vit_kwargs("B/8")["patch_size"] == 8
    assert vit_kwargs(None, hidden_size=3, depth=None) == {"hidden_size": 3}
    with pytest.raises(ValueError, match="unknown ViT variant 'X/16'.*B/16"):
        vit_kwargs("X/16")


def test_build_model_reports_config_errors_in_one_line():
    base = {"name": "vit", "variant": "Ti/16", "num_classes": 10}
    with pytest.raises(ValueError, match="unknown field 'hiden_size'.*'hidden_size'") as err:
        build_model(dict(base, hiden_size=64))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown model 'vitt'.*'vit'"):
        build_model(dict(base, name="vitt"))
    with pytest.raises(ValueError, match="missing|misses required field"):
        build_model({"name": "vit", "num_classes": 10, "patch_size": 4})
    with pytest.raises(ValueError, match="pool='avg'"):
        build_model(dict(base, pool="avg"))
    # Lists from a JSON round trip become tuples (hashable module fields).
    model = build_model(
        dict(base, variant="textbook_cifar10", head_hidden=[32, 16], patch_size=[4, 4])
    )
    assert model.head_hidden == (32, 16) and model.patch_size == (4, 4)
    assert build_model(dict(base, depth=None)).depth == 12
