"""`cutloop export RUN --round K --format F`: a round's answers or triplets, for other tools.

- `alpaca-eval`: AlpacaEval's model-outputs JSON (a list of {instruction, output, generator,
  dataset}), so `alpaca_eval --model_outputs FILE` scores round K. The answers are the round's
  held-out answers, or, with `--instructions FILE` (AlpacaEval's own eval set, or any file
  `data.instructions` reads), round K's policy answers that file first under the run's eval
  decoding, into RUN/exports/ (resumable, like every generate stage).
- `cut`: the round's judged training responses in the CUT release format (a JSON list of
  {id, instruction, input, output, judgment}, judgment null when acceptable, plus score), which
  `cutloop train --data` and the CUT authors' code read; `jsonl`: the same rows, one per line.
  Failed judgments are left out, as the loop leaves them out of training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cut_loop.config import RunConfig, config_from_dict, load_yaml
from cut_loop.errors import CutLoopError
from cut_loop.rundir import RunDir, atomic_write_json, atomic_write_jsonl, read_jsonl

FORMATS = ("alpaca-eval", "cut", "jsonl")


def export(
    run_dir: Path,
    k: int,
    fmt: str,
    instructions: Path | None = None,
    output: Path | None = None,
) -> tuple[Path, int]:
    """Write round `k` of `run_dir` as `fmt` to `output` (default RUN/exports/...); returns
    the path and the number of rows."""
    if fmt not in FORMATS:
        raise CutLoopError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    if instructions is not None and fmt != "alpaca-eval":
        raise CutLoopError("--instructions: only with --format alpaca-eval")
    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise CutLoopError(f"{run_dir}: not a cut_loop run directory (no config.yaml)")
    cfg = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    if fmt == "alpaca-eval":
        rows = _alpaca_eval_rows(rd, cfg, k, instructions)
        path = output or rd.root / "exports" / f"round-{k:02d}-alpaca-eval.json"
        atomic_write_json(path, rows)
    else:
        rows = _triplet_rows(rd, k)
        suffix = "json" if fmt == "cut" else "jsonl"
        path = output or rd.root / "exports" / f"round-{k:02d}-triplets.{suffix}"
        if fmt == "cut":
            atomic_write_json(path, rows)
        else:
            atomic_write_jsonl(path, rows)
    return path, len(rows)


def _alpaca_eval_rows(
    rd: RunDir, cfg: RunConfig, k: int, instructions: Path | None
) -> list[dict[str, Any]]:
    from cut_loop.evaluation.heldout import stored_responses

    generator = f"{rd.root.name}-round-{k}"
    if instructions is None:
        folder = rd.eval_dir(k)
        if not RunDir.is_done(folder, "generate"):
            raise CutLoopError(f"{folder}: round {k} has no finished held-out answers")
        answers, dataset = stored_responses(folder), {}
        default = "cut_loop-heldout"
    else:
        answers, dataset = _answer_file(rd, cfg, k, instructions), _datasets(instructions)
        default = instructions.stem
    return [
        {
            "instruction": _joined(r["instruction"], r["input"]),
            "output": r["response"],
            "generator": generator,
            "dataset": dataset.get(_joined(r["instruction"], r["input"]), default),
        }
        for r in answers
        if r.get("source", "policy") == "policy"
    ]


def _answer_file(rd: RunDir, cfg: RunConfig, k: int, source: Path) -> list[dict[str, Any]]:
    """Round k's policy's answers to the instructions of `source`, generated once into
    RUN/exports/answers-<stem>-<hash>/round-KK/ (a changed file gets a new folder)."""
    from cut_loop.data.sources import load_instructions
    from cut_loop.evaluation.rescore import answer_with_round

    if not source.is_file():
        raise CutLoopError(f"--instructions {source}: no such file")
    if k and not (rd.model_dir(k) / "config.json").exists():
        raise CutLoopError(f"{rd.model_dir(k)}: round {k} has no saved model")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    folder = rd.root / "exports" / f"answers-{source.stem}-{digest}" / f"round-{k:02d}"
    pool = load_instructions(str(source))
    return answer_with_round(rd, cfg, k, pool, folder, f"export {k}")


def _datasets(source: Path) -> dict[str, str]:
    """AlpacaEval's eval set names each instruction's `dataset`; keep it where the file has it."""
    if source.suffix != ".json":
        return {}
    try:
        rows = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # load_instructions has said what is wrong by now
    if not isinstance(rows, list):
        return {}
    return {
        _joined(r["instruction"], r.get("input") or ""): r["dataset"]
        for r in rows
        if isinstance(r, dict) and isinstance(r.get("dataset"), str) and r.get("instruction")
    }


def _triplet_rows(rd: RunDir, k: int) -> list[dict[str, Any]]:
    from cut_loop.judging.base import DEFAULT_CRITIQUE
    from cut_loop.stages import read_judgments

    folder = rd.round_dir(k)
    if not RunDir.is_done(folder, "judge"):
        raise CutLoopError(f"{folder}: round {k} has no finished judgments")
    judgments = read_judgments(folder / "judgments.jsonl")
    rows = []
    for path in sorted((folder / "responses").glob("shard-*.jsonl")):
        for r in read_jsonl(path):
            j = judgments.get(r["id"])
            if j is None or j.failed:
                continue
            rows.append(
                {
                    "id": r["id"],
                    "instruction": r["instruction"],
                    "input": r["input"],
                    "output": r["response"],
                    "judgment": None if j.acceptable else (j.critique or DEFAULT_CRITIQUE),
                    "score": j.score,
                }
            )
    return rows


def _joined(instruction: str, input_: str) -> str:
    """AlpacaEval has one instruction field: an Alpaca input follows its instruction."""
    return f"{instruction}\n\n{input_}" if input_ else instruction
