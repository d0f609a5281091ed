"""After the first train step and the first evaluation, a run compiles nothing more: a run three
times as long (and with three times as many evaluations) compiles exactly the same programs."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import jax

from attn_jax import config as config_lib
from attn_jax.train import loop

ROOT = Path(__file__).resolve().parents[2]


class CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.names: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names[message.split()[1]] += 1


def compiled_programs(tmp_path: Path, steps: int) -> collections.Counter:
    config = config_lib.load_config(ROOT / "experiments" / "vit_digits.py")
    config_lib.apply_overrides(
        config,
        [
            f"--config.data.data_dir={tmp_path / 'tfds'}",
            f"--config.total_steps={steps}",
            "--config.batch_size=32",
            "--config.eval_batch_size=128",
            "--config.model.hidden_size=16",
            "--config.model.mlp_dim=32",
            "--config.model.depth=1",
            "--config.log_every=3",
            "--config.eval_every=5",
            "--config.checkpoint_every=5",
            "--config.plots=false",
        ],
    )
    log = CompileLog()
    logger = logging.getLogger("jax._src.interpreters.pxla")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            loop.train(config, tmp_path / f"run{steps}")
    finally:
        logger.removeHandler(log)
    return log.names


def test_a_longer_run_compiles_nothing_more(tmp_path):
    compiled_programs(tmp_path / "warm", 5)  # what a process compiles once (seeding, slicing)
    short = compiled_programs(tmp_path, 5)  # one evaluation
    long = compiled_programs(tmp_path, 15)  # three evaluations, three checkpoints, five logs
    assert short["jit(train_step)"] == 1 and short["jit(eval_step)"] == 1, short
    assert long == short, (short, long)
