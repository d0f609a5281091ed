"""One table of parameter counts over every registered model and variant, and a guard that fails
when a registered model or variant has none (as vision_transformer's models_test.py does).

Published counts are asserted by default; the counts marked "ours" (no published number: our
experiments' presets, or a paper that gives none) are regression numbers, and those of the large
models among them run with the slow tests. Counts are of the 'params' collection (trainable;
frozen batch-norm statistics and fixed sin-cos tables are not parameters), taken from
`jax.eval_shape`: nothing is allocated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import pytest

from attn_jax.models import MODELS, build_model, count_params


@dataclasses.dataclass(frozen=True)
class Count:
    """A model's parameter count and where the number comes from."""

    params: int
    source: str
    fields: tuple[tuple[str, Any], ...] = ()  # build fields beyond the family's defaults
    inputs: tuple[tuple[int, ...], ...] | None = None  # None: the family's default inputs
    parts: tuple[tuple[str, int], ...] = ()  # counts of top-level subtrees


OFFICIAL_VIT = "vit_jax/models_test.py (FAITHFULNESS 9)"
OURS = "ours"

# Per family: build fields and abstract input shapes (int32 for token inputs).
DEFAULTS: dict[str, tuple[dict[str, Any], tuple[tuple[int, ...], ...]]] = {
    "vit": ({"num_classes": 1000}, ((1, 224, 224, 3),)),
    "cnn": ({}, ((1, 24, 24, 1),)),
    "mlp": ({}, ((1, 8, 8, 1),)),
    "stn": ({}, ((1, 24, 24, 1),)),
    "seq2seq": ({"vocab_size": 100}, ((1, 12), (1, 12))),
    "bahdanau": ({"vocab_size": 100}, ((1, 12), (1, 12))),
    "transformer": ({"vocab_size": 37_000}, ((1, 12), (1, 12))),
    "resnet": ({"num_classes": 1000}, ((1, 224, 224, 3),)),
    "swin": ({"num_classes": 1000}, ((1, 224, 224, 3),)),
    "detr": ({"num_classes": 91}, ((1, 224, 224, 3),)),
    "setr": ({"num_classes": 150}, ((1, 512, 512, 3),)),
    "ram": ({}, ((1, 60, 60, 1),)),
    "feature_select": ({"num_classes": 10}, ((1, 8, 8, 1),)),
    "simmim": ({}, ((1, 224, 224, 3),)),
    "mae": ({}, ((1, 224, 224, 3),)),
    "clip": ({}, ((1, 224, 224, 3), (1, 77))),
    "text_mlm": ({"vocab_size": 30_522, "context_length": 512}, ((1, 512),)),
    "colorizer": (
        {"encoder": dict(patch_size=2, hidden_size=64, depth=4, num_heads=4, mlp_dim=128)},
        ((1, 8, 8, 1),),
    ),
    "bert": (
        {"vocab_size": 100, "context_length": 11, "encoder": {"width": 128, "layers": 3}},
        ((1, 21),),
    ),
    "transfg": ({"num_classes": 200}, ((1, 448, 448, 3),)),
}

