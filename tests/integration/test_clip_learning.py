"""CLIP learns the digit captions through the trainer, on 4 (forced host) devices, and classifies
held-out-template prompts zero-shot; the masked-LM encoder learns the captions' words. Short runs
in the default suite, the full experiments marked slow."""

from __future__ import annotations

import pytest
from inprocess_helpers import experiment_config, split_records

from attn_jax.train import loop


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One tfds dir for the module: digit_captions is prepared once."""
    return tmp_path_factory.mktemp("tfds")


def test_short_clip_run_classifies_digits_zero_shot(tmp_path, data_dir):
    # A small CLIP (one block per tower, width 32) on the native 8x8 images (2x2 patches), batch
    # 64 sharded over 4 devices; compiling costs more than the 250 steps. Chance is 10%, the
    # prompts' templates never appear in training; 0.755 measured.
    config = experiment_config(
        data_dir,
        "clip_digits",
        "--config.num_epochs=0",
        "--config.total_steps=250",
        "--config.eval_every=250",
        "--config.log_every=20",
        "--config.batch_size=64",
        "--config.eval_batch_size=360",
        "--config.data.image_size=8",
        "--config.data.augment=false",
        "--config.model.patch_size=2",
        "--config.model.vision_width=32",
        "--config.model.vision_layers=1",
        "--config.model.vision_heads=2",
        "--config.model.text_width=32",
        "--config.model.text_layers=1",
        "--config.model.text_heads=2",
        "--config.model.embed_dim=32",
        "--config.optim.lr=3e-3",
        "--config.optim.warmup_steps=10",
        "--config.plots=false",
    )
    workdir = tmp_path / "run"
    result = loop.train(config, workdir)
    assert result["test/zero_shot_accuracy"] >= 0.6, result
    # An image's most similar test caption mostly describes its digit (0.79 measured).
    assert split_records(workdir, "test")[-1]["caption_label_accuracy"] >= 0.6
    train = split_records(workdir, "train")
    assert train[-1]["loss"] < train[0]["loss"] - 1.0, train  # 4.30 -> 2.48 measured


@pytest.mark.slow
def test_clip_digits_reaches_90_percent_zero_shot(tmp_path, data_dir):
    workdir = tmp_path / "run"
    result = loop.train(experiment_config(data_dir, "clip_digits"), workdir)
    assert result["test/zero_shot_accuracy"] >= 0.9, result  # 0.975 measured
    assert (workdir / "plots" / "clip_similarity.png").stat().st_size > 20_000


@pytest.mark.slow
def test_mlm_digit_captions_predicts_masked_words(tmp_path, data_dir):
    result = loop.train(experiment_config(data_dir, "mlm_digit_captions"), tmp_path / "run")
    assert result["test/accuracy"] >= 0.75, result  # 0.851 measured
