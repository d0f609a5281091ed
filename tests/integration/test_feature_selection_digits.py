"""experiments/feature_selection_digits.py through the launcher: an MLP that sees only 8 of the
64 pixels (the same 8 for every digit, learned) still classifies the embedded digits far above
chance, and draws the pixels it kept."""

from __future__ import annotations

import json


def test_eight_learned_pixels_classify_the_digits(train_run):
    workdir, result = train_run(
        "--config",
        "experiments/feature_selection_digits.py",
        "--config.model.k=8",
        "--config.total_steps=1000",
        "--config.eval_every=1000",
        timeout=300,
    )
    # Chance is 10%; the full recipe (3,000 steps) reaches about 77% with k = 8.
    assert result["test/accuracy"] >= 0.55, result
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == "feature_select" and config["model"]["k"] == 8
    figure = workdir / "plots" / "kept_pixels.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
