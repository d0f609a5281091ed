"""Config loading and `--config.k=v` overrides: the errors a user sees before any work."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax import programs
from attn_jax.data import dataset_info, get_entry
from attn_jax.data.sources import split_ranges

ROOT = Path(__file__).resolve().parent.parent
# Every file, and every variant of a file with variants ("experiments/x.py:variant").
EXPERIMENTS = config_lib.experiment_specs(ROOT / "experiments")
TRAINING = [s for s in EXPERIMENTS if "program" not in config_lib.import_config(s)]


def _name(spec: str) -> str:
    return Path(spec).name.removesuffix(".py").replace(".py:", ":")


@pytest.fixture
def cfg():
    return config_lib.load_config(ROOT / "experiments" / "vit_digits.py")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_name)
def test_every_experiment_has_the_required_keys(path):
    if "program" in config_lib.import_config(path):  # trains nothing: names a known program
        assert programs.load_program_config(path).program in programs.PROGRAMS
        return
    config = config_lib.load_config(path)
    for key in config_lib.REQUIRED_KEYS:
        assert key in config, f"{path} lacks {key}"
    for group in ("model", "data", "optim"):
        assert len(config[group]) > 0
    assert "grad_accum_steps" not in config.optim  # one accumulation knob: config.microbatches


def test_experiment_names_are_distinct_per_variant():
    names = [config_lib.import_config(s).get("experiment") for s in TRAINING]
    assert len(set(names)) == len(names), names  # default workdirs are runs/<experiment>


@pytest.mark.parametrize("path", TRAINING, ids=_name)
def test_every_experiment_selects_on_validation_held_out_from_its_training_data(path):
    config = config_lib.load_config(path)
    assert config.target_metric.startswith("validation/"), config.target_metric
    entry = get_entry(config.data.name)
    trained = split_ranges(entry, config.data.train_split)
    held_out = split_ranges(entry, config.evals.validation.split)
    for name, start, stop in held_out:
        for other, a, b in trained:
            assert name != other or stop <= a or b <= start, (trained, held_out)
    if "test" in entry.splits:  # reported at the best step, never selected on
        assert config.evals.test.split == "test"


def test_a_variant_is_chosen_with_a_colon_and_an_unknown_one_is_named():
    plain = config_lib.load_config(f"{ROOT}/experiments/rnn_dates.py:seq2seq")
    attention = config_lib.load_config(f"{ROOT}/experiments/rnn_dates.py:bahdanau")
    assert plain.experiment == "seq2seq_dates" and plain.model.name == "seq2seq"
    assert attention.experiment == "bahdanau_dates" and "attention_dim" in attention.model
    # No suffix: the file's default variant.
    default = config_lib.load_config(ROOT / "experiments" / "rnn_dates.py")
    assert default.to_dict() == attention.to_dict()
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.load_config(f"{ROOT}/experiments/rnn_dates.py:lstm")
    message = str(err.value)
    assert "has no variant 'lstm'; its variants: bahdanau, seq2seq" in message
    assert "\n" not in message
    with pytest.raises(config_lib.ConfigError, match="has no variants, so ':big' cannot be read"):
        config_lib.load_config(f"{ROOT}/experiments/vit_digits.py:big")
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.load_config(f"{ROOT}/experiments/nope.py:x")


def test_derived_experiments_load_from_any_working_directory(tmp_path):
    # se_resnet_digits derives with `from experiments.resnet_digits import ...`; from another
    # directory `experiments` is importable only because load_config puts its root on sys.path.
    code = (
        "from attn_jax import config\n"
        f"c = config.load_config({str(ROOT / 'experiments' / 'se_resnet_digits.py')!r})\n"
        f"d = config.load_config({str(ROOT / 'experiments' / 'rnn_dates.py')!r} + ':seq2seq')\n"
        "print(c.experiment, c.model.block_attention, d.experiment)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["se_resnet_digits", "se", "seq2seq_dates"]


def test_epochs_count_the_training_split_without_the_held_out_part(cfg):
    spec = dataset_info(cfg.data)
    assert cfg.data.train_split == "train[:90%]" and spec.num_examples["train[:90%]"] == 1294
    steps = config_lib.resolve_total_steps(cfg, spec.num_examples[cfg.data.train_split])
    assert steps == math.ceil(300 * 1294 / 128) == 3033
    # The rule that an explicit --config.total_steps wins: tests/train/test_workdir.py.


def test_the_retired_accumulation_knob_names_its_replacement(cfg):
    with pytest.raises(config_lib.ConfigError, match="set --config.microbatches=N instead"):
        config_lib.apply_overrides(cfg, ["--config.optim.grad_accum_steps=4"])
    # An older run's config.json carries the key at 1: it loads and validates.
    text = config_lib.to_json(cfg).replace(
        '"grad_clip_norm"', '"grad_accum_steps": 1, "grad_clip_norm"'
    )
    old = config_lib.from_json(text)
    assert old.optim.grad_accum_steps == 1
    config_lib.validate(old)
    old.optim.grad_accum_steps = 4
    with pytest.raises(config_lib.ConfigError, match="grad_accum_steps is retired"):
        config_lib.validate(old)


def test_evaluator_overrides_set_a_period_or_add_an_evaluator_and_eval_split_is_refused(cfg):
    config_lib.apply_overrides(
        cfg, ["--config.evals.validation.every=7", "--config.evals.small.split=test[:50]"]
    )
    assert cfg.evals.validation.every == 7 and cfg.evals.small.split == "test[:50]"
    assert "every" not in cfg.evals.test  # runs every config.eval_every
    with pytest.raises(config_lib.ConfigError, match="set --config.evals.<name>.split instead"):
        config_lib.apply_overrides(cfg, ["--config.data.eval_split=test[:10]"])
    with pytest.raises(config_lib.ConfigError, match="unknown config key config.evals.test.spilt"):
        config_lib.apply_overrides(cfg, ["--config.evals.test.spilt=test"])


def test_override_types(cfg):
    config_lib.apply_overrides(
        cfg,
        [
            "--config.optim.lr=3e-4",
            "--config.model.depth=2",
            "--config.data.augment=false",
            "config.model.variant=B/16",
            "--config.optim.lr=1",
        ],
    )
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.depth == 2 and cfg.data.augment is False and cfg.model.variant == "B/16"


@pytest.mark.parametrize(
    "arg, expected",
    [
        (
            "--config.optim.lrr=1",
            "unknown config key config.optim.lrr; nearest valid keys: config.optim.lr",
        ),
        ("--config.modle.depth=3", "nearest valid keys: config.model.depth"),
        ("--config.optim.lr=fast", "config.optim.lr expects float, got 'fast'"),
        ("--config.model.depth=2.5", "config.model.depth expects int"),
        ("--config.data.augment=maybe", "config.data.augment expects true or false"),
        ("--optim.lr=1", "write it as --config.group.key=value"),
    ],
)
def test_bad_overrides_name_the_key(cfg, arg, expected):
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.apply_overrides(cfg, [arg])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_json_round_trip_keeps_values_and_overridability(cfg, tmp_path):
    config_lib.save(cfg, tmp_path / "config.json")
    back = config_lib.load_json(tmp_path / "config.json")
    assert back.to_dict() == cfg.to_dict()
    config_lib.apply_overrides(back, ["--config.data.data_dir=/somewhere", "--config.optim.lr=0.5"])
    assert back.data.data_dir == "/somewhere" and back.optim.lr == 0.5


def test_missing_config_file_and_missing_keys(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.load_config(tmp_path / "nope.py")
    (tmp_path / "bad.py").write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict({'seed': 0})\n"
    )
    with pytest.raises(config_lib.ConfigError, match="lacks the required keys"):
        config_lib.load_config(tmp_path / "bad.py")


def test_epochs_convert_to_steps(cfg):
    cfg.num_epochs = 2
    assert config_lib.resolve_total_steps(cfg, 1438) == 23  # ceil(2 * 1438 / 128)
    cfg.num_epochs = None
    cfg.total_steps = 7
    assert config_lib.resolve_total_steps(cfg, 1438) == 7
