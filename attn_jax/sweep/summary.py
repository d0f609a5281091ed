"""Ranking sweep runs and writing `summary.csv` / `summary.md`.

A run is ranked only if it finished (`ok`) with a finite target metric. Everything else (a
diverged run, NaN or inf, a metric the run never reported, a failed, stopped, timed-out or pruned
run) comes after every ranked run, in run order: an overflowing loss must never make a run "best",
whatever the direction (inf is the largest accuracy, -inf the smallest loss).

Both files are replaced atomically (written beside, then renamed), so a reader watching a long
sweep never sees half a table.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from attn_jax.sweep.children import as_number, is_finite


def _order(record: dict, position: int) -> int:
    index = record.get("index")
    return index if isinstance(index, int) else position


def is_ranked(record: dict, target: str) -> bool:
    return record.get("status") == "ok" and is_finite(record.get(target))


def rank(records: Sequence[dict], target: str, mode: str) -> list[dict]:
    """Runs best first by `target` (`mode` "max" or "min"), then unranked runs in run order.

    Args:
      records: one dict per run with "status", the metrics and optionally "index" (run order;
        the position in `records` otherwise).
      target: the metric to rank by, e.g. "validation/accuracy".
      mode: "max" or "min".

    Returns:
      The same records, reordered; ties keep run order.
    """
    sign = -1.0 if mode == "max" else 1.0
    positioned = list(enumerate(records))
    ranked = [(i, r) for i, r in positioned if is_ranked(r, target)]
    rest = [(i, r) for i, r in positioned if not is_ranked(r, target)]
    ranked.sort(key=lambda ir: (sign * as_number(ir[1][target]), _order(ir[1], ir[0])))
    rest.sort(key=lambda ir: _order(ir[1], ir[0]))
    return [r for _, r in ranked + rest]


def best(records: Sequence[dict], target: str) -> dict | None:
    """The first of ranked `records` if it has a finite target, else None."""
    return records[0] if records and is_ranked(records[0], target) else None


def missing_target_message(records: Sequence[dict], target: str) -> str | None:
    """One line when no run reported a finite `target` (the ranking is then run order)."""
    if not records or any(is_finite(r.get(target)) for r in records):
        return None
    seen = sorted({k for r in records for k in r if "/" in k})
    hint = f"; the runs report {', '.join(seen)}" if seen else ""
    return (
        f"no run reported a finite {target} (config.target_metric), so the summary lists runs in "
        f"run order{hint}"
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _md_value(value: object) -> str:
    number = as_number(value)
    if number is None or isinstance(value, str):
        return "" if value is None else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{number:.4f}" if math.isfinite(number) else str(number)


def _replace(path: Path, text: str) -> None:
    """Writes `text` to `path` atomically: a temporary file in the same folder, then a rename.

    The temporary name carries the pid: several Optuna workers may write one sweep folder.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_summary(
    records: Sequence[dict], out_dir: Path, axes_keys: Sequence[str], target: str
) -> None:
    """Writes ranked `records` as out_dir/summary.csv (every metric) and summary.md (a table).

    Columns: rank (ranked runs only), run, status, the swept keys, the target metric, the other
    metrics, step (where the run ended: a stopped or pruned run's last step), error, workdir.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric_keys = sorted({k for r in records for k in r if "/" in k} - {target})
    columns = [
        "rank",
        "run",
        "status",
        *axes_keys,
        target,
        *metric_keys,
        "step",
        "error",
        "workdir",
    ]
    ranks = {}
    for i, r in enumerate(records, 1):
        ranks[id(r)] = i if is_ranked(r, target) else None

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        row = {**r, "rank": ranks[id(r)]}
        writer.writerow([_cell(row.get(c)) for c in columns])
    _replace(out_dir / "summary.csv", buffer.getvalue())

    head = ["rank", "run", "status", *axes_keys, target, "step", "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        rank_cell = ranks[id(r)]
        cells = [str(rank_cell) if rank_cell else "-", str(r.get("run", "")), r.get("status", "")]
        cells += [_cell(r.get(k)) for k in axes_keys]
        cells += [_md_value(r.get(target)), _cell(r.get("step"))]
        cells.append(str(r.get("error") or "").replace("|", "/").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    _replace(out_dir / "summary.md", "\n".join(lines) + "\n")
