"""The masked-image-modeling task: SimMIM's masked L1 and MAE's masked (norm-pix) MSE count the
masked pixels/patches only, padded examples count for nothing, evaluation is deterministic, and
the reconstruction figure is written."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attn_jax.figures.reconstructions import plot_reconstructions
from attn_jax.models.mim import MAE, SimMIM, patchify
from attn_jax.tasks import TASKS, build_task
from attn_jax.tasks.masked_image import (
    RECONSTRUCTIONS_FILE,
    MaskedImageModeling,
    denormalize_patches,
    mae_loss,
    mae_targets,
    simmim_loss,
)

RNG = np.random.default_rng(0)
IMAGES = jnp.asarray(RNG.standard_normal((2, 8, 8, 3)), jnp.float32)
ENCODER = dict(patch_size=2, hidden_size=16, depth=1, num_heads=2, mlp_dim=32)
KEY = jax.random.key(0)


def random_params(model):
    """Parameters of the right shapes without compiling `init` (any values do here)."""
    abstract = jax.eval_shape(lambda k: model.init(k, IMAGES[:, :, :, :1]), KEY)["params"]
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), abstract
    )


# -- SimMIM's loss --------------------------------------------------------------------------------
def test_simmim_loss_counts_masked_pixels_only():
    mask = jnp.zeros((2, 8, 8, 1)).at[:, :4, :4].set(1.0)  # the top-left quadrant is masked
    rec = jnp.asarray(RNG.standard_normal(IMAGES.shape), jnp.float32)
    loss = simmim_loss(IMAGES, rec, mask)
    expected = np.abs(np.asarray(IMAGES - rec))[:, :4, :4].sum() / (2 * 16 + 1e-5) / 3
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(simmim_loss(IMAGES, rec.at[:, 6, 6].add(9.0), mask), loss, rtol=1e-6)
    assert abs(float(simmim_loss(IMAGES, rec.at[:, 1, 1].add(9.0), mask)) - float(loss)) > 1e-2
    assert float(simmim_loss(IMAGES, rec, jnp.zeros_like(mask))) == 0.0


# -- MAE's loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_counts_removed_patches_only(norm_pix):
    pred = jnp.asarray(RNG.standard_normal((2, 16, 12)), jnp.float32)
    mask = jnp.zeros((2, 16)).at[:, :5].set(1.0)
    loss = mae_loss(IMAGES, pred, mask, 2, norm_pix)
    np.testing.assert_allclose(mae_loss(IMAGES, pred.at[:, 9].add(4.0), mask, 2, norm_pix), loss)
    assert abs(float(mae_loss(IMAGES, pred.at[:, 2].add(4.0), mask, 2, norm_pix)) - loss) > 1e-2
    # Every patch removed: the loss is the full-image patch MSE.
    target = mae_targets(IMAGES, 2, norm_pix)
    full = mae_loss(IMAGES, pred, jnp.ones((2, 16)), 2, norm_pix)
    np.testing.assert_allclose(
        full, np.mean((np.asarray(pred) - np.asarray(target)) ** 2), rtol=1e-5
    )


def test_norm_pix_targets_use_the_unbiased_patch_variance_and_invert_for_display():
    patches = np.asarray(patchify(IMAGES, 2), np.float64)  # [2, 16, 12]
    mean = patches.mean(-1, keepdims=True)
    var = patches.var(-1, ddof=1, keepdims=True)  # torch.var's default
    target = np.asarray(mae_targets(IMAGES, 2, norm_pix_loss=True))
    np.testing.assert_allclose(target, (patches - mean) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(target.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(target.var(-1, ddof=1), 1.0, atol=1e-4)
    restored = denormalize_patches(jnp.asarray(target), IMAGES, 2)
    np.testing.assert_allclose(restored, patches, atol=1e-5)


# -- the task with the models ---------------------------------------------------------------------
SIMMIM = SimMIM(encoder=ENCODER, mask_patch_size=4, mask_ratio=0.6)
MAE_TINY = MAE(
    encoder=ENCODER,
    mask_ratio=0.75,
    decoder_hidden_size=16,
    decoder_depth=1,
    decoder_num_heads=2,
    decoder_mlp_dim=32,
)
GRAY = IMAGES[:, :, :, :1]


@pytest.fixture(scope="module")
def simmim_params():
    return random_params(SIMMIM)


@pytest.fixture(scope="module")
def mae_params():
    return random_params(MAE_TINY)


def test_simmim_task_loss_is_zero_without_masked_pixels(simmim_params):
    task = MaskedImageModeling(10, method="simmim")
    batch = {"image": GRAY, "mask": jnp.ones(2, bool)}
    unmasked = SimMIM(encoder=ENCODER, mask_patch_size=4, mask_ratio=0.0)
    loss, metrics = task.loss(unmasked, simmim_params, batch, KEY, train=False)
    assert float(loss) == 0.0 and float(metrics["loss"]) == 0.0
    loss, _ = task.loss(SIMMIM, simmim_params, batch, KEY, train=False)
    assert float(loss) > 0.1


def test_padded_examples_do_not_count(mae_params):
    task = MaskedImageModeling(10, method="mae")
    batch = {"image": GRAY, "mask": jnp.asarray([True, False])}
    loss, _ = task.loss(MAE_TINY, mae_params, batch, KEY, train=False)
    other = dict(batch, image=GRAY.at[1].set(7.0))
    np.testing.assert_allclose(task.loss(MAE_TINY, mae_params, other, KEY, train=False)[0], loss)


def test_eval_loss_is_deterministic_and_uses_the_fixed_eval_mask(mae_params):
    task = MaskedImageModeling(10, method="mae", norm_pix_loss=False, eval_mask_seed=4)
    batch = {"image": GRAY, "mask": jnp.ones(2, bool)}
    sums = task.eval_sums(MAE_TINY, mae_params, batch)
    again = task.eval_sums(MAE_TINY, mae_params, batch)
    assert float(sums["loss"]) == float(again["loss"]) and float(sums["count"]) == 24.0
    pred, aux = MAE_TINY.apply({"params": mae_params}, GRAY, rngs={"mask": jax.random.key(4)})
    expected = mae_loss(GRAY, pred, aux["mask"], 2, norm_pix_loss=False)
    np.testing.assert_allclose(task.finalize(sums)["loss"], expected, rtol=1e-5)


def test_method_and_model_must_agree_and_bad_methods_fail_in_one_line(simmim_params):
    batch = {"image": GRAY, "mask": jnp.ones(2, bool)}
    with pytest.raises(ValueError, match="needs model 'mae', got SimMIM") as err:
        MaskedImageModeling(10, method="mae").loss(SIMMIM, simmim_params, batch, KEY)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not one of"):
        build_task({"name": "masked_image", "method": "beit"}, num_classes=10)
    assert TASKS["masked_image"] is MaskedImageModeling
    task = build_task({"name": "masked_image", "method": "mae"}, num_classes=10)
    assert task.method == "mae" and task.norm_pix_loss


def test_reconstruction_figure_pastes_the_visible_input(mae_params, tmp_path):
    task = MaskedImageModeling(10, method="mae")
    arrays = task.reconstruct(MAE_TINY, mae_params, np.asarray(GRAY))
    visible = np.broadcast_to(arrays["pixel_mask"] == 0, GRAY.shape)
    assert visible.mean() == 0.25  # 4 of 16 patches kept
    np.testing.assert_array_equal(arrays["pasted"][visible], np.asarray(GRAY)[visible])
    assert not np.allclose(arrays["pasted"][~visible], np.asarray(GRAY)[~visible])
    path = plot_reconstructions(arrays, tmp_path / RECONSTRUCTIONS_FILE)
    assert path.stat().st_size > 3_000