PARAM_COUNTS: dict[str, dict[str | None, Count]] = {
    "vit": {
        "Ti/16": Count(5_717_416, OFFICIAL_VIT),
        "S/16": Count(22_050_664, OFFICIAL_VIT),
        "B/16": Count(86_567_656, OFFICIAL_VIT),
        "B/32": Count(88_224_232, OFFICIAL_VIT),
        "L/16": Count(304_326_632, OFFICIAL_VIT),
        "L/32": Count(306_535_400, OFFICIAL_VIT),
        "H/14": Count(632_045_800, OFFICIAL_VIT),
        "S/16-gap": Count(22_049_896, OFFICIAL_VIT),
        "B/16-gap-norep": Count(86_566_120, OFFICIAL_VIT),
        "textbook_cifar10": Count(
            10_707_274,
            "Keras count_params() of the keras.io example",
            (("num_classes", 10),),
            ((1, 32, 32, 3),),
        ),
    },
    "cnn": {
        "digits": Count(315_146, "ours: README, cnn_digits"),
        "tiny": Count(3_658, OURS, inputs=((1, 8, 8, 1),)),
    },
    "mlp": {
        "digits": Count(85_002, OURS),
        "tiny": Count(4_810, OURS),
    },
    "stn": {"digits": Count(337_232, "ours: README, stn_digits")},
    "seq2seq": {
        "small": Count(223_332, OURS),
        # Sutskever et al. 2014, sec. 3.4: 64M recurrent weights; vocabulary 100 here.
        "sutskever": Count(64_332_100, OURS),
    },
    "bahdanau": {
        # Gated units and the maxout readout (appendix A) since issue 18.
        "small": Count(463_204, OURS),
        "rnnsearch": Count(28_386_100, OURS),
    },
    "transformer": {
        # Table 3 says 65M and 213M; with a shared vocabulary of 37,000 (FAITHFULNESS 2).
        "base": Count(63_082_496, "Vaswani et al. 2017, Table 3, counted (FAITHFULNESS 2)"),
        "big": Count(214_245_376, "Vaswani et al. 2017, Table 3, counted (FAITHFULNESS 2)"),
        "tiny": Count(938_496, OURS, (("vocab_size", 100),)),
    },
    "resnet": {
        "resnet18": Count(11_689_512, "torchvision"),
        "resnet34": Count(21_797_672, "torchvision"),
        "resnet50": Count(25_557_032, "torchvision"),
        "resnet101": Count(44_549_160, "torchvision"),
        "resnet152": Count(60_192_808, "torchvision"),
        "se_resnet50": Count(28_088_024, "Hu et al. 2018, counted (FAITHFULNESS 4)"),
        "digits": Count(
            696_042, "ours: README, resnet_digits", (("num_classes", 10),), ((1, 8, 8, 1),)
        ),
    },
    "swin": {
        "T": Count(28_288_354, "official code == timm (FAITHFULNESS 12)"),
        "S": Count(49_606_258, "official code == timm (FAITHFULNESS 12)"),
        "B": Count(87_768_224, "official code == timm (FAITHFULNESS 12)"),
        "L": Count(196_532_476, "official code == timm (FAITHFULNESS 12)"),
    },
    "detr": {
        # 41,302,368 of them trainable with the stem and stage 1 frozen (tests/models/test_detr.py).
        "R50": Count(
            41_524_768,
            "DETR's main.py (FAITHFULNESS 10)",
            parts=(("transformer", 17_363_456),),
        ),
        "R18": Count(28_843_552, OURS),
        "digits": Count(325_615, OURS, (("num_classes", 10),), ((1, 64, 64, 1),)),
        # Swin-T without its head (28,288,354 - 769,000) under DETR-R50's transformer, a stage
        # norm (1,536), input projection 768 -> 256 and the heads (tests/models/test_detr_masks.py).
        "swin_T": Count(
            45_263_066,
            "Swin-T's published count + DETR's parts",
            parts=(("backbone", 27_519_354), ("transformer", 17_363_456)),
        ),
        "swin_digits": Count(382_971, OURS, (("num_classes", 10),), ((1, 64, 64, 1),)),
    },
    "setr": {
        "S/16": Count(24_678_678, OURS),
        "B/16": Count(90_013_590, OURS),
        "L/16": Count(308_317_846, OURS),
        "digits": Count(228_363, OURS, (("num_classes", 11),), ((1, 64, 64, 3),)),
        "swin_T": Count(32_717_136, OURS),
        "swin_S": Count(54_035_040, OURS),
        "swin_B": Count(92_064_846, OURS),
        "swin_digits": Count(2_581_379, OURS, (("num_classes", 11),), ((1, 64, 64, 3),)),
    },
    "ram": {
        "paper_mnist": Count(209_165, OURS, inputs=((1, 28, 28, 1),)),
        "paper_translated": Count(256_269, OURS),
    },
    "feature_select": {None: Count(85_066, "ours: README, feature_selection_digits")},
    "simmim": {"B/16": Count(86_390_016, OURS)},
    "mae": {
        "B/16": Count(
            111_655_680,
            "official models_mae.py: encoder 85,647,360 + decoder 26,008,320 (FAITHFULNESS 13)",
            parts=(("encoder", 85_647_360),),
        ),
        "L/16": Count(329_239_296, OURS),
        "H/14": Count(656_613_964, OURS),
    },
    "clip": {
        "B/32": Count(151_277_313, "the official notebook (FAITHFULNESS 14)"),
        "B/16": Count(149_620_737, "counted (FAITHFULNESS 14)"),
        "L/14": Count(427_616_513, "counted (FAITHFULNESS 14)"),
    },
    "text_mlm": {
        "tiny": Count(4_812_986, OURS),
        "base": Count(109_512_762, OURS),
    },
    # experiments/colorization_digits.py and bert_digit_captions.py (vocabulary 100 here)
    "colorizer": {None: Count(134_920, OURS, parts=(("encoder", 134_400),))},
    "bert": {None: Count(644_454, OURS, parts=(("encoder", 627_684),))},
    # CUB-200-2011 at 448 px: ViT-B/16's count with 1 + 37 x 37 position embeddings
    # (tests/models/test_transfg.py counts it from the parts).
    "transfg": {
        "B_16": Count(86_853_320, "ViT-B/16's count on TransFG's overlapping patches, counted"),
        "tiny": Count(27_434, OURS, (("num_classes", 10),), ((1, 12, 12, 1),)),
    },
}


def _entries() -> list:
    entries = []
    for model, counts in PARAM_COUNTS.items():
        for variant, count in counts.items():
            slow = count.source == OURS and count.params > 20_000_000
            marks = [pytest.mark.slow] if slow else []
            entries.append(
                pytest.param(model, variant, count, id=f"{model}-{variant}", marks=marks)
            )
    return entries


def test_every_registered_model_and_variant_has_a_count():
    assert set(PARAM_COUNTS) == set(MODELS)
    for name, entry in MODELS.items():
        variants = set(entry.variants) or {None}
        assert set(PARAM_COUNTS[name]) == variants, name


@pytest.mark.parametrize("model, variant, count", _entries())
def test_parameter_count(model, variant, count):
    fields, inputs = DEFAULTS[model]
    module = build_model(dict(fields, name=model, variant=variant, **dict(count.fields)))
    args = [
        jax.ShapeDtypeStruct(shape, jnp.float32 if len(shape) == 4 else jnp.int32)
        for shape in count.inputs or inputs
    ]
    shapes = jax.eval_shape(lambda *xs: module.init({"params": jax.random.key(0)}, *xs), *args)[
        "params"
    ]
    assert count_params(shapes) == count.params, count.source
    for part, params in count.parts:
        assert count_params(shapes[part]) == params, part
