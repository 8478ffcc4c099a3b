"""Experiment tracking: the run's curves in TensorBoard (and MLflow), from the run directory.

The run directory is the source of truth (metrics.jsonl, each round's train/log.jsonl), so the
event files are derived from it after every round rather than streamed: `RUN/tensorboard/` is
written afresh into a temporary folder and swapped in, so a killed and resumed run has every
point exactly once, and curves from every round line up. Steps: optimizer steps count on
across rounds (round 2's first step follows round 1's last) for `train/*`; the round number for
everything measured once per round. `tensorboard --logdir RUN/tensorboard` shows them.

MLflow (`tracking.mlflow.experiment`) and W&B (`tracking.wandb.project`) are services, not
folders to rebuild: each round's new points are sent once, to one tracker run per run
directory (its id kept in RUN/tracking/<tracker>.json with the last round and step sent), so
a resumed or extended run continues the same curves. A kill between sending and saving that
state may send one round's points twice; everything else is sent exactly once.
"""

from __future__ import annotations

import importlib
import json
import secrets
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from cut_loop.config import flat_fields
from cut_loop.errors import CutLoopError
from cut_loop.offline import step_rows
from cut_loop.rundir import RunDir, atomic_write_json

# Per-step fields of the trainer's log that are bookkeeping, not curves.
_NOT_CURVES = {"step", "epoch"}
# Eval-row fields drawn per judge, and the per-round fields of the judge/train/time rows.
_EVAL = ("acceptance_rate", "delta_vs_start", "mean_score", "mean_response_tokens",
         "finished_fraction", "logprob_change_vs_start")  # fmt: skip
_ROUND = {
    "judge": ("acceptance_rate", "unacceptable", "failed", "mean_score"),
    "train": (
        "sample_mean_tokens",
        "sample_median_tokens",
        "sample_p90_tokens",
        "sample_finished_fraction",
        "loss",
        "steps",
        "examples",
    ),
}


# (tag, value, step, wall time): one point of a curve.
Point = tuple[str, float, int, float]


def scalars(rd: RunDir, rows: list[dict[str, Any]]) -> Iterator[Point]:
    """(tag, value, step, wall time) for every point of the run, from its files."""
    for row in rows:
        k, when = row["round"], _walltime(row.get("finished"))
        if row["kind"] == "eval":
            label = row.get("judge") or "eval"
            for key in _EVAL:
                if isinstance(row.get(key), (int, float)):
                    yield f"eval/{label}/{key}", float(row[key]), k, when
        elif row["kind"] in _ROUND:
            for key in _ROUND[row["kind"]]:
                if isinstance(row.get(key), (int, float)):
                    yield f"round/{row['kind']}_{key}", float(row[key]), k, when
            for key, value in (row.get("usage") or {}).items():
                yield f"judge/{key}", float(value), k, when
            for kind, n in (row.get("failures_by_kind") or {}).items():
                yield f"judge/failed_{kind}", float(n), k, when
        elif row["kind"] == "time":
            for key, value in row.items():
                if key.endswith(("_seconds", "_per_s")) and value is not None:
                    yield f"time/{key}", float(value), k, when
    offset = 0
    for k in rd.iter_round_numbers():
        if not RunDir.is_done(rd.round_dir(k), "train"):
            break  # a round in training: its curve is drawn once it is done
        steps = step_rows(rd.round_dir(k) / "train" / "log.jsonl")
        for row in steps:
            for key, value in row.items():
                if key not in _NOT_CURVES and isinstance(value, (int, float)):
                    yield f"train/{key}", float(value), offset + row["step"], 0.0
        offset += max((r["step"] for r in steps), default=0)


