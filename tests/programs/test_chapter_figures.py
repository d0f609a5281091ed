"""The chapter's figures: the positional-encoding and normalization programs write their PNGs and
captions, and the numbers they draw are right (the encoding's dot products depend on the offset
alone; layer norm standardizes each token over its features, batch norm each feature over the
batch's tokens, and neither the other's groups)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attn_jax import config as config_lib
from attn_jax.errors import UserError
from attn_jax.programs import PROGRAMS, load_program_config, run_program
from attn_jax.programs.normalization import normalization_arrays
from attn_jax.programs.positional_encoding import positional_encoding_arrays, toeplitz_deviation

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _written(files: list[str]) -> None:
    for name in files:
        path = Path(name)
        assert path.is_file(), path
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000
        else:
            assert len(path.read_text().strip()) > 40


def test_positional_encoding_dot_products_are_toeplitz_and_match_the_closed_form():
    arrays = positional_encoding_arrays(48, 32)
    dots = arrays["dot_products"]
    assert toeplitz_deviation(dots) < 1e-5
    np.testing.assert_allclose(dots, dots.T, atol=1e-4)
    # Row 0 against the offset: sum_i cos(k w_i) over the 16 frequencies; d / 2 at offset 0.
    k0 = 47  # offsets run -47 .. 47
    np.testing.assert_allclose(dots[0], arrays["offset_dot"][k0:], atol=1e-4)
    np.testing.assert_allclose(np.diag(dots), 16.0, atol=1e-4)
    assert np.all(dots <= 16.0 + 1e-4)
    # A learned-looking random table has no such structure.
    random = np.random.default_rng(0).normal(size=(48, 32))
    assert toeplitz_deviation(random @ random.T) > 0.1


def test_positional_encoding_program_writes_its_figure(tmp_path):
    config = load_program_config(
        ROOT / "experiments" / "positional_encoding_figure.py", ["--config.length=32"]
    )
    result = run_program(config, tmp_path)
    assert result["program"] == "positional_encoding" and "positional_encoding" in PROGRAMS
    _written(result["files"])
    assert result["toeplitz_deviation"] < 1e-5
    assert result["max_dot"] == pytest.approx(64.0, rel=1e-5)  # d_model / 2
    config.d_model = 33
    with pytest.raises(UserError, match="even"):
        run_program(config, tmp_path)


def test_layer_norm_standardizes_tokens_and_batch_norm_features():
    rng = np.random.default_rng(0)
    # Features with their own offsets and scales, tokens with their own: neither norm is a no-op.
    x = rng.normal(size=(6, 5, 16)) * rng.uniform(0.5, 3, 16) + rng.normal(size=16) * 2
    x = x + rng.normal(size=(6, 5, 1))
    a = normalization_arrays(x)
    np.testing.assert_allclose(a["ln_mean_after"], 0.0, atol=1e-5)
    np.testing.assert_allclose(a["ln_std_after"], 1.0, atol=1e-4)
    np.testing.assert_allclose(a["bn_mean_after"], 0.0, atol=1e-5)
    np.testing.assert_allclose(a["bn_std_after"], 1.0, atol=1e-4)
    # The formulas, and each norm leaves the other's groups unstandardized.
    m, s = x.mean(-1, keepdims=True), x.std(-1, keepdims=True)
    np.testing.assert_allclose(a["layer_norm"], (x - m) / np.sqrt(s**2 + 1e-6), atol=1e-4)
    m, s = x.mean((0, 1)), x.std((0, 1))
    np.testing.assert_allclose(a["batch_norm"], (x - m) / np.sqrt(s**2 + 1e-5), atol=1e-4)
    assert np.abs(a["layer_norm"].reshape(-1, 16).mean(0)).max() > 0.3
    assert np.abs(a["batch_norm"].reshape(-1, 16).mean(-1)).max() > 0.3


def test_normalization_program_on_vit_tokens_writes_its_figures(tmp_path):
    config = load_program_config(
        ROOT / "experiments" / "normalization_figure.py",
        [f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.batch_size=8"],
    )
    result = run_program(config, tmp_path / "run")
    assert result["shape"] == [8, 17, 64]  # 16 patches + the class token, width 64
    _written(result["files"])
    assert len(result["files"]) == 4
    assert result["ln_token_mean_max"] < 1e-5 and result["ln_token_std_dev_max"] < 1e-3
    assert result["bn_feature_mean_max"] < 1e-5 and result["bn_feature_std_dev_max"] < 1e-3
    assert result["ln_feature_mean_max"] > 0.1 and result["bn_token_mean_max"] > 0.05


def test_figure_configs_are_refused_by_train_and_a_bad_block_is_a_one_line_error(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="launch.py run"):
        config_lib.load_config(ROOT / "experiments" / "normalization_figure.py")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "run",
            "--config",
            "experiments/normalization_figure.py",
            "--config.block=9",
            "--workdir",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: block=9")
