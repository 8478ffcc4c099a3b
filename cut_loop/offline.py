"""`cutloop train`: one training run on a file of judged responses (CUT's offline alignment).

The file is a JSON list of {"instruction", "input", "output", "judgment"[, "score"]} objects,
the format of the CUT authors' released rounds (../shared/data/cut_online/iterK.json):
`judgment` null means the judge found the response acceptable, else it is the critique. As in
the reference, a `score` >= 7 makes a response acceptable whatever its judgment. Optional
`id` names a row (default: its index); responses to one instruction (the same `prompt_id`, else
the same instruction and input) form one group for the ranking losses (RRHF, DPO). Other keys
are ignored.

The output directory works like a run directory: `config.yaml` (the resolved config), `train/`
(resumable checkpoints and `log.jsonl`), `model/` (the trained policy, a Hugging Face
directory), `summary.json` (what the command printed, written last). Re-running the same
command resumes an interrupted training, or prints the summary of a finished one.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

from cut_loop.config import RunConfig, config_from_dict, defining_differences, load_yaml
from cut_loop.errors import CutLoopError
from cut_loop.training.base import Triplet

ACCEPT_SCORE = 7.0  # the reference: score >= 7 counts as acceptable
_NOT_COMPONENTS = {"step", "epoch", "lr", "grad_norm", "tokens", "seconds", "tokens_per_s"}


def load_cut_file(path: Path) -> list[Triplet]:
    """The rows of a CUT-format file as triplets; any problem is one CutLoopError line naming
    the file and the first bad rows."""
    path = Path(path)
    if path.is_dir():
        raise CutLoopError(f"{path}: --data is a folder; give the CUT-format JSON file in it")
    if not path.is_file():
        raise CutLoopError(f"{path}: data file not found")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CutLoopError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise CutLoopError(f"{path}: not UTF-8 text") from None
    if not isinstance(rows, list) or not rows:
        raise CutLoopError(
            f"{path}: expected a non-empty JSON list of"
            " {instruction, input, output, judgment[, score]} objects"
        )
    triplets, errors, seen = [], [], set()
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem is None and str(row.get("id", i)) in seen:
            problem = f"duplicate id {row.get('id', i)!r}"
        if problem:
            errors.append(f"row {i}: {problem}")
            continue
        seen.add(str(row.get("id", i)))
        triplets.append(_triplet(row, i))
    if errors:
        more = f" (and {len(errors) - 3} more bad rows)" if len(errors) > 3 else ""
        raise CutLoopError(f"{path}: " + "; ".join(errors[:3]) + more)
    return triplets


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not an object"
    for key in ("instruction", "output", "judgment"):
        if key not in row:
            return f"missing {key!r}"
    if not isinstance(row["instruction"], str) or not row["instruction"].strip():
        return "'instruction' must be a non-empty string"
    if not isinstance(row["output"], str):
        return "'output' must be a string"
    if not isinstance(row.get("input") or "", str):
        return "'input' must be a string or null"
    judgment = row["judgment"]
    if judgment is not None and (not isinstance(judgment, str) or not judgment.strip()):
        return "'judgment' must be the critique text, or null for an acceptable response"
    score = row.get("score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
    ):
        return "'score' must be a number or null"
    if not isinstance(row.get("id", 0), (str, int)):
        return "'id' must be a string or an integer"
    return None


def _triplet(row: dict[str, Any], index: int) -> Triplet:
    instruction, input = row["instruction"], row.get("input") or ""
    score = None if row.get("score") is None else float(row["score"])
    judgment = None if score is not None and score >= ACCEPT_SCORE else row["judgment"]
    group = row.get("prompt_id")
    if group is None:
        text = f"{instruction}\0{input}".encode()
        group = "prompt-" + hashlib.sha256(text).hexdigest()[:16]
    return Triplet(
        id=str(row.get("id", index)),
        instruction=instruction,
        input=input,
        response=row["output"],
        judgment=judgment,
        score=score,
        prompt_id=str(group),
    )


def check_output_dir(output: Path, cfg: RunConfig) -> None:
    """An output directory belongs to one training: once it holds training state (a
    checkpoint, or a finished model), refuse to continue it with a changed run-defining field."""
    output = Path(output)
    saved_path = output / "config.yaml"
    started = (output / "summary.json").exists() or any(output.glob("train/checkpoint-*"))
    if not (saved_path.exists() and started):
        return
    saved = config_from_dict(load_yaml(saved_path), source=str(saved_path))
    changed = defining_differences(saved, cfg)
    if changed:
        key, was, now = changed[0]
        raise CutLoopError(
            f"{saved_path}: this output was trained with {key}={was!r}, not {now!r};"
            " use another --output"
        )


def train_offline(data: Path, cfg: RunConfig, output: Path) -> dict[str, Any]:
    """Train `cfg.model` on `data` with `cfg.loss` into `output` (see the module docstring);
    returns the summary that `format_summary` prints. A finished output is not retrained: its
    saved summary comes back."""
    from cut_loop.config import save_config
    from cut_loop.generation.prompts import load_template
    from cut_loop.models import resolve_model
    from cut_loop.rundir import RunDir, atomic_write_text
    from cut_loop.training.torch_trainer import TorchTrainer

    if cfg.train.backend == "deepspeed":
        raise CutLoopError("train.backend=deepspeed: offline training runs the torch trainer")
    output = Path(output)
    RunDir(output).check_usable()
    triplets = load_cut_file(data)
    digest = hashlib.sha256(Path(data).read_bytes()).hexdigest()
    template = load_template(cfg.generation.template)
    check_output_dir(output, cfg)
    done = output / "summary.json"
    if done.exists():
        summary = json.loads(done.read_text())
        if summary["data_sha256"] != digest:
            raise CutLoopError(f"{output} was trained on other data; use another --output")
        return summary
    trainer = TorchTrainer(cfg.train, cfg.loss, template, seed=cfg.seed)  # checks loss options
    start_model = resolve_model(cfg.model)
    save_config(cfg, output / "config.yaml")
    result = trainer.train(triplets, Path(start_model), output / "train", output / "model")
    summary = {
        "data": str(data),
        "data_sha256": digest,
        "rows": len(triplets),
        "loss_name": cfg.loss.name,
        "steps": result.steps,
        "examples": result.examples,
        "counts": {k: v for k, v in result.metrics.items() if k not in ("loss", "resumed_from")},
        "model": str(output / "model"),
        **summarise_log(output / "train" / "log.jsonl"),
    }
    atomic_write_text(done, json.dumps(summary, indent=2) + "\n")  # marks the output finished
    # The policy is saved: the resumable trainer state (weights plus optimizer) has no use left.
    for checkpoint in (output / "train").glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    return summary


def step_rows(path: Path) -> list[dict[str, Any]]:
    """The trainer's log.jsonl, one row per optimizer step in step order (the last row per
    step counts: a resumed run re-logs the steps after its checkpoint)."""
    by_step: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line a kill cut short
                continue
            by_step[row["step"]] = row
    return [by_step[k] for k in sorted(by_step)]


def summarise_log(path: Path, window: int = 10) -> dict[str, Any]:
    """Per-step means of the loss and each component over the run, its first and its last
    `window` steps, and the throughput, from the trainer's log.jsonl (the last row per step
    counts: a resumed run re-logs the steps after its checkpoint)."""
    rows = step_rows(path)
    keys = [k for k in rows[0] if k not in _NOT_COMPONENTS] if rows else []
    components = {}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            components[key] = {
                "mean": sum(values) / len(values),
                "first": sum(values[:window]) / len(values[:window]),
                "last": sum(values[-window:]) / len(values[-window:]),
            }
    tokens = sum(r.get("tokens", 0) for r in rows)
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    return {
        "components": components,
        "last_step": rows[-1] if rows else None,
        "window": window,
        "tokens": tokens,
        "train_seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    """The lines `cutloop train` prints at the end."""
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
    lines = [
        f"trained {s['steps']} steps with loss {s['loss_name']} on {s['examples']} examples"
        f" ({counts}) from {s['rows']} rows of {s['data']}",
    ]
    if not s["steps"]:
        lines.append(f"nothing to train: {s['model']} is the starting model unchanged")
        return "\n".join(lines)
    w = s["window"]
    lines.append(f"{'per step':<24}{'mean':>10}{f'first {w}':>10}{f'last {w}':>10}")
    for key, v in s["components"].items():
        lines.append(f"{key:<24}{v['mean']:>10.4f}{v['first']:>10.4f}{v['last']:>10.4f}")
    flagged = s["components"].get("flagged_token_fraction")
    if flagged:
        lines.append(
            f"flagged-token fraction on Misalign examples: {flagged['mean']:.4f}"
            f" (tokens with p(judged)/p(plain) above the threshold; mean over steps)"
        )
    if s["tokens_per_s"]:
        lines.append(
            f"throughput: {s['tokens_per_s']:.1f} tokens/s"
            f" ({s['tokens']} tokens in {s['train_seconds']:.1f} s of training steps)"
        )
    lines.append(f"model: {s['model']}")
    return "\n".join(lines)
