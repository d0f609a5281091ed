"""The DeiT/Swin ImageNet augmentations against their definitions: RandAugment's ops at fixed
magnitudes equal PIL's reference ops with the mapped arguments (and timm's own ops, where timm is
installed), its draws follow the policy; random erasing's rectangles and noise follow Zhong et
al.'s definition; Mixup/CutMix mix images and labels by the same ratio, also jitted on a sharded
batch; repeated augmentation spreads each example's copies over the batch."""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from scipy import stats

from attn_jax import data
from attn_jax.data import erasing, mixing, stream
from attn_jax.data import randaugment as R
from attn_jax.data import transforms as T

FILL = (124, 116, 104)  # timm's img_mean for the ImageNet mean


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 64 x 48 crop of scikit-learn's china.jpg: natural content for every op."""
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    return Image.open(path).convert("RGB").crop((100, 80, 356, 272)).resize((64, 48))


def ours(image, name, magnitude, negate=False):
    return np.asarray(R.apply_op(image, name, magnitude, negate, fill=FILL, resample=Image.BICUBIC))


# -- RandAugment ------------------------------------------------------------------------------
def test_ops_at_magnitude_9_are_pils_ops_with_the_mapped_arguments(photo):
    bicubic = {"resample": Image.BICUBIC, "fillcolor": FILL}
    w, h = photo.size
    want = {  # (op, negate): PIL's op with timm's argument at level 0.9
        ("Rotate", False): photo.rotate(27.0, **bicubic),
        ("Rotate", True): photo.rotate(-27.0, **bicubic),
        ("PosterizeIncreasing", False): ImageOps.posterize(photo, 1),  # 4 - int(3.6)
        ("Posterize", False): ImageOps.posterize(photo, 3),  # int(3.6)
        ("SolarizeIncreasing", False): ImageOps.solarize(photo, 26),  # 256 - int(230.4)
        ("Solarize", False): ImageOps.solarize(photo, 230),
        ("ColorIncreasing", False): ImageEnhance.Color(photo).enhance(1.81),
        ("ColorIncreasing", True): ImageEnhance.Color(photo).enhance(0.19),
        ("ContrastIncreasing", True): ImageEnhance.Contrast(photo).enhance(0.19),
        ("BrightnessIncreasing", False): ImageEnhance.Brightness(photo).enhance(1.81),
        ("SharpnessIncreasing", True): ImageEnhance.Sharpness(photo).enhance(0.19),
        ("Sharpness", False): ImageEnhance.Sharpness(photo).enhance(1.72),  # 1.8 * 0.9 + 0.1
        ("ShearX", False): photo.transform(
            photo.size, Image.AFFINE, (1, 0.27, 0, 0, 1, 0), **bicubic
        ),
        ("ShearY", True): photo.transform(
            photo.size, Image.AFFINE, (1, 0, 0, -0.27, 1, 0), **bicubic
        ),
        ("TranslateXRel", False): photo.transform(
            photo.size, Image.AFFINE, (1, 0, 0.405 * w, 0, 1, 0), **bicubic
        ),
        ("TranslateYRel", True): photo.transform(
            photo.size, Image.AFFINE, (1, 0, 0, 0, 1, -0.405 * h), **bicubic
        ),
        ("AutoContrast", False): ImageOps.autocontrast(photo),
        ("Equalize", False): ImageOps.equalize(photo),
    }
    for (name, negate), reference in want.items():
        np.testing.assert_array_equal(ours(photo, name, 9, negate), np.asarray(reference), name)


def test_ops_against_their_pixel_definitions(photo):
    x = np.asarray(photo).astype(np.int64)
    np.testing.assert_array_equal(ours(photo, "Invert", 9), 255 - x)
    # SolarizeAdd at 9 adds min(128, int(99.0)) = 99 below 128, saturating at 255.
    np.testing.assert_array_equal(
        ours(photo, "SolarizeAdd", 9), np.where(x < 128, np.minimum(x + 99, 255), x)
    )
    # Solarize inverts pixels at or above the threshold: 256 - int(256 * 0.5) = 128 at m = 5.
    np.testing.assert_array_equal(
        ours(photo, "SolarizeIncreasing", 5), np.where(x >= 128, 255 - x, x)
    )
    # TranslateXRel at m = 5 shifts by 0.45 * 0.5 = 22.5% of the width: 18 of 80 columns, so
    # with NEAREST output column c shows input column c + 18, and the last 18 are the fill.
    wide = photo.resize((80, 48))
    shifted = np.asarray(R.apply_op(wide, "TranslateXRel", 5, fill=FILL, resample=Image.NEAREST))
    np.testing.assert_array_equal(shifted[:, :62], np.asarray(wide)[:, 18:])
    assert (shifted[:, 62:] == FILL).all()
    # Posterize keeping no bit (m = 10 of the increasing op) is black; magnitude 0 keeps 4 bits.
    assert (ours(photo, "PosterizeIncreasing", 10) == 0).all()
    np.testing.assert_array_equal(ours(photo, "PosterizeIncreasing", 0), x & 0xF0)


