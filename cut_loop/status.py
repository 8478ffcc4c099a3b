"""`cutloop status`: what a run has done, what is left, and its per-round metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from cut_loop.config import config_from_dict, load_yaml
from cut_loop.errors import CutLoopError
from cut_loop.manifest import run_version_changes
from cut_loop.metrics import collect_metrics, summary_table
from cut_loop.rundir import RunDir, RunLock, read_jsonl
from cut_loop.stages import read_judgments


def _stage_cells(rd: RunDir, folder: Path, n: int, shard_size: int) -> list[str]:
    """generate / judge cells for a round or an eval folder."""
    if RunDir.is_done(folder, "generate"):
        gen = "done"
    else:
        shards = len(list((folder / "responses").glob("shard-*.jsonl")))
        gen = f"{shards}/{math.ceil(n / shard_size)} shards" if n else "-"
    if RunDir.is_done(folder, "judge"):
        judge = "done"
    else:
        judged = [j for j in read_judgments(folder / "judgments.jsonl").values() if not j.failed]
        judge = f"{len(judged)}/{n}" if judged or gen == "done" else "-"
    return [gen, judge]


def status_view(run_dir: Path) -> Group:
    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise CutLoopError(f"{run_dir}: not a cut_loop run directory (no config.yaml)")
    cfg = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    size = cfg.generation.shard_size
    table = Table(title=f"{run_dir}: {cfg.iterations} rounds planned, model {cfg.model}")
    for col in ("round", "sample", "generate", "judge", "train", "model", "eval"):
        table.add_column(col)
    eval_n = len(read_jsonl(rd.eval_instructions_path))
    table.add_row(
        "0 (start)",
        "-",
        *_stage_cells(rd, rd.eval_dir(0), eval_n, size),
        "-",
        "-",
        "done" if RunDir.is_done(rd.eval_dir(0), "eval") else "todo",
    )
    last = max([cfg.iterations, *rd.iter_round_numbers()])
    for k in range(1, last + 1):
        folder = rd.round_dir(k)
        n = len(read_jsonl(folder / "instructions.jsonl"))
        train = "done" if RunDir.is_done(folder, "train") else _train_progress(folder)
        table.add_row(
            str(k),
            str(n) if n else "todo",
            *_stage_cells(rd, folder, n, size),
            train,
            "saved" if (rd.model_dir(k) / "config.json").exists() else "-",
            "done" if RunDir.is_done(rd.eval_dir(k), "eval") else "todo",
        )
    views: list[Any] = [table, summary_table(collect_metrics(rd), title="metrics")]
    if (pid := RunLock(rd.root).holder()) is not None:
        last = rd.log_path.read_text().splitlines()[-1:] if rd.log_path.exists() else []
        doing = last[0].split(" ", 1)[-1] if last else "starting"
        views.insert(0, f"[bold]running now[/] (pid {pid}): {doing}")
    if changes := run_version_changes(rd.root):
        views.insert(0, f"[yellow]warning: resumed on other versions than the run started on:"
                        f" {'; '.join(changes)}[/]")  # fmt: skip
    # Re-scorings by `cutloop eval`, each beside the training record.
    for path in sorted((rd.root / "evals").glob("*/metrics.jsonl")):
        views.append(summary_table(read_jsonl(path), title=f"cutloop eval: {path.parent.name}"))
    return Group(*views)


def _train_progress(folder: Path) -> str:
    steps = [
        int(p.name.split("-")[1])
        for p in (folder / "train").glob("checkpoint-*")
        if p.name.split("-")[1].isdigit()
    ]
    return f"checkpoint at step {max(steps)}" if steps else "-"
