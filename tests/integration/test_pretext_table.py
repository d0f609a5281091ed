"""scripts/pretext_table.py end to end on the smallest budget: the runs it makes and the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from xla_env import xla_flags

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pretext_table_runs_every_seed_and_chooses_the_probe_rate_on_validation(tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"), XLA_FLAGS=xla_flags(1))
    root = tmp_path / "table"
    cmd = [sys.executable, "scripts/pretext_table.py", "--root", str(root), "--only", "scratch"]
    cmd += ["--seeds", "0,1", "--set", "num_epochs=0", "--set", "total_steps=4"]
    cmd += ["--set", "eval_every=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    runs = {r["run"]: r for r in lines if "run" in r}
    # Two fine-tunes, both probe rates at seed 0, and seed 1 at the rate chosen on validation.
    probes0 = {k: v for k, v in runs.items() if k.startswith("scratch_linear_probe_s0_")}
    assert len(probes0) == 2 and {"scratch_finetune_s0", "scratch_finetune_s1"} <= set(runs)
    chosen = max(probes0, key=lambda k: probes0[k]["validation"])
    rate = chosen.rsplit("_", 1)[-1]
    assert f"scratch_linear_probe_s1_{rate}" in runs, sorted(runs)
    summary = next(r for r in lines if r.get("pretext") == "scratch")
    assert summary["linear_probe"]["tests"][0] == probes0[chosen]["test"]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| scratch | ")