def write_tensorboard(rd: RunDir, points: list[Point], config_yaml: str) -> Path:
    """Rebuild RUN/tensorboard/ from the run's points (`scalars`; see the module docstring)."""
    from torch.utils.tensorboard import SummaryWriter

    out = rd.root / "tensorboard"
    tmp = rd.root / ".tensorboard.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(tmp))
    try:
        writer.add_text("config", f"```\n{config_yaml}\n```", 0)
        for tag, value, step, when in points:
            writer.add_scalar(tag, value, step, walltime=when or None)
    finally:
        writer.close()
    old = rd.root / ".tensorboard.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def check_trackers(cfg: Any) -> None:
    """Refuse up front (before the run directory is touched) a tracker that cannot run."""
    wanted = [("mlflow", cfg.tracking.mlflow.experiment, "mlflow-skinny"),
              ("wandb", cfg.tracking.wandb.project, "wandb")]  # fmt: skip
    for module, on, package in wanted:
        if not on:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            raise CutLoopError(
                f"tracking.{module} is set, but {module} is not installed (pip install {package})"
            ) from None


def sync_trackers(rd: RunDir, points: list[Point], cfg: Any) -> list[str]:
    """Send MLflow and W&B the points (`scalars`) they have not had yet (see the module
    docstring); returns one line per tracker that failed (the loop warns and goes on)."""
    trouble = []
    for name, on, send in (("mlflow", cfg.tracking.mlflow.experiment, _send_mlflow),
                           ("wandb", cfg.tracking.wandb.project, _send_wandb)):  # fmt: skip
        if not on:
            continue
        state_path = rd.root / "tracking" / f"{name}.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        last_round, last_step = state.get("round", -1), state.get("train_step", 0)
        new = [p for p in points if p[2] > (last_step if _per_step(p[0]) else last_round)]
        if not new:
            continue  # nothing since the last send (a re-run of a finished run)
        try:
            run_id = send(rd, cfg, state.get("run_id"), new)
        except Exception as e:  # a tracking service's trouble must not stop the loop
            trouble.append(f"tracking.{name}: {str(e).splitlines()[0] if str(e) else e!r}")
            continue
        rounds = [p[2] for p in points if not _per_step(p[0])]
        steps = [p[2] for p in points if _per_step(p[0])]
        atomic_write_json(state_path, {
            "run_id": run_id, "round": max(rounds, default=last_round),
            "train_step": max(steps, default=last_step),
        })  # fmt: skip
    return trouble


def _per_step(tag: str) -> bool:
    return tag.startswith("train/")


def _send_mlflow(rd: RunDir, cfg: Any, run_id: str | None, new: list[Point]) -> str:
    import mlflow

    ml = cfg.tracking.mlflow
    if ml.tracking_uri:
        mlflow.set_tracking_uri(ml.tracking_uri)
    mlflow.set_experiment(ml.experiment)
    with mlflow.start_run(run_id=run_id, run_name=rd.root.name) as run:
        if run_id is None:
            mlflow.log_params({k: str(v)[:500] for k, v in flat_fields(cfg.to_dict()).items()})
        for tag, value, step, _ in new:
            mlflow.log_metric(tag, value, step=step)
        return str(run.info.run_id)


def _send_wandb(rd: RunDir, cfg: Any, run_id: str | None, new: list[Point]) -> str:
    """One W&B run per run directory, resumed by id; `train/*` on the `train_step` axis,
    everything else on `round` (W&B's own step stays internal)."""
    import wandb

    wb = cfg.tracking.wandb
    folder = rd.root / "tracking"
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=wb.project, entity=wb.entity or None, mode=wb.mode or None,
        id=run_id or secrets.token_hex(4), resume="allow", dir=str(folder),
        name=rd.root.name, config=cfg.to_dict(),
    )  # fmt: skip
    try:
        run.define_metric("round")
        run.define_metric("train_step")
        run.define_metric("train/*", step_metric="train_step")
        for prefix in ("eval/*", "round/*", "judge/*", "time/*"):
            run.define_metric(prefix, step_metric="round")
        by_axis: dict[tuple[str, int], dict[str, float]] = {}
        for tag, value, step, _ in new:
            axis = "train_step" if _per_step(tag) else "round"
            by_axis.setdefault((axis, step), {})[tag] = value
        for (axis, step), values in sorted(by_axis.items()):
            run.log({axis: step, **values})
        return str(run.id)
    finally:
        run.finish()


def _walltime(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
