"""Metrics to stdout, <workdir>/metrics.jsonl and TensorBoard event files (via tensorboardX, which
writes the event format with protobuf alone, so no TensorFlow is needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm


class MetricWriter:
    """Writes `{step, split, name: value...}` records; only process 0 writes files."""

    def __init__(
        self, workdir: str | Path, *, enabled: bool = True, resume_step: int | None = None
    ):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), flush_secs=10)

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint; drop their old records."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, split: str, metrics: dict[str, float], *, echo: bool = True) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({k: _plain(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name not in ("step", "split") and isinstance(value, int | float):
                self._tb.add_scalar(f"{split}/{name}", value, step)
        if echo:
            shown = " ".join(
                f"{k}={_fmt(v)}" for k, v in record.items() if k not in ("step", "split")
            )
            tqdm.write(f"[{split} step {step}] {shown}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v):
    v = float(v) if hasattr(v, "__float__") and not isinstance(v, int | bool) else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
