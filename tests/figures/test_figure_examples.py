"""The figures the trainer draws: each kind a task or model produces is drawn into <kind>.png,
alignments one file per example, curves one file per metric that some record holds."""

from __future__ import annotations

import numpy as np
import pytest

from attn_jax.figures.curves import plot_curves
from attn_jax.figures.examples import FIGURES, draw_examples

PNG = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)


def test_each_kind_is_drawn_into_its_file_in_order(tmp_path):
    attention = [
        {"weights": RNG.random((3, 4)), "source": list("abcd"), "target": list("xyz")},
        {"weights": RNG.random((2, 3, 4)), "source": list("abcd"), "target": list("xyz")},
    ]
    images = RNG.standard_normal((2, 8, 8, 1)).astype(np.float32)
    figures = {
        "attention": {"examples": attention},
        "reconstructions": {
            "image": images,
            "reconstruction": images[::-1],
            "pasted": images,
            "pixel_mask": (RNG.random((2, 8, 8, 1)) > 0.5).astype(np.float32),
        },
    }
    paths = draw_examples(figures, tmp_path / "plots")
    assert [p.name for p in paths] == ["attention_0.png", "attention_1.png", "reconstructions.png"]
    assert all(p.parent == tmp_path / "plots" and p.read_bytes()[:8] == PNG for p in paths)
    assert draw_examples({}, tmp_path / "none") == []


def test_a_kind_without_a_drawing_function_is_a_bug():
    assert "detections" in FIGURES and "glimpse_paths" in FIGURES
    with pytest.raises(AssertionError, match="no entry in FIGURES"):
        draw_examples({"unregistered": {}}, "unused")


def test_curves_are_drawn_for_the_metrics_some_record_holds(tmp_path):
    records = [
        {
            "step": s,
            "split": split,
            "loss": 1 / s,
            **({"accuracy": s / 4} if split == "test" else {}),
        }
        for s in (1, 2, 3)
        for split in ("train", "test")
    ]
    paths = plot_curves(records, tmp_path, ("accuracy", "loss", "bleu"), name="run")
    assert [p.name for p in paths] == ["accuracy.png", "loss.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
