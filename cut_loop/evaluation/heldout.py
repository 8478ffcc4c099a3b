"""The held-out evaluation of one policy: its eval judges, and the row each one reports.

Every round's policy answers the same held-out instructions (greedy by default), and each eval
judge scores those answers in a folder of its own (`eval/round-KK/judge-<label>/`), so a judge
added later, or by `cutloop eval`, never touches the others. A row carries the acceptance rate
with its Wilson interval and the paired difference from round 0 on the same instructions, with
the length and finished share beside it: a policy that wins by rambling less, or more, shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cut_loop.errors import CutLoopError
from cut_loop.evaluation.stats import paired_delta, wilson_interval
from cut_loop.judging.base import Judge, Judgment
from cut_loop.rundir import RunDir, read_jsonl
from cut_loop.stages import Response, judge_stage, read_judgments

if TYPE_CHECKING:
    from cut_loop.config import RunConfig


@dataclass(frozen=True)
class EvalJudge:
    """An eval judge and the label its rows and folders carry."""

    label: str
    judge: Judge


def judge_label(spec: str | Mapping[str, Any]) -> str:
    """A file-name-safe label for a judge spec: its name (a plugin `where:Name`: `Name`; a
    rubric file: its stem), with a mapping's `model` appended (`openai-gpt-4o`)."""
    name = spec if isinstance(spec, str) else str(spec["name"])
    if ":" in name:
        base = name.rpartition(":")[2]
    else:
        base = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    if isinstance(spec, Mapping) and spec.get("model"):
        base += f"-{Path(str(spec['model'])).name}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base)[:60]


def unique_labels(specs: Sequence[str | Mapping[str, Any]]) -> list[str]:
    """Labels for several specs, a repeated one numbered (`rules`, `rules-2`)."""
    labels: list[str] = []
    for spec in specs:
        label, n = judge_label(spec), 2
        while label in labels:
            label, n = f"{judge_label(spec)}-{n}", n + 1
        labels.append(label)
    return labels


def load_eval_judges(
    specs: Sequence[str | Mapping[str, Any]],
    training: EvalJudge,
    cache_dir: Path,
) -> list[EvalJudge]:
    """The eval judges of `specs` (empty: the training judge alone). Each gets a cache file of
    its own under `cache_dir`, so two judges never answer for each other."""
    from cut_loop.judging.registry import load_judge

    if not specs:
        return [training]
    judges = []
    for label, spec in zip(unique_labels(specs), specs, strict=True):
        options = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "name"}
        name = spec if isinstance(spec, str) else spec["name"]
        try:
            judge = load_judge(name, options, cache=cache_dir / f"judge-cache-{label}.jsonl")
        except CutLoopError as e:
            raise CutLoopError(f"eval.judges ({label}): {e}") from None
        judges.append(EvalJudge(label, judge))
    return judges


def verdicts(responses: Sequence[Response], judgments: Mapping[str, Judgment]) -> dict[str, int]:
    """prompt id -> 1 (acceptable) / 0 (unacceptable) for every answer with a verdict; failed
    or missing judgments are left out (never counted as either verdict)."""
    out = {}
    for r in responses:
        j = judgments.get(r["id"])
        if j is not None and not j.failed:
            out[r["prompt_id"]] = int(j.acceptable)
    return out


def eval_row(
    label: str,
    responses: Sequence[Response],
    judgments: Mapping[str, Judgment],
    start: Mapping[str, int],
    seed: int,
    resamples: int,
) -> dict[str, Any]:
    """What one eval judge says of one policy's held-out answers.

    `start` is round 0's `verdicts` under the same judge: `delta_vs_start` is the mean paired
    difference (this round minus round 0) over the instructions both have a verdict for, with
    its seeded percentile-bootstrap interval. `ci95` is the Wilson interval of the rate.
    `mean_response_tokens` and `finished_fraction` (answers that ended before the token limit)
    describe the answers themselves, whatever the judge thought."""
    now = verdicts(responses, judgments)
    n, ok = len(now), sum(now.values())
    paired = sorted(set(now) & set(start))
    delta = paired_delta([start[i] for i in paired], [now[i] for i in paired], seed, resamples)
    scores = [
        j.score for r in responses if (j := judgments.get(r["id"])) is not None
        and not j.failed and j.score is not None
    ]  # fmt: skip
    tokens = [r["num_tokens"] for r in responses if r.get("num_tokens") is not None]
    return {
        "judge": label,
        "n": n,
        "acceptable": ok,
        "unacceptable": n - ok,
        "failed": len(responses) - n,
        "acceptance_rate": ok / n if n else None,
        "ci95": list(ci) if (ci := wilson_interval(ok, n)) else None,
        "delta_vs_start": delta[0] if delta else None,
        "delta_ci95": list(delta[1]) if delta else None,
        "paired_n": len(paired),
        "mean_score": sum(scores) / len(scores) if scores else None,
        "mean_response_tokens": sum(tokens) / len(tokens) if tokens else None,
        "finished_fraction": (
            sum(bool(r["finished"]) for r in responses) / len(responses) if responses else None
        ),
    }


def stored_responses(folder: Path) -> list[Response]:
    """The answers a finished generate stage left in `folder/responses/`, in order."""
    return [r for p in sorted((folder / "responses").glob("shard-*.jsonl")) for r in read_jsonl(p)]


def start_verdicts(responses_folder: Path, judge_folder: Path) -> dict[str, int]:
    """Round 0's verdicts (answers in `responses_folder`, one judge's judgments in
    `judge_folder`): what every later round is paired with."""
    return verdicts(
        stored_responses(responses_folder), read_judgments(judge_folder / "judgments.jsonl")
    )


def score(
    folder: Path,
    responses: Sequence[Response],
    ej: EvalJudge,
    cfg: RunConfig,
    start: Mapping[str, int] | None,
    tag: str,
) -> dict[str, Any]:
    """Judge `responses` with `ej` in `folder` (resumable, free once done: `judge_stage`) and
    return its `eval_row`, paired with `start` (None: these are round 0's answers)."""
    judgments = judge_stage(folder, responses, ej.judge, cfg, tag)
    if start is None:
        start = verdicts(responses, judgments)
    row = eval_row(ej.label, responses, judgments, start, cfg.seed, cfg.eval.bootstrap_resamples)
    row["usage"] = (RunDir.done_info(folder, "judge") or {}).get("usage", {})
    return row
