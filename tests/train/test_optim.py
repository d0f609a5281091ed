"""Optimizer factory: schedules, clipping, and weight decay that spares biases and norms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attn_jax.config import ConfigError
from attn_jax.train.optim import make_optimizer

PARAMS = {
    "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))},
    "norm": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
}


def _one_step(cfg, grads_value=0.0, steps=1):
    tx, _ = make_optimizer(cfg, total_steps=100)
    state = tx.init(PARAMS)
    params = PARAMS
    for _ in range(steps):
        grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, grads_value), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_only_on_kernels(name):
    cfg = {"name": name, "lr": 0.1, "weight_decay": 0.5, "schedule": "constant", "momentum": 0.9}
    out = _one_step(cfg)
    assert float(out["dense"]["kernel"][0, 0]) < 1.0  # decayed toward 0
    for leaf in (out["dense"]["bias"], out["norm"]["scale"], out["norm"]["bias"]):
        np.testing.assert_array_equal(leaf, 1.0)


def test_warmup_then_cosine():
    _, sched = make_optimizer(
        {"name": "adamw", "lr": 1.0, "warmup_steps": 10, "schedule": "cosine"}, total_steps=110
    )
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(60)) == pytest.approx(0.5, abs=1e-6)  # half way through the cosine
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-6)


def test_linear_decay_to_end_factor():
    _, sched = make_optimizer(
        {"name": "sgd", "lr": 2.0, "schedule": "linear", "end_lr_factor": 0.5}, total_steps=100
    )
    assert float(sched(0)) == pytest.approx(2.0) and float(sched(100)) == pytest.approx(1.0)


def test_gradient_clipping_bounds_the_update():
    cfg = {"name": "sgd", "lr": 1.0, "schedule": "constant", "momentum": 0.0, "grad_clip_norm": 1.0}
    out = _one_step(cfg, grads_value=100.0)
    delta = jax.tree_util.tree_map(lambda a, b: a - b, PARAMS, out)
    assert float(optax.tree.norm(delta)) == pytest.approx(1.0, rel=1e-5)


def test_the_retired_accumulation_key_names_microbatches():
    # Accumulation is config.microbatches (tests/train/test_loop.py); an old config.json's 1 loads.
    cfg = {"name": "sgd", "lr": 1.0, "schedule": "constant", "momentum": 0.0, "grad_accum_steps": 2}
    with pytest.raises(ConfigError, match="grad_accum_steps is retired; set --config.microbatches"):
        make_optimizer(cfg, 10)
    make_optimizer({**cfg, "grad_accum_steps": 1}, 10)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optim.name 'adamm'"):
        make_optimizer({"name": "adamm", "lr": 1.0}, 10)


def test_noam_schedule_is_the_papers_eq_3():
    from attn_jax.train.optim import learning_rate_schedule

    cfg = {"lr": 1.0, "schedule": "noam", "d_model": 512, "warmup_steps": 4000}
    schedule = learning_rate_schedule(cfg, 100_000)
    for n in (1, 100, 3999, 4000, 4001, 50_000):
        expected = 512**-0.5 * min(n**-0.5, n * 4000**-1.5)
        assert abs(float(schedule(n - 1)) - expected) < 1e-9
    peak = float(schedule(3999))
    assert abs(peak - 512**-0.5 * 4000**-0.5) < 1e-9  # the maximum, at n = warmup
    assert float(schedule(3998)) < peak and float(schedule(4000)) < peak


# -- learning-rate multipliers and freezing (DETR's backbone recipe) -----------------------------
TREE = {
    "backbone": {
        "stem_conv": {"kernel": jnp.ones((3, 4))},
        "stage1_block0": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))},
        "stage2_block0": {"kernel": jnp.ones((4, 4))},
    },
    "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones((2,))},
}
FREEZE = {"backbone": 0.1, "backbone/stem": 0.0, "backbone/stage1": 0.0}
ADAMW = {"name": "adamw", "lr": 0.1, "weight_decay": 0.5, "schedule": "constant"}


def _step(cfg, grads=None):
    tx, _ = make_optimizer(cfg, total_steps=10)
    state = tx.init(TREE)
    grads = grads or jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), TREE)
    updates, state = tx.update(grads, state, TREE)
    return updates, state


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
    updates, state = _step(dict(ADAMW, lr_multipliers=FREEZE))
    frozen = [updates["backbone"]["stem_conv"], updates["backbone"]["stage1_block0"]]
    for leaf in jax.tree_util.tree_leaves(frozen):
        np.testing.assert_array_equal(leaf, 0.0)
    assert float(jnp.abs(updates["backbone"]["stage2_block0"]["kernel"]).min()) > 0
    # Adam keeps mu and nu for the 16 + 10 trainable scalars only (plus scalar step counts).
    state_size = sum(x.size for x in jax.tree_util.tree_leaves(state) if x.ndim > 0)
    assert state_size == 2 * (16 + 10)


def test_a_multiplier_scales_the_whole_adamw_update():
    base, _ = _step(ADAMW)
    scaled, _ = _step(dict(ADAMW, lr_multipliers=FREEZE))
    # The longest prefix wins: stage 2 is under "backbone" only, so its update (Adam step and
    # decoupled weight decay alike) is a tenth; the head keeps factor 1.
    np.testing.assert_allclose(
        scaled["backbone"]["stage2_block0"]["kernel"],
        0.1 * base["backbone"]["stage2_block0"]["kernel"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(scaled["head"]["kernel"], base["head"]["kernel"], rtol=1e-6)


def test_frozen_gradients_take_no_share_of_the_clipped_norm():
    cfg = dict(ADAMW, name="sgd", momentum=0.0, weight_decay=0.0, grad_clip_norm=1.0)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), TREE)
    huge = dict(
        grads, backbone=dict(grads["backbone"], stem_conv={"kernel": jnp.full((3, 4), 1e3)})
    )
    clipped, _ = _step(dict(cfg, lr_multipliers={"backbone/stem": 0.0}), huge)
    plain, _ = _step(dict(cfg, lr_multipliers={"backbone/stem": 0.0}), grads)
    # The 46 trainable gradients have norm 0.68 < 1: unclipped, whatever the frozen one holds.
    np.testing.assert_allclose(clipped["head"]["bias"], plain["head"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(clipped["head"]["bias"], -0.1 * 0.1, rtol=1e-6)


def test_unknown_pattern_is_a_one_line_error_naming_it():
    from attn_jax.config import ConfigError

    tx, _ = make_optimizer(dict(ADAMW, lr_multipliers={"backbone/stemm": 0.0}), 10)
    with pytest.raises(ConfigError, match="'backbone/stemm' matches no parameter") as err:
        tx.init(TREE)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="number >= 0"):
        make_optimizer(dict(ADAMW, lr_multipliers={"head": -1.0}), 10)


def test_trainable_count_and_weight_decay_on_all_parameters():
    from attn_jax.train.optim import trainable_param_count

    assert trainable_param_count({"lr_multipliers": FREEZE}, TREE) == 16 + 10
    assert trainable_param_count({}, TREE) == 12 + 16 + 4 + 16 + 10
    # With zero gradients only the decay moves parameters: "all" reaches the biases too.
    zeros = jax.tree_util.tree_map(jnp.zeros_like, TREE)
    kernels_only, _ = _step(ADAMW, zeros)
    everything, _ = _step(dict(ADAMW, weight_decay_mask="all"), zeros)
    np.testing.assert_array_equal(kernels_only["head"]["bias"], 0.0)
    np.testing.assert_allclose(everything["head"]["bias"], -0.1 * 0.5, rtol=1e-6)


def test_step_schedule_drops_the_rate_once():
    _, sched = make_optimizer(
        {"name": "adamw", "lr": 1e-4, "schedule": "step", "lr_drop_fraction": 2 / 3}, 300
    )
    assert float(sched(0)) == pytest.approx(1e-4) and float(sched(199)) == pytest.approx(1e-4)
    assert float(sched(200)) == pytest.approx(1e-5) and float(sched(299)) == pytest.approx(1e-5)


# -- layer-wise learning-rate decay (BEiT / MAE fine-tuning) ------------------------------------
def _vit_shapes(scan: bool, depth: int = 3):
    from attn_jax.models import build_model

    model = build_model(
        {
            "name": "vit",
            "patch_size": 2,
            "hidden_size": 8,
            "depth": depth,
            "num_heads": 2,
            "mlp_dim": 16,
            "num_classes": 10,
            "representation_size": 4,
            "scan": scan,
        }
    )
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]


def _flat(tree):
    from attn_jax.train.optim import param_path

    return {param_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _expected_layer(name: str, depth: int) -> int:
    """BEiT's layer id i written out by hand: 0 below the blocks, l + 1 in block l, L + 1 above."""
    if name.startswith(("embedding/", "cls", "Transformer/posembed_input/")):
        return 0
    if name.startswith("Transformer/encoderblock_"):
        return int(name.split("/")[1].removeprefix("encoderblock_")) + 1
    assert name.startswith(("Transformer/encoder_norm/", "pre_logits/", "head/")), name
    return depth + 1


