"""Where a ResNet puts its non-local blocks (Wang et al. 2018): before the last block of a stage
(the single-block ablation), or after every k-th block of res3/res4 as the authors' code
(`idx % k == k - 1`): the paper's 5-block (k = 2) and 10-block (k = 1) ResNet-50."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from attn_jax.attention.non_local import NonLocalBlock
from attn_jax.models import build_model

# ResNet-50's stage sizes at a width that makes shape inference instant.
R50 = dict(name="resnet", variant="resnet50", num_classes=3, width=4, norm="group", norm_groups=2)


def _module_order(**fields) -> list[str]:
    """The stage-2 and stage-3 submodules in the order the forward pass calls them."""
    model = build_model(dict(R50, **fields))
    calls = []

    def record(next_fun, args, kwargs, context):
        name = context.module.name or ""
        if context.method_name == "__call__" and name.startswith(("stage2", "stage3")):
            calls.append(name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return calls


@pytest.mark.parametrize(
    "every, after",
    [
        (2, {2: (1, 3), 3: (1, 3, 5)}),  # the 5-block model: every other block
        (1, {2: (0, 1, 2, 3), 3: (0, 1, 2, 3, 4, 5)}),  # the 10-block model
    ],
)
def test_every_kth_block_of_res3_and_res4(every, after):
    order = _module_order(non_local_stages=(2, 3), non_local_every=every)
    expected = []
    for stage, blocks in ((2, 4), (3, 6)):
        for i in range(blocks):
            expected.append(f"stage{stage}_block{i}")
            if i in after[stage]:
                expected.append(f"stage{stage}_non_local{i}")
    assert order == expected
    assert sum("non_local" in name for name in order) == {2: 5, 1: 10}[every]


def test_single_block_before_the_last_block_and_scaled_by_default():
    order = _module_order(non_local_stages=(3,))
    assert order[:4] == [f"stage2_block{i}" for i in range(4)]
    assert order[4:] == [
        *(f"stage3_block{i}" for i in range(5)),
        "stage3_non_local",
        "stage3_block5",
    ]
    # Scaled by 1/sqrt(C') unless asked otherwise (test_non_local.py checks what scaling does).
    assert build_model(R50).non_local_scale_logits is True
    assert NonLocalBlock().scale_logits is True


def test_negative_period_is_a_one_line_error():
    with pytest.raises(ValueError, match="non_local_every must be >= 0") as err:
        build_model(dict(R50, non_local_stages=(3,), non_local_every=-1))
    assert "\n" not in str(err.value)