def _timm_auto_augment():
    """timm's auto_augment.py, loaded from its file: it needs only PIL and numpy, while importing
    the timm package would import torch."""
    found = importlib.util.find_spec("timm")
    if found is None or not found.submodule_search_locations:
        pytest.skip("timm is not installed")
    path = Path(found.submodule_search_locations[0]) / "data" / "auto_augment.py"
    spec = importlib.util.spec_from_file_location("_timm_auto_augment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("increasing", [True, False])
def test_every_op_equals_timms(photo, monkeypatch, increasing):
    aa = _timm_auto_augment()
    hparams = {"translate_const": 100, "img_mean": FILL, "interpolation": Image.BICUBIC}
    ops = R.INCREASING_OPS if increasing else R.ORIGINAL_OPS
    assert set(ops) <= set(aa.NAME_TO_OP)
    compared = 0
    for name in ops:
        for magnitude in (0, 3, 9, 10):
            if R.op_argument(name, magnitude) == 0 and name.startswith("Posterize"):
                continue  # PIL >= 11 refuses timm's posterize(0 bits); ours is black, tested above
            for negate in (False, True):
                # timm negates when random.random() > 0.5; its op is applied with probability 1.
                monkeypatch.setattr(random, "random", lambda negate=negate: 0.9 if negate else 0.1)
                reference = aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
                np.testing.assert_array_equal(
                    ours(photo, name, magnitude, negate), np.asarray(reference(photo)), name
                )
                compared += 1
    assert compared >= 15 * 4 * 2 - 4


def test_policy_strings():
    deit = R.parse_policy("rand-m9-mstd0.5-inc1")
    assert (deit.num_layers, deit.magnitude, deit.magnitude_std, deit.prob) == (2, 9.0, 0.5, 0.5)
    assert deit.increasing and deit.ops == R.INCREASING_OPS and len(deit.ops) == 15
    assert deit.magnitude_max == 10 and deit.draws == 10
    other = R.parse_policy("rand-n3-m7-p0.8-mstd101-mmax20")
    assert (other.num_layers, other.magnitude, other.prob, other.magnitude_max) == (3, 7, 0.8, 20)
    assert math.isinf(other.magnitude_std) and not other.increasing
    assert other.ops == R.ORIGINAL_OPS
    for bad in ("rand-m9-tweights", "augmix-m5", "rand-x3", "rand-n0", "rand-p2"):
        with pytest.raises(data.DataConfigError) as info:
            R.parse_policy(bad)
        assert "\n" not in str(info.value) and "rand-m9-mstd0.5-inc1" in str(info.value)


def test_magnitudes_follow_the_policy():
    u = T.random_uniform(T.fold_key(0, 9), np.arange(20_000), 2)
    m = R.draw_magnitudes(R.parse_policy("rand-m9-mstd0.5-inc1"), u[:, 0], u[:, 1])
    # N(9, 0.5) clipped at 10: mean 9 - 0.5 * E[(Z - 2)+] ~ 9 - 0.004.
    assert abs(m.mean() - 9.0) < 0.02 and abs(m.std() - 0.5) < 0.02 and m.max() == 10.0
    assert abs((m == 10).mean() - 0.0228) < 0.005  # P(Z > 2)
    uniform = R.draw_magnitudes(R.parse_policy("rand-m9-mstd1000"), u[:, 0], u[:, 1])
    assert uniform.min() >= 0 and uniform.max() < 9 and abs(uniform.mean() - 4.5) < 0.1


def test_randaugment_applies_the_drawn_ops(photo):
    policy = R.parse_policy("rand-m9-mstd0.5-inc1")
    images = np.stack([np.asarray(photo), np.asarray(photo)[::-1]] * 20)  # [40, 48, 64, 3]
    u = T.random_uniform(T.fold_key(1, 4), np.arange(40), policy.draws)
    out = R.randaugment(images, u, policy, fill=FILL, resample=Image.BICUBIC)
    assert out.shape == images.shape and out.dtype == np.uint8
    layers = u.reshape(40, 2, R.DRAWS_PER_LAYER)
    magnitudes = R.draw_magnitudes(policy, layers[..., 2], layers[..., 3])
    for i in range(40):  # the draws, decoded by hand, give the same image
        pil = Image.fromarray(images[i])
        for k in range(2):
            if layers[i, k, 1] < 0.5:
                name = policy.ops[int(layers[i, k, 0] * 15)]
                pil = R.apply_op(
                    pil,
                    name,
                    magnitudes[i, k],
                    layers[i, k, 4] >= 0.5,
                    fill=FILL,
                    resample=Image.BICUBIC,
                )
        np.testing.assert_array_equal(out[i], np.asarray(pil))
    untouched = ~(layers[..., 1] < 0.5).any(axis=1)
    assert 0 < untouched.sum() < 40  # 1/4 of the images draw no op
    np.testing.assert_array_equal(out[untouched], images[untouched])
    never = R.RandAugmentPolicy(prob=0.0)
    np.testing.assert_array_equal(R.randaugment(images, u, never), images)
    # Over many images: each layer applies with p 1/2 and picks the 15 ops evenly.
    u = T.random_uniform(T.fold_key(2), np.arange(30_000), 10).reshape(-1, 5)
    assert abs((u[:, 1] < 0.5).mean() - 0.5) < 0.01
    counts = np.bincount((u[:, 0] * 15).astype(int), minlength=15)
    assert counts.min() > 0.9 * len(u) / 15


# -- random erasing -----------------------------------------------------------------------------
def test_erased_rectangles_follow_the_definition():
    rng = T.random_uniform(T.fold_key(3), np.arange(4000), 4 * erasing.ATTEMPTS)
    areas, aspects = [], []
    for height, width in ((224, 224), (32, 48)):
        for u in rng:
            box = erasing.erase_box(height, width, u)
            if box is None:
                continue
            top, left, h, w = box
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
            assert h < height and w < width
            if height == 224:
                areas.append(h * w / (height * width))
                aspects.append(h / w)
    areas, aspects = np.asarray(areas), np.asarray(aspects)
    assert len(areas) > 3900  # at 224 almost every first attempt fits
    # Sides are rounded to whole pixels: bounds within a pixel's worth.
    assert areas.min() > 0.02 * 0.9 and areas.max() < (1 / 3) * 1.1
    assert aspects.min() > 0.3 * 0.9 and aspects.max() < (1 / 0.3) * 1.1
    assert abs(np.log(aspects).mean()) < 0.05  # log-uniform, symmetric around 1
    assert abs(np.median(areas) - (0.02 + 1 / 3) / 2) < 0.02  # uniform area


def test_random_erasing_fills_with_standard_normal_noise():
    n, h, w = 400, 32, 32
    images = np.full((n, h, w, 3), 7.0, np.float32)  # a value noise never hits exactly
    positions = np.arange(1000, 1000 + n)
    out = erasing.random_erase(images.copy(), positions, T.fold_key(0, 5), 0.25)
    erased = out != 7.0
    per_image = erased.any(axis=(1, 2, 3))
    assert abs(per_image.mean() - 0.25) < 0.06
    noise = out[erased]
    assert noise.size > 10_000
    assert abs(noise.mean()) < 0.03 and abs(noise.std() - 1.0) < 0.03
    assert abs((np.abs(noise) < 1).mean() - 0.6827) < 0.01  # Gaussian, not uniform
    for i in np.flatnonzero(per_image):  # one rectangle, every channel
        ys, xs = np.nonzero(erased[i].all(-1))
        assert erased[i].sum() == 3 * (np.ptp(ys) + 1) * (np.ptp(xs) + 1) == 3 * len(ys)
    again = erasing.random_erase(images.copy(), positions, T.fold_key(0, 5), 0.25)
    np.testing.assert_array_equal(again, out)  # a function of the positions


# -- Mixup / CutMix -------------------------------------------------------------------------------
B, H, W = 16, 16, 12
OWN = np.arange(1, B + 1.0)  # image i is the constant i + 1: a pixel tells where it came from
LABELS = np.arange(B) % 5


def constant_batch():
    images = jnp.broadcast_to(jnp.asarray(OWN, jnp.float32)[:, None, None, None], (B, H, W, 3))
    return images, jnp.asarray(LABELS)


@pytest.fixture(scope="module")
def mixed():
    """DeiT's Mixup 0.8 / CutMix 1.0 of the constant batch under many keys, one compiled call
    (Beta sampling is slow to compile): mixed(seeds, prob) -> (images [S, B, H, W], soft labels
    [S, B, 5]), one channel."""
    images, labels = constant_batch()

    def one(key, prob):
        return mixing.mix_batch(
            images,
            labels,
            key,
            num_classes=5,
            mixup_alpha=0.8,
            cutmix_alpha=1.0,
            switch_prob=0.5,
            label_smoothing=0.1,
            prob=prob,
        )

    fn = jax.jit(jax.vmap(one, in_axes=(0, None)))

    def run(seeds: int, prob: float = 1.0):
        out, soft = fn(jax.random.split(jax.random.key(0), seeds), prob)
        return np.asarray(out)[..., 0], np.asarray(soft)

    return run


def is_mixup(out: np.ndarray) -> np.ndarray:
    """Per draw: every pixel of an image equal (Mixup), rather than a pasted box (CutMix)."""
    return (out == out[..., :1, :1]).all(axis=(-3, -2, -1))


def test_mixup_mixes_images_and_labels_by_the_same_ratio(mixed):
    out, soft = mixed(400)
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
    y = np.asarray(mixing.smooth_one_hot(LABELS, 5, 0.1))
    assert y.max() == pytest.approx(0.92) and y.min() == pytest.approx(0.02)
    lams = []
    for o, s in zip(out[is_mixup(out)], soft[is_mixup(out)], strict=True):
        lam = (o[:, 0, 0] - OWN[::-1]) / (OWN - OWN[::-1])  # partner = the reversed batch
        assert np.allclose(lam, lam[0], atol=1e-5) and 0 <= lam[0] <= 1
        np.testing.assert_allclose(s, lam[0] * y + (1 - lam[0]) * y[::-1], atol=1e-5)
        lams.append(lam[0])
    # lam ~ Beta(0.8, 0.8): Kolmogorov-Smirnov against its CDF.
    assert len(lams) > 100 and stats.kstest(lams, stats.beta(0.8, 0.8).cdf).pvalue > 0.01


def test_cutmix_ratio_is_one_minus_the_pasted_area(mixed):
    out, soft = mixed(400)
    own = np.broadcast_to(OWN[:, None, None], (B, H, W))
    y = np.asarray(mixing.smooth_one_hot(LABELS, 5, 0.1))
    clipped = 0
    for o, s in zip(out[~is_mixup(out)], soft[~is_mixup(out)], strict=True):
        pasted = o != own
        np.testing.assert_array_equal(o[pasted], own[::-1][pasted])  # from the partner
        assert (pasted == pasted[0]).all()  # one box for the whole batch
        fraction = pasted[0].mean()
        ys, xs = np.nonzero(pasted[0])
        assert pasted[0].sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a rectangle
        clipped += ys.min() == 0 or xs.min() == 0 or ys.max() == H - 1 or xs.max() == W - 1
        lam = 1 - fraction
        np.testing.assert_allclose(s, lam * y + (1 - lam) * y[::-1], atol=1e-6)
    assert clipped > 3  # boxes clipped by the border count their visible area only


def test_switch_prob_and_alpha_zero(mixed):
    out, _ = mixed(400)
    assert 160 < is_mixup(out).sum() < 240  # CutMix with probability 1/2
    out, soft = mixed(400, prob=0.0)  # the same compiled function: prob is an argument
    np.testing.assert_array_equal(out, np.broadcast_to(OWN[:, None, None], out.shape))
    np.testing.assert_allclose(soft[0], mixing.smooth_one_hot(LABELS, 5, 0.1), rtol=1e-6)
    images, labels = constant_batch()
    same, soft = mixing.mix_batch(images, labels, jax.random.key(0), num_classes=5)
    assert same is images
    np.testing.assert_array_equal(soft, np.eye(5)[LABELS])


def test_mix_batch_jits_on_a_sharded_batch_without_moving_images():
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (tests/conftest.py forces 4 host devices)")
    mesh = jax.sharding.Mesh(np.asarray(devices[:4]), ("data",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    images, labels = (jax.device_put(x, rows) for x in constant_batch())
    kw = dict(num_classes=5, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    for groups in (1, 4):
        fn = jax.jit(lambda x, y, k, g=groups: mixing.mix_batch(x, y, k, groups=g, **kw))
        compiled = fn.lower(images, labels, jax.random.key(5)).compile()
        hlo = compiled.as_text()
        moves = any(op in hlo for op in ("collective-permute", "all-to-all", "all-gather"))
        assert moves == (groups == 1), groups  # with a group per device, no image moves
        out, soft = compiled(images, labels, jax.random.key(5))
        assert out.sharding.is_equivalent_to(rows, 4)
        # Every pixel is the row's own value or its partner's: reversed within each group.
        mate = np.asarray(mixing.partner(jnp.asarray(OWN), groups))
        np.testing.assert_array_equal(mate.reshape(groups, -1), OWN.reshape(groups, -1)[:, ::-1])
        # The pixel-average weight of the row's own image is its lam (Mixup: lam everywhere;
        # CutMix: 0 in the box), and the soft labels carry the same one.
        o = np.asarray(out)[..., 0]
        weight = (o - mate[:, None, None]) / (OWN - mate)[:, None, None]
        assert ((weight > -1e-5) & (weight < 1 + 1e-5)).all()
        lam = weight.mean(axis=(1, 2))
        y = np.asarray(mixing.smooth_one_hot(LABELS, 5, 0.1))
        want = lam[:, None] * y + (1 - lam[:, None]) * y[mate.astype(int) - 1]
        np.testing.assert_allclose(soft, want, atol=1e-5)


# -- config and repeated augmentation -------------------------------------------------------------
def test_mix_options_and_config_errors(digits_cfg):
    assert data.mix_options(digits_cfg) is None
    cfg = {**digits_cfg, "augment": True, "mixup": 0.8, "cutmix": 1.0}
    assert data.mix_options(cfg) == {
        "mixup_alpha": 0.8,
        "cutmix_alpha": 1.0,
        "switch_prob": 0.5,
        "prob": 1.0,
    }
    for update, match in [
        ({"augment": True, "randaugment": "rand-m9-mstd0.5-inc1"}, "needs 8-bit images"),
        ({"augment": True, "randaugment": "rand-q3"}, "unknown section 'q3'"),
        ({"mixup": 0.8}, "set --config.data.augment=true"),
        ({"augment": True, "random_erase": 1.5}, "probability in"),
        ({"augment": True, "cutmix": -1.0}, "Beta alpha"),
        ({"augment": True, "repeated_augment": 0}, "repeated_augment must be an int"),
        ({"interpolation": "lanczos"}, "bilinear, bicubic"),
        ({"name": "digit_scenes", "augment": True, "mixup": 0.8}, "image classification"),
    ]:
        with pytest.raises(data.DataConfigError, match=match) as info:
            data.dataset_info({**digits_cfg, **update})
        assert "\n" not in str(info.value)
    with pytest.raises(data.DataConfigError, match="multiple of"):
        data.make_dataset(
            {**digits_cfg, "augment": True, "repeated_augment": 3},
            "train",
            train=True,
            global_batch_size=128,
            seed=0,
        )
    group = data.data_config(randaugment="rand-m9-mstd0.5-inc1", random_erase=0.25, mixup=0.8)
    assert group.randaugment == "rand-m9-mstd0.5-inc1" and group.cutmix == 0.0


def test_repeated_augmentation_spreads_copies_over_the_batch():
    positions = stream.BatchPositions(
        100, train=True, global_batch_size=12, seed=0, process_index=0, process_count=1, repeats=3
    )
    seen = []
    for step in range(25):  # 300 positions: 3 epochs of 100, one pass over the examples
        _, _, indices = positions(step)
        np.testing.assert_array_equal(indices[:4], indices[4:8])  # copies B/r = 4 slots apart
        np.testing.assert_array_equal(indices[:4], indices[8:])
        seen.extend(indices[:4])
    assert sorted(seen) == list(range(100))
    parts = [
        stream.BatchPositions(
            100,
            train=True,
            global_batch_size=12,
            seed=0,
            process_index=p,
            process_count=3,
            repeats=3,
        )(7)[2]
        for p in range(3)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), positions(7)[2])
    assert len(set(parts[0])) == 4 and all(set(p) == set(parts[0]) for p in parts)


def test_repeated_copies_are_augmented_differently(digits_cfg):
    cfg = {**digits_cfg, "augment": True, "repeated_augment": 3}
    (batch,) = [
        next(iter(data.make_dataset(cfg, "train", train=True, global_batch_size=96, seed=0)))
    ]
    np.testing.assert_array_equal(batch["label"][:32], batch["label"][32:64])
    differ = (batch["image"][:32] != batch["image"][32:64]).any(axis=(1, 2, 3))
    assert differ.mean() > 0.5  # digits shift by up to a pixel: 8 of 9 shift pairs differ
