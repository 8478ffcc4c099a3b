"""`cutloop eval RUN --judge SPEC`: score a run's held-out answers with another judge.

Everything lands in `RUN/evals/<label>/`, beside the training record and never in it: per
round a judge folder (`round-KK/judgments.jsonl`, `DONE.judge`), the judge's own cache, and
`metrics.jsonl` with one row per round in the loop's eval-row format. Judging is resumable and
free once done (a finished round is read back, a paid answer is in the cache), so a re-run
costs nothing. `--generate` first answers the held-out set again with every round's policy,
under the decoding given with `--set eval.<field>=...`, into `round-KK/responses/`.

`--pairwise start|output` asks a comparing judge (openai) which of two answers is better
instead, every round's answer against round 0's or the source's own (evaluation/pairwise.py),
into `RUN/evals/<label>-vs-<reference>/`, one win-rate row per round.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cut_loop.config import EvalConfig, RunConfig, config_from_dict, load_yaml, parse_set
from cut_loop.data.records import Instruction
from cut_loop.errors import CutLoopError
from cut_loop.evaluation.heldout import (
    EvalJudge,
    judge_label,
    score,
    start_verdicts,
    stored_responses,
)
from cut_loop.evaluation.pairwise import compare_stage, pairs_for, reference_answers, win_row
from cut_loop.generation.base import SamplingParams
from cut_loop.judging.base import close_judge
from cut_loop.rundir import RunDir, RunLock, atomic_write_jsonl, read_jsonl

_DECODING = ("temperature", "top_p", "max_new_tokens", "bootstrap_resamples")


def split_sets(sets: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set`s into (eval decoding fields, the judge's own options)."""
    decoding, options = {}, {}
    for assignment in sets:
        key, value = parse_set(assignment)
        if key.startswith("eval."):
            field = key.removeprefix("eval.")
            if field not in _DECODING:
                raise CutLoopError(
                    f"--set {key}: cutloop eval takes eval.{', eval.'.join(_DECODING)}"
                )
            decoding[field] = value
        else:
            options[key] = value
    return decoding, options


