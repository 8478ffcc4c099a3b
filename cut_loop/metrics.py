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
            k = int(folder.name.split("-")[1])
            # One row per eval judge; a marker from before eval judges is one unlabelled row.
            judged = info.get("judges", [{"judge": None, **info}])
            common = {"round": k, "kind": "eval", "finished": info["finished"]}
            common["eval_seconds"] = info.get("seconds")  # the whole evaluation, all judges
            rows += [{**common, **j} for j in judged]
    for k in rd.iter_round_numbers():
        folder = rd.round_dir(k)
        judged = RunDir.done_info(folder, "judge")
        trained = RunDir.done_info(folder, "train")
        if judged:
            rows.append({"round": k, "kind": "judge", **judged})
        if trained:
            rows.append({"round": k, "kind": "train", **trained})
        if RunDir.is_done(folder, "round"):
            rows.append({"round": k, "kind": "time", **stage_seconds(rd, k)})
    return rows


def stage_seconds(rd: RunDir, k: int) -> dict[str, float | None]:
    """Wall seconds of round k's stages (each from its DONE marker; None where a marker
    predates timings): generate, judge, train, and the evaluation of its policy; and the
    generation's tokens/s."""
    folder = rd.round_dir(k)
    info = {stage: RunDir.done_info(where, stage) or {}
            for stage, where in (("generate", folder), ("judge", folder), ("train", folder),
                                 ("eval", rd.eval_dir(k)))}  # fmt: skip
    out = {f"{stage}_seconds": marker.get("seconds") for stage, marker in info.items()}
    # Generation speed (a resumed stage's count covers the shards of every process).
    out["generate_tokens_per_s"] = info["generate"].get("tokens_per_s")
    return out


def write_metrics(rd: RunDir) -> list[dict[str, Any]]:
    rows = collect_metrics(rd)
    atomic_write_jsonl(rd.metrics_path, rows)
    return rows


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def _rate(row: dict[str, Any]) -> str:
    """`0.531 (0.41-0.65)`: a rate with its 95% interval."""
    if row.get("acceptance_rate") is None:
        return "-"
    ci = row.get("ci95")
    return f"{row['acceptance_rate']:.3f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")


def _delta(row: dict[str, Any]) -> str:
    """`+0.062 (-0.05, +0.17)`: the paired difference from round 0 with its 95% interval."""
    if row.get("delta_vs_start") is None:
        return "-"
    ci = row.get("delta_ci95")
    return f"{row['delta_vs_start']:+.3f}" + (f" ({ci[0]:+.2f}, {ci[1]:+.2f})" if ci else "")


def format_eval(row: dict[str, Any]) -> str:
    """One eval row as one log line."""
    tokens, finished = row.get("mean_response_tokens"), row.get("finished_fraction")
    drift = row.get("logprob_change_vs_start")
    return (
        f"{row.get('judge')}: acceptance {_rate(row)} of {row.get('n')}, vs round 0"
        f" {_delta(row)}; {_fmt(tokens, '.1f')} tokens, finished {_fmt(finished)}"
        + (f", log p of round-0 answers {drift:+.3f}" if drift is not None else "")
    )


def summary_table(rows: list[dict[str, Any]], title: str = "cut_loop run") -> Table:
    """Per round: what the training judge thought of the round's samples, training, and each
    eval judge's held-out acceptance (95% Wilson interval) and paired difference from round 0
    (95% bootstrap interval), with the held-out answers' length and finished share beside."""
    table = Table(title=title)
    # A paid judge's spend per round (rules and local judges report none: no column).
    paid = any((row.get("usage") or {}).get("cost_usd") for row in rows)
    judges = list(dict.fromkeys(r.get("judge") for r in rows if r["kind"] == "eval"))
    columns = ["round", "train acc.", "critiques", "steps", "last loss", "min"]
    for label in judges:
        name = label or "eval"
        columns += [f"{name} acc. (95% CI)", f"{name} Δ vs 0 (95% CI)"]
    columns += ["eval tokens", "eval finished", "Δ log p"]
    for name in columns + (["judge $"] if paid else []):
        table.add_column(name, justify="right")
    by_round: dict[int, dict[str, Any]] = {}
    for row in rows:
        slot = by_round.setdefault(row["round"], {"eval": {}})
        if row["kind"] == "eval":
            slot["eval"][row.get("judge")] = row
        else:
            slot[row["kind"]] = row
    for k in sorted(by_round):
        r = by_round[k]
        judge, train, evals = r.get("judge", {}), r.get("train", {}), r["eval"]
        # The round's wall time over its stages (round 0: the starting model's evaluation).
        parts = [v for key, v in r.get("time", {}).items() if key.endswith("_seconds")]
        if k == 0:
            parts = [e.get("eval_seconds") for e in evals.values()][:1]
        seconds = [v for v in parts if v is not None]
        cells = [
            str(k),
            _fmt(judge.get("acceptance_rate")),
            _fmt(judge.get("unacceptable")),
            _fmt(train.get("steps")),
            _fmt(train.get("loss"), ".4f"),
            _fmt(sum(seconds) / 60, ".1f") if seconds else "-",
        ]
        for label in judges:
            ev = evals.get(label, {})
            cells += [_rate(ev), _delta(ev)]
        first = next(iter(evals.values()), {})
        cells += [
            _fmt(first.get("mean_response_tokens"), ".1f"),
            _fmt(first.get("finished_fraction")),
            _fmt(first.get("logprob_change_vs_start"), "+.3f"),
        ]
        if paid:
            spent = [judge, *evals.values()]
            cost = sum((x.get("usage") or {}).get("cost_usd", 0.0) for x in spent)
            cells.append(f"{cost:.2f}" if cost >= 1 else f"{cost:.4f}")  # cents matter
        table.add_row(*cells)
    return table


def pairwise_table(rows: list[dict[str, Any]], title: str = "win rates") -> Table:
    """Per round: the win rate against the reference with its 95% bootstrap interval, the
    wins / ties / losses over both orders, how often the two orders agreed, and both lengths."""
    table = Table(title=title)
    columns = ["round", "vs", "win rate (95% CI)", "wins", "ties", "losses", "consistent",
               "chars", "ref. chars", "tokens"]  # fmt: skip
    for name in columns:
        table.add_column(name, justify="right")
    for row in rows:
        ci = row.get("ci95")
        rate = _fmt(row.get("win_rate"))
        table.add_row(
            str(row["round"]), str(row["reference"]),
            f"{rate} ({ci[0]:.2f}-{ci[1]:.2f})" if ci else rate,
            _fmt(row.get("wins")), _fmt(row.get("ties")), _fmt(row.get("losses")),
            _fmt(row.get("position_consistency"), ".2f"),
            _fmt(row.get("mean_response_chars"), ".0f"),
            _fmt(row.get("reference_mean_chars"), ".0f"),
            _fmt(row.get("mean_response_tokens"), ".1f"),
        )  # fmt: skip
    return table
