"""A workdir belongs to one run: config changes a resume would apply silently, the default workdir
of a changed config, the lock against a second run, and the writability checks."""

from __future__ import annotations

import copy

import pytest

from attn_jax import config as config_lib
from attn_jax.train import workdir as workdir_lib

DEFAULT = "experiments/vit_digits.py"


@pytest.fixture
def config():
    return config_lib.load_config(DEFAULT)


def changed(config, *overrides):
    c = copy.deepcopy(config)
    config_lib.apply_overrides(c, overrides)
    return c


def test_changes_that_alter_results_are_found_and_named(config):
    new = changed(config, "--config.optim.lr=1e-2", "--config.batch_size=64")
    keys = [k for k, _, _ in workdir_lib.config_changes(config, new)]
    assert keys == ["batch_size", "optim.lr"]
    text = workdir_lib.describe_changes(workdir_lib.config_changes(config, new))
    assert "optim.lr 0.003 -> 0.01" in text


def test_benign_and_allowed_changes_are_not_changes(config):
    new = changed(
        config,
        "--config.log_every=7",
        "--config.eval_every=11",
        "--config.keep_checkpoints=5",
        "--config.plots=false",
        "--config.distributed.num_processes=2",
        "--config.max_runtime=60",
    )
    assert workdir_lib.config_changes(config, new) == []
    longer = changed(config, "--config.num_epochs=400", "--config.allow_changes=num_epochs")
    assert workdir_lib.config_changes(config, longer) == []
    assert workdir_lib.config_changes(config, changed(config, "--config.num_epochs=400"))


def test_a_stored_config_without_the_new_trainer_keys_is_the_same_config(config, tmp_path):
    stored = config.to_dict()
    for key in config_lib.TRAINER_DEFAULTS:
        stored.pop(key)
    assert workdir_lib.config_changes(stored, config) == []


def test_resume_with_another_config_is_refused_with_both_ways_out(config, tmp_path):
    new = changed(config, "--config.seed=3")
    with pytest.raises(workdir_lib.WorkdirError) as e:
        workdir_lib.check_resume_config(config, new, tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert "seed 0 -> 3" in message
    assert "--workdir" in message and "--config.allow_changes=seed" in message


def test_default_workdir_is_new_for_another_config_and_found_again(config, tmp_path):
    root = tmp_path / "runs"
    first = workdir_lib.default_workdir(config, root)
    assert first == root / "vit_digits"
    first.mkdir(parents=True)
    config_lib.save(config, first / "config.json")
    assert workdir_lib.default_workdir(changed(config, "--config.log_every=5"), root) == first
    other = changed(config, "--config.optim.lr=1e-2")
    second = workdir_lib.default_workdir(other, root)
    assert second == root / "vit_digits-2"
    second.mkdir()
    config_lib.save(other, second / "config.json")
    assert workdir_lib.default_workdir(other, root) == second
    assert workdir_lib.default_workdir(config, root) == first
    third = workdir_lib.default_workdir(changed(config, "--config.seed=1"), root)
    assert third == root / "vit_digits-3"


def test_second_holder_of_the_lock_is_refused_and_a_released_lock_is_free(tmp_path):
    with workdir_lib.WorkdirLock(tmp_path):
        with pytest.raises(workdir_lib.WorkdirError) as e:
            workdir_lib.WorkdirLock(tmp_path).acquire()
        assert "in use by another run (pid" in str(e.value) and "\n" not in str(e.value)
    with workdir_lib.WorkdirLock(tmp_path):  # released: free again
        pass


def test_unwritable_or_too_small_workdir_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(workdir_lib.WorkdirError, match="is not writable"):
        workdir_lib.check_writable(blocker / "run")
    with pytest.raises(workdir_lib.WorkdirError, match="MiB free but its checkpoints need"):
        workdir_lib.check_writable(tmp_path / "run", needed_bytes=2**62)


def test_keep_checkpoints_below_one_and_unknown_policy_are_config_errors(config):
    config_lib.validate(config)
    for override, match in (
        ("--config.keep_checkpoints=0", "keep_checkpoints must be at least 1"),
        ("--config.on_nonfinite=ignore", "on_nonfinite must be one of stop, skip"),
    ):
        with pytest.raises(config_lib.ConfigError, match=match):
            config_lib.validate(changed(config, override))


def test_explicit_total_steps_wins_over_the_files_epochs(config):
    assert config.num_epochs > 0
    c = changed(config, "--config.total_steps=5")
    assert c.num_epochs == 0 and config_lib.resolve_total_steps(c, 1438) == 5
    c = changed(config, "--config.num_epochs=0", "--config.total_steps=5")
    assert config_lib.resolve_total_steps(c, 1438) == 5
    with pytest.raises(config_lib.ConfigError, match="give only one of them"):
        changed(config, "--config.num_epochs=3", "--config.total_steps=5")