def rescore(
    run_dir: Path,
    spec: str,
    sets: list[str],
    generate: bool = False,
    pairwise: str | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Score every finished held-out round of `run_dir` with judge `spec`; returns the output
    folder and its rows (round 0 first, each paired with round 0 as the loop's rows are).
    With `pairwise`, win rates against that reference instead (see `compare_rounds`)."""
    from cut_loop.judging.registry import load_judge

    if pairwise is not None:
        if generate:
            raise CutLoopError("--pairwise compares the stored answers: run --generate apart")
        return compare_rounds(run_dir, spec, sets, pairwise)
    rd, cfg, rounds = _finished_run(run_dir)
    decoding, options = split_sets(sets)
    if decoding and not generate:
        raise CutLoopError("--set eval.<decoding>: only with --generate (stored answers are fixed)")
    cfg = dataclasses.replace(cfg, eval=_with(cfg.eval, decoding))
    label = judge_label({"name": spec, **options})
    if generate:
        label += (
            "-gen-" + "-".join(f"{k}{v}" for k, v in sorted(decoding.items()))
            if decoding
            else "-gen"
        )
    out = rd.root / "evals" / label
    judge = load_judge(spec, options, cache=out / "judge-cache.jsonl")
    ej = EvalJudge(label, judge)
    rows: list[dict[str, Any]] = []
    try:
        with RunLock(out):
            for k in rounds:
                folder = out / f"round-{k:02d}"
                if generate:
                    responses = _regenerate(rd, cfg, k, folder)
                    start_answers = out / "round-00"
                else:
                    responses = stored_responses(rd.eval_dir(k))
                    start_answers = rd.eval_dir(0)
                start = start_verdicts(start_answers, out / "round-00") if k else None
                row = score(folder, responses, ej, cfg, start, f"eval {k} {label}")
                rows.append({"round": k, "kind": "eval", **row})
            atomic_write_jsonl(out / "metrics.jsonl", rows)
    finally:
        close_judge(judge)
    return out, rows


def compare_rounds(
    run_dir: Path, spec: str, sets: list[str], reference: str
) -> tuple[Path, list[dict[str, Any]]]:
    """Every finished held-out round's answers against `reference` ("start": round 0's, which
    round 0 itself is not compared with; "output": the source's own answers), each pair in both
    orders, by judge `spec`; rows of `win_row`, one per round, in `<label>-vs-<reference>/`."""
    from cut_loop.judging.registry import load_judge

    rd, cfg, rounds = _finished_run(run_dir)
    decoding, options = split_sets(sets)
    if decoding:
        raise CutLoopError("--set eval.<decoding>: --pairwise compares the stored answers")
    references = reference_answers(
        reference, rd.eval_instructions_path, stored_responses(rd.eval_dir(0))
    )
    if reference == "start":
        rounds = rounds[1:]
    label = judge_label({"name": spec, **options})
    out = rd.root / "evals" / f"{label}-vs-{reference}"
    judge = load_judge(spec, options, cache=out / "judge-cache.jsonl")
    rows: list[dict[str, Any]] = []
    try:
        with RunLock(out):
            for k in rounds:
                folder = out / f"round-{k:02d}"
                responses = stored_responses(rd.eval_dir(k))
                pairs = pairs_for(responses, references)
                judgments = compare_stage(folder, pairs, judge, f"{k} vs {reference}")
                row = win_row(
                    label, reference, responses, references, judgments, cfg.seed,
                    cfg.eval.bootstrap_resamples,
                )  # fmt: skip
                usage = (RunDir.done_info(folder, "judge") or {}).get("usage", {})
                rows.append({"round": k, "kind": "pairwise", **row, "usage": usage})
            atomic_write_jsonl(out / "metrics.jsonl", rows)
    finally:
        close_judge(judge)
    return out, rows


def _finished_run(run_dir: Path) -> tuple[RunDir, RunConfig, list[int]]:
    """The run, its saved config, and the rounds whose held-out answers are all generated
    (round 0 first: every comparison needs it)."""
    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise CutLoopError(f"{run_dir}: not a cut_loop run directory (no config.yaml)")
    cfg = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    rounds = [k for k in _eval_rounds(rd) if RunDir.is_done(rd.eval_dir(k), "generate")]
    if not rounds or rounds[0] != 0:
        raise CutLoopError(f"{run_dir}: no finished held-out answers of round 0 to compare with")
    return rd, cfg, rounds


def _with(ev: EvalConfig, decoding: dict[str, Any]) -> EvalConfig:
    tree = {**dataclasses.asdict(ev), **decoding}
    return config_from_dict({"eval": tree}, source="--set").eval


def _eval_rounds(rd: RunDir) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (rd.root / "eval").glob("round-[0-9][0-9]"))


def _regenerate(rd: RunDir, cfg: RunConfig, k: int, folder: Path) -> list[dict[str, Any]]:
    """Round k's policy answers the held-out set again under `cfg.eval`'s decoding."""
    eval_set = [Instruction.from_dict(r) for r in read_jsonl(rd.eval_instructions_path)]
    return answer_with_round(rd, cfg, k, eval_set, folder, f"eval {k}")


def answer_with_round(
    rd: RunDir, cfg: RunConfig, k: int, instructions: list[Instruction], folder: Path, label: str
) -> list[dict[str, Any]]:
    """Round k's policy (k = 0: the starting model) answers `instructions` under `cfg.eval`'s
    decoding and the run's template, into `folder` (a resumable generate stage)."""
    from transformers import AutoTokenizer

    from cut_loop.generation.factory import make_generator
    from cut_loop.generation.prompts import load_template
    from cut_loop.models import resolve_model
    from cut_loop.stages import generate_stage

    model = resolve_model(cfg.model) if k == 0 else str(rd.model_dir(k))
    template = load_template(cfg.generation.template)
    tokenizer = AutoTokenizer.from_pretrained(model) if template.chat else None
    ev, gen = cfg.eval, cfg.generation
    params = SamplingParams(
        max_new_tokens=ev.max_new_tokens or gen.max_new_tokens, temperature=ev.temperature,
        top_p=ev.top_p, seed=cfg.seed, stop=tuple(gen.stop),
    )  # fmt: skip
    return generate_stage(
        folder, instructions, params, template, tokenizer, lambda: make_generator(gen, model),
        label, "eval", gen.shard_size,
    )  # fmt: skip
