"""The experiment of the sweep tests: read by the sweep (target metric, key checks) and by
fake_launcher.py, which trains nothing. `x` is the run's final validation accuracy;
`fake.modes` maps values of x to a misbehaviour, e.g. "0.5:diverge,0.9:hang"."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "fake"
    c.seed = 0
    c.batch_size = 1
    c.total_steps = 20
    c.log_every = 1
    c.eval_every = 5
    c.checkpoint_every = 5
    c.keep_checkpoints = 1
    c.target_metric = "validation/accuracy"
    c.target_mode = "max"
    c.x = 0.5
    c.model = ml_collections.ConfigDict({"name": "fake"})
    c.data = ml_collections.ConfigDict({"name": "fake"})
    c.optim = ml_collections.ConfigDict({"lr": 0.1})
    c.fake = ml_collections.ConfigDict()
    c.fake.step_time = 0.005  # seconds per step
    c.fake.modes = ""  # "x:mode,..." with mode in ok|diverge|fail|nan|hang|stubborn|bad
    return c
