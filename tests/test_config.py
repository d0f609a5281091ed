"""Config loading and `--config.k=v` overrides: the errors a user sees before any work."""

from pathlib import Path

import pytest

from attn_jax import config as config_lib
from attn_jax import programs

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.py"))


@pytest.fixture
def cfg():
    return config_lib.load_config(ROOT / "experiments" / "vit_digits.py")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_has_the_required_keys(path):
    if "program" in config_lib.import_config(path):  # trains nothing: names a known program
        assert programs.load_program_config(path).program in programs.PROGRAMS
        return
    config = config_lib.load_config(path)
    for key in config_lib.REQUIRED_KEYS:
        assert key in config, f"{path.name} lacks {key}"
    for group in ("model", "data", "optim"):
        assert len(config[group]) > 0


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
