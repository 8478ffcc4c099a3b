"""Win rates against a reference answer: the AlpacaEval-style measure the CUT paper reports.

For every held-out instruction a comparing judge (one with `compare`, e.g. `openai`) sees a
round's answer and a reference answer twice, once in each order, so its taste for a position
cancels out: an instruction scores 1 when the round's answer wins both times, 0.5 on a split
and 0 when it loses both. The round's win rate is the mean over instructions, with a seeded
percentile-bootstrap interval; `position_consistency` (the share of instructions whose two
orders agree) says how much the judge's answers are worth, and the two answers' lengths stand
beside the rate, because LLM judges are known to prefer longer answers.

References: `start` (round 0's held-out answer: has the policy got better than it was?) and
`output` (the instruction source's own answer, e.g. Alpaca's text-davinci-003 outputs, as in
AlpacaEval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cut_loop.errors import CutLoopError
from cut_loop.evaluation.stats import mean_interval
from cut_loop.judging.base import Judgment, usage_totals
from cut_loop.judging.pairwise import PairItem
from cut_loop.progress import stage_bar
from cut_loop.rundir import RunDir, atomic_write_jsonl, read_jsonl
from cut_loop.stages import Response, read_judgments

REFERENCES = ("start", "output")


class Comparing(Protocol):
    def compare(self, pairs: Sequence[PairItem]) -> list[Judgment]: ...


def pairs_for(responses: Sequence[Response], references: Mapping[str, str]) -> list[PairItem]:
    """Two pairs per answer that has a reference: `<prompt id>|ab` (the answer shown first)
    and `<prompt id>|ba` (the reference first)."""
    out = []
    for r in responses:
        ref = references.get(r["prompt_id"])
        if ref is None:
            continue
        pid, args = r["prompt_id"], (r["instruction"], r["input"])
        out.append(PairItem(f"{pid}|ab", *args, r["response"], ref))
        out.append(PairItem(f"{pid}|ba", *args, ref, r["response"]))
    return out


def compare_stage(folder: Path, pairs: Sequence[PairItem], judge: Comparing, tag: str) -> dict:
    """A preference for every pair, in `folder/judgments.jsonl` with `DONE.judge`; a finished
    folder is read back (free). The judge's cache keeps every answer the moment it arrives, so
    a run stopped midway, or one with failed pairs, pays only for what is left when re-run."""
    path = folder / "judgments.jsonl"
    if RunDir.is_done(folder, "judge"):
        return read_judgments(path)
    compare = getattr(judge, "compare", None)
    if not callable(compare):
        raise CutLoopError(
            f"judge {type(judge).__name__} cannot compare two answers; --pairwise needs an LLM"
            " judge that does (openai: GPT-4 or any OpenAI-compatible server)"
        )
    with stage_bar(f"compare {tag}", len(pairs), 0, "pair") as bar:
        results = compare(list(pairs)) if pairs else []
        bar.advance(len(pairs))
    if [j.id for j in results] != [p.id for p in pairs]:
        raise CutLoopError(f"judge {type(judge).__name__}: one judgment per pair, in order")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(path, [j.to_dict() for j in results])
    failed = [j for j in results if j.failed]
    if failed:
        raise CutLoopError(
            f"{path}: {len(failed)} of {len(results)} comparisons failed (first:"
            f" {failed[0].error}); re-run the same command to retry only those"
        )
    RunDir.mark_done(folder, "judge", {"pairs": len(results), "usage": usage_totals(results)})
    return {j.id: j for j in results}


def win_row(
    label: str,
    reference: str,
    responses: Sequence[Response],
    references: Mapping[str, str],
    judgments: Mapping[str, Judgment],
    seed: int,
    resamples: int,
) -> dict[str, Any]:
    """One round's win rate against `reference` (see the module docstring)."""
    scores, answered = [], []
    for r in responses:
        ab, ba = judgments.get(f"{r['prompt_id']}|ab"), judgments.get(f"{r['prompt_id']}|ba")
        if ab is None or ba is None or ab.failed or ba.failed:
            continue
        scores.append((float(ab.score or 0) + 1 - float(ba.score or 0)) / 2)
        answered.append(r)
    rate = mean_interval(scores, seed, resamples)
    tokens = [r["num_tokens"] for r in answered if r.get("num_tokens") is not None]
    refs = [references[r["prompt_id"]] for r in answered]
    return {
        "judge": label,
        "reference": reference,
        "n": len(scores),
        "win_rate": rate[0] if rate else None,
        "ci95": list(rate[1]) if rate else None,
        "wins": sum(s == 1 for s in scores),
        "ties": sum(s == 0.5 for s in scores),
        "losses": sum(s == 0 for s in scores),
        "position_consistency": sum(s != 0.5 for s in scores) / len(scores) if scores else None,
        "mean_response_tokens": sum(tokens) / len(tokens) if tokens else None,
        "mean_response_chars": sum(len(r["response"]) for r in answered) / len(answered)
        if answered
        else None,
        "reference_mean_chars": sum(map(len, refs)) / len(refs) if refs else None,
    }


def reference_answers(
    reference: str, eval_instructions: Path, start_responses: Sequence[Response]
) -> dict[str, str]:
    """prompt id -> the reference answer for `reference` ("start" or "output")."""
    if reference == "start":
        return {r["prompt_id"]: r["response"] for r in start_responses}
    if reference != "output":
        raise CutLoopError(f"--pairwise {reference!r}: choose one of {', '.join(REFERENCES)}")
    out = {
        row["id"]: row["reference"] for row in read_jsonl(eval_instructions) if row.get("reference")
    }
    if not out:
        raise CutLoopError(
            f"{eval_instructions}: the held-out instructions carry no reference output"
            " (`output` in the source); use --pairwise start"
        )
    return out