@pytest.mark.parametrize("scan", [False, True])
def test_layer_decay_factors_follow_beits_formula(scan):
    from attn_jax.train.optim import layer_decay_factors

    decay, depth = 0.5, 3
    factors = _flat(layer_decay_factors(_vit_shapes(scan, depth), decay))
    assert len(factors) == 10 + 16 * (1 if scan else depth)  # 16 leaves per block
    shapes = _flat(_vit_shapes(scan, depth))
    for name, factor in factors.items():
        if scan and name.startswith("Transformer/encoderblock/"):
            leaf_rank = len(shapes[name].shape)
            assert np.shape(factor) == (depth,) + (1,) * (leaf_rank - 1)
            np.testing.assert_allclose(np.ravel(factor), [0.5**3, 0.5**2, 0.5**1])
        else:
            assert factor == pytest.approx(decay ** (depth + 1 - _expected_layer(name, depth)))
    assert factors["embedding/kernel"] == pytest.approx(0.5**4)
    assert factors["head/kernel"] == 1.0


def test_one_adamw_step_with_layer_decay_scales_each_leaf_by_hand():
    # A ViT's naming with one leaf or two per layer: kernels (decayed) and biases/scales (not).
    depth, decay = 2, 0.6
    block = {"MlpBlock_3": {"Dense_0": {"kernel": (8, 16), "bias": (16,)}}}
    shapes = {
        "embedding": {"kernel": (2, 2, 1, 8)},
        "cls": (1, 1, 8),
        "Transformer": {
            "posembed_input": {"pos_embedding": (1, 17, 8)},
            "encoderblock_0": block,
            "encoderblock_1": block,
            "encoder_norm": {"scale": (8,)},
        },
        "head": {"kernel": (8, 10), "bias": (10,)},
    }
    rng = np.random.default_rng(0)
    is_shape = lambda x: isinstance(x, tuple)
    draw = lambda s: jnp.asarray(rng.standard_normal(s), jnp.float32)
    params = jax.tree_util.tree_map(draw, shapes, is_leaf=is_shape)
    grads = jax.tree_util.tree_map(draw, shapes, is_leaf=is_shape)
    cfg = {"name": "adamw", "lr": 0.1, "weight_decay": 0.5, "schedule": "constant"}

    def update(c):
        tx, _ = make_optimizer(c, total_steps=10)
        return _flat(jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params))

    base = update(cfg)
    decayed = update(dict(cfg, layer_decay=decay))
    # Composed with a multiplier: the factors multiply, and 0 still freezes.
    both = update(dict(cfg, layer_decay=decay, lr_multipliers={"head": 0.5, "cls": 0.0}))
    for name, u in base.items():
        factor = decay ** (depth + 1 - _expected_layer(name, depth))
        np.testing.assert_allclose(decayed[name], factor * u, rtol=1e-5, atol=1e-7)
        mult = 0.5 if name.startswith("head") else 0.0 if name == "cls" else 1.0
        np.testing.assert_allclose(both[name], mult * factor * u, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(base["embedding/kernel"]).min()) > 0  # the comparison is not 0 == 0


