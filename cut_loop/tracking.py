"""Experiment tracking: the run's curves in TensorBoard (and MLflow), from the run directory.

The run directory is the source of truth (metrics.jsonl, each round's train/log.jsonl), so the
event files are derived from it after every round rather than streamed: `RUN/tensorboard/` is
written afresh into a temporary folder and swapped in, so a killed and resumed run has every
point exactly once, and curves from every round line up. Steps: optimizer steps count on
across rounds (round 2's first step follows round 1's last) for `train/*`; the round number for
everything measured once per round. `tensorboard --logdir RUN/tensorboard` shows them.

MLflow (`tracking.mlflow.experiment`) is a service, not a folder to rebuild: each round's new
points are sent once, to one MLflow run per run directory (its id kept in
RUN/tracking/mlflow.json with the last round and step sent), so a resumed or extended run
continues the same curves. A kill between sending and saving that state may send one round's
points twice (MLflow keeps both); everything else is sent exactly once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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
    "train": ("sample_mean_tokens", "sample_finished_fraction", "loss", "steps", "examples"),
}


def scalars(rd: RunDir, rows: list[dict[str, Any]]) -> Iterator[tuple[str, float, int, float]]:
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
                if key.endswith("_seconds") and value is not None:
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


def write_tensorboard(rd: RunDir, rows: list[dict[str, Any]], config_yaml: str) -> Path:
    """Rebuild RUN/tensorboard/ from the run's files (see the module docstring)."""
    from torch.utils.tensorboard import SummaryWriter

    out = rd.root / "tensorboard"
    tmp = rd.root / ".tensorboard.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    writer = SummaryWriter(log_dir=str(tmp))
    try:
        writer.add_text("config", f"```\n{config_yaml}\n```", 0)
        for tag, value, step, when in scalars(rd, rows):
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
    if cfg.tracking.mlflow.experiment:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise CutLoopError(
                "tracking.mlflow.experiment is set, but mlflow is not installed"
                " (pip install mlflow-skinny)"
            ) from None


def sync_mlflow(rd: RunDir, rows: list[dict[str, Any]], cfg: Any) -> None:
    """Send the points MLflow has not had yet (see the module docstring)."""
    import mlflow

    ml = cfg.tracking.mlflow
    state_path = rd.root / "tracking" / "mlflow.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    last_round, last_step = state.get("round", -1), state.get("train_step", 0)
    points = list(scalars(rd, rows))
    new = [p for p in points if p[2] > (last_step if p[0].startswith("train/") else last_round)]
    if ml.tracking_uri:
        mlflow.set_tracking_uri(ml.tracking_uri)
    mlflow.set_experiment(ml.experiment)
    with mlflow.start_run(run_id=state.get("run_id"), run_name=rd.root.name) as run:
        if "run_id" not in state:
            mlflow.log_params({k: str(v)[:500] for k, v in _flat(json.loads(json.dumps(
                cfg.to_dict()))).items()})  # fmt: skip
        for tag, value, step, _ in new:
            mlflow.log_metric(tag, value, step=step)
        run_id = run.info.run_id
    rounds = [p[2] for p in points if not p[0].startswith("train/")]
    steps = [p[2] for p in points if p[0].startswith("train/")]
    atomic_write_json(state_path, {
        "run_id": run_id, "round": max(rounds, default=last_round),
        "train_step": max(steps, default=last_step),
    })  # fmt: skip


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _walltime(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
