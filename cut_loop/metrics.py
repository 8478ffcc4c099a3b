"""Run metrics, derived from the stage markers (the single source of truth), and the tables
`cutloop run` and `cutloop status` print."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cut_loop.rundir import RunDir, atomic_write_jsonl


def collect_metrics(rd: RunDir) -> list[dict[str, Any]]:
    """One row per finished evaluation and per finished round's judging/training."""
    rows: list[dict[str, Any]] = []
    evals = sorted(p for p in (rd.root / "eval").glob("round-[0-9][0-9]") if p.is_dir())
    for folder in evals:
        info = RunDir.done_info(folder, "eval")
        if info:
            rows.append({"round": int(folder.name.split("-")[1]), "kind": "eval", **info})
    for k in rd.iter_round_numbers():
        folder = rd.round_dir(k)
        judged = RunDir.done_info(folder, "judge")
        trained = RunDir.done_info(folder, "train")
        if judged:
            rows.append({"round": k, "kind": "judge", **judged})
        if trained:
            rows.append({"round": k, "kind": "train", **trained})
    return rows


def write_metrics(rd: RunDir) -> list[dict[str, Any]]:
    rows = collect_metrics(rd)
    atomic_write_jsonl(rd.metrics_path, rows)
    return rows


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def summary_table(rows: list[dict[str, Any]], title: str = "cut_loop run") -> Table:
    """Per round: what the judge thought of the round's samples, training, held-out eval."""
    table = Table(title=title)
    # A paid judge's spend per round (rules and local judges report none: no column).
    paid = any((row.get("usage") or {}).get("cost_usd") for row in rows)
    columns = ["round", "train acc.", "critiques", "steps", "last loss", "eval acc.", "eval score"]
    for name in columns + (["judge $"] if paid else []):
        table.add_column(name, justify="right")
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row["kind"]] = row
    for k in sorted(by_round):
        r = by_round[k]
        judge, train, ev = r.get("judge", {}), r.get("train", {}), r.get("eval", {})
        cells = [
            str(k),
            _fmt(judge.get("acceptance_rate")),
            _fmt(judge.get("unacceptable")),
            _fmt(train.get("steps")),
            _fmt(train.get("loss"), ".4f"),
            _fmt(ev.get("acceptance_rate")),
            _fmt(ev.get("mean_score"), ".2f"),
        ]
        if paid:
            cost = sum((x.get("usage") or {}).get("cost_usd", 0.0) for x in (judge, ev))
            cells.append(f"{cost:.2f}" if cost >= 1 else f"{cost:.4f}")  # cents matter
        table.add_row(*cells)
    return table