def test_layer_decay_needs_encoder_blocks_and_a_valid_value():
    from attn_jax.config import ConfigError

    tx, _ = make_optimizer(dict(ADAMW, layer_decay=0.75), 10)
    with pytest.raises(ConfigError, match="optim.layer_decay needs a ViT-style encoder") as err:
        tx.init(TREE)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"optim.layer_decay = 1.5: .*in \(0, 1\]"):
        make_optimizer(dict(ADAMW, layer_decay=1.5), 10)


def test_layer_decay_reads_the_layer_ids_that_a_swin_declares():
    # A second family: Swin numbers its blocks across the stages, a patch merging takes the id
    # of the block before it, and the optimizer asks the model instead of reading ViT's names.
    from attn_jax.config import ConfigError
    from attn_jax.models import build_model
    from attn_jax.train.optim import layer_decay_factors

    model = build_model(
        dict(
            name="swin",
            num_classes=10,
            patch_size=2,
            embed_dim=8,
            depths=(2, 1),
            num_heads=(1, 2),
            window=2,
        )
    )
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    factors = _flat(layer_decay_factors(shapes, 0.5, model.layer_index))
    expected_ids = {  # L = 3 blocks: id i gets 0.5 ** (4 - i)
        "patch_embed/kernel": 0,
        "patch_norm/scale": 0,
        "stage1_block0/attn/qkv/kernel": 1,
        "stage1_block1/mlp/fc2/bias": 2,
        "merge2/reduction/kernel": 2,
        "stage2_block0/attn/relative_position_bias_table": 3,
        "norm/scale": 4,
        "head/kernel": 4,
    }
    for name, layer in expected_ids.items():
        assert factors[name] == pytest.approx(0.5 ** (4 - layer)), name
    params = jax.tree_util.tree_map(lambda s: jnp.ones(s.shape, s.dtype), shapes)
    grads = jax.tree_util.tree_map(lambda p: 0.1 * p, params)
    cfg = {"name": "sgd", "lr": 1.0, "momentum": 0.0, "schedule": "constant", "layer_decay": 0.5}
    tx, _ = make_optimizer(cfg, 10, model=model)
    updates = _flat(jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params))
    np.testing.assert_allclose(updates["patch_embed/kernel"], -0.1 * 0.5**4, rtol=1e-6)
    np.testing.assert_allclose(updates["stage2_block0/mlp/fc1/kernel"], -0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["head/bias"], -0.1, rtol=1e-6)
    # Without the model the optimizer would look for ViT's block names, which a Swin has not.
    tx, _ = make_optimizer(cfg, 10)
    with pytest.raises(ConfigError, match="ViT-style encoder"):
        tx.init(params)


