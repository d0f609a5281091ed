"""Metrics to stdout, <workdir>/metrics.jsonl and TensorBoard event files (via tensorboardX, which
writes the event format with protobuf alone, so no TensorFlow is needed).

metrics.jsonl is strict JSON, one object per line: a non-finite value is written as null and
named, with what it was, under "nonfinite" ({"loss": null, "nonfinite": {"loss": "nan"}}), since
NaN and Infinity are not JSON. A resumed run drops the records after its checkpoint (rewriting the
file through a temporary file and a rename, so a kill leaves the old or the new file, never half
of one) and tells TensorBoard to purge its events after that step; a torn last line, left by a
kill in the middle of a write, is dropped.
"""

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

        # purge_step: the event files' records after the checkpoint are replayed by this run.
        self._tb = SummaryWriter(
            str(Path(workdir) / "tensorboard"),
            flush_secs=10,
            purge_step=None if resume_step is None else resume_step + 1,
        )

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint; drop their old records."""
        if not self.path.exists():
            return
        kept = [json.dumps(r, allow_nan=False) for r in _records(self.path) if r["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def write(self, step: int, split: str, metrics: dict[str, float], *, echo: bool = True) -> None:
        if not self.enabled:
            return
        record = strict_record({"step": int(step), "split": split, **metrics})
        with self.path.open("a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
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
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "__float__") and not isinstance(v, int | bool | str):
        v = float(v)
    return v


def strict_record(record: dict) -> dict:
    """`record` (nested) with NaN/inf replaced by null and listed under "nonfinite"."""
    nonfinite: dict[str, str] = {}

    def clean(v, name):
        v = _plain(v)
        if isinstance(v, float) and not math.isfinite(v):
            nonfinite[name] = str(v)
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{name}.{k}" if name else k) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x, f"{name}[{i}]") for i, x in enumerate(v)]
        return v

    out = {k: clean(v, k) for k, v in record.items() if k != "nonfinite"}
    if nonfinite:
        out["nonfinite"] = {**record.get("nonfinite", {}), **nonfinite}
    return out


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line that does not parse (torn by a kill) is dropped."""
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            out.append(record)
    return out


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return _records(path) if path.exists() else []