# -- weight decay by parameter kind (DeiT / Swin / MAE official no-decay lists) -----------------
def _decayed(cfg: dict, image: tuple[int, ...], *extra, rngs=None) -> set[str]:
    """The paths that `weight_decay_mask` decays in a model built from `cfg` (shapes only)."""
    from attn_jax.models import build_model
    from attn_jax.train.optim import weight_decay_mask

    model = build_model(cfg)
    keys = {"params": jax.random.key(0), **(rngs or {})}
    shapes = jax.eval_shape(model.init, keys, jnp.zeros(image), *extra)["params"]
    return {name for name, on in _flat(weight_decay_mask(shapes)).items() if on}


VIT_TINY = dict(name="vit", patch_size=4, hidden_size=8, num_heads=2, mlp_dim=16, num_classes=3)


@pytest.mark.parametrize("scan", [False, True])
def test_vit_decays_exactly_its_kernels(scan):
    block = "Transformer/encoderblock" + ("" if scan else "_0")
    expected = {
        "embedding/kernel",
        f"{block}/MlpBlock_3/Dense_0/kernel",
        f"{block}/MlpBlock_3/Dense_1/kernel",
        *(f"{block}/MultiHeadDotProductAttention_1/{p}/kernel" for p in ("query", "key", "value")),
        f"{block}/MultiHeadDotProductAttention_1/out/kernel",
        "head/kernel",
    }
    # Scanned, every bias and norm scale is [depth, D]: rank alone would decay them.
    assert _decayed(dict(VIT_TINY, depth=1 + scan, scan=scan), (1, 8, 8, 3)) == expected


def test_swin_decays_exactly_its_kernels():
    cfg = dict(
        name="swin", num_classes=3, patch_size=2, embed_dim=8, depths=(1, 1), num_heads=(1, 2),
        window=2,
    )  # fmt: skip
    expected = {"patch_embed/kernel", "merge2/reduction/kernel", "head/kernel"}
    for block in ("stage1_block0", "stage2_block0"):
        expected |= {f"{block}/{m}/kernel" for m in ("attn/qkv", "attn/proj", "mlp/fc1", "mlp/fc2")}
    # The relative-position tables ([(2M-1)^2, H]) and the fused qkv bias ([3, H, Dh]) stay out.
    assert _decayed(cfg, (1, 8, 8, 3)) == expected


@pytest.mark.parametrize("family", ["clip", "mae", "simmim", "detr"])
def test_other_families_decay_only_kernels_and_embedding_tables(family):
    encoder = dict(patch_size=2, hidden_size=8, depth=1, num_heads=2, mlp_dim=16)
    masks = {"mask": jax.random.key(1)}
    cases = {
        "clip": (
            dict(
                name="clip",
                embed_dim=8,
                patch_size=4,
                vision_width=8,
                vision_layers=1,
                vision_heads=2,
                vocab_size=16,
                context_length=4,
                text_width=8,
                text_layers=1,
                text_heads=2,
            ),  # fmt: skip
            (1, 8, 8, 3),
            (jnp.zeros((1, 4), jnp.int32),),
            None,
        ),
        "mae": (
            dict(
                name="mae",
                encoder=encoder,
                decoder_hidden_size=8,
                decoder_depth=1,
                decoder_num_heads=2,
                decoder_mlp_dim=16,
            ),  # fmt: skip
            (1, 8, 8, 1),
            (),
            masks,
        ),
        "simmim": (
            dict(name="simmim", encoder=encoder, mask_patch_size=4),
            (1, 8, 8, 1),
            (),
            masks,
        ),
        "detr": (
            dict(
                name="detr",
                num_classes=3,
                num_queries=2,
                d_model=8,
                num_heads=2,
                d_ff=8,
                num_encoder_layers=1,
                num_decoder_layers=1,
                backbone="resnet18",
                backbone_stage_sizes=(1,),
                backbone_width=8,
                backbone_stem="small",
                backbone_norm="group",
                backbone_norm_groups=4,
            ),  # fmt: skip
            (1, 8, 8, 3),
            (),
            None,
        ),
    }
    cfg, image, extra, rngs = cases[family]
    decayed = _decayed(cfg, image, *extra, rngs=rngs)
    leaf_names = {name.rsplit("/", 1)[-1] for name in decayed}
    assert leaf_names <= {"kernel", "embedding"}, leaf_names
    assert any(name.endswith("kernel") for name in decayed)
    if family == "clip":
        assert "text/token_embedding/embedding" in decayed


def test_rank2_mask_keeps_the_old_rule_and_unknown_masks_are_named():
    from attn_jax.train.optim import rank_decay_mask

    tree = {
        "qkv": {"bias": jnp.ones((3, 2, 4)), "kernel": jnp.ones((4, 3, 2, 4))},
        "v": jnp.ones(4),
    }
    assert _flat(rank_decay_mask(tree)) == {"qkv/bias": True, "qkv/kernel": True, "v": False}
    zeros = jax.tree_util.tree_map(jnp.zeros_like, tree)
    for mask, bias_moves in (("kernels", False), ("rank2", True)):
        tx, _ = make_optimizer(dict(ADAMW, weight_decay_mask=mask), 10)
        updates, _ = tx.update(zeros, tx.init(tree), tree)
        assert bool(jnp.any(updates["qkv"]["bias"] != 0)) == bias_moves, mask
        assert bool(jnp.all(updates["qkv"]["kernel"] != 0)), mask
    with pytest.raises(ValueError, match="weight_decay_mask 'norms'"):
        make_optimizer(dict(ADAMW, weight_decay_mask="norms"), 10)
