"""The resumable stages a round (and an evaluation) is made of: generate, then judge.

Each stage reads what its folder already holds, does only the missing work, and marks itself
done. Files are the only state: a killed process leaves finished shards and judgments behind,
and the next run picks up from them.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from cut_loop.config import RunConfig
from cut_loop.data.records import Instruction
from cut_loop.errors import CutLoopError
from cut_loop.generation.base import Completion, Generator, SamplingParams
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.judging.base import (
    BUDGET_REACHED,
    Judge,
    JudgeItem,
    Judgment,
    failure_kind,
    judge_batch,
    usage_totals,
)
from cut_loop.progress import stage_bar
from cut_loop.rundir import JsonlAppender, RunDir, atomic_write_jsonl, read_jsonl

# {"id", "prompt_id", "instruction", "input", "response", "finished", "num_tokens", "source"}
Response = dict[str, Any]


def shard_seed(seed: int, tag: str, shard: int) -> int:
    """A per-shard sampling seed, so a resumed shard draws the same samples as the lost one."""
    digest = hashlib.sha256(f"{seed}/{tag}/{shard}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def generate_stage(
    folder: Path,
    instructions: Sequence[Instruction],
    params: SamplingParams,
    template: PromptTemplate,
    tokenizer: Any,
    load_generator: Callable[[], Generator],
    label: str,
    seed_tag: str,
    shard_size: int,
    reference: bool = False,
) -> list[Response]:
    """`params.n` responses per instruction, written shard by shard to `folder/responses/`;
    shard i samples with `params` and a seed derived from (`params.seed`, `seed_tag`, i). The
    generator is loaded only if a shard is missing. `reference`: each instruction's own answer,
    where it has one, follows its samples as one more response (`source: reference`)."""
    started = time.monotonic()
    shard_dir = folder / "responses"
    size = _shard_size(shard_dir, shard_size)
    shards = [instructions[i : i + size] for i in range(0, len(instructions), size)]
    paths = [shard_dir / f"shard-{i:04d}.jsonl" for i in range(len(shards))]
    finished = RunDir.is_done(folder, "generate")
    if not finished:
        todo = [i for i, p in enumerate(paths) if not p.exists()]
        done = sum(len(shards[i]) for i in range(len(shards)) if i not in todo)
        generator = load_generator() if todo else None
        try:
            with stage_bar(f"generate {label}", len(instructions), done, "prompt") as bar:
                for i in todo:
                    prompts = [
                        template.render(x.instruction, x.input, tokenizer) for x in shards[i]
                    ]
                    shard_params = replace(params, seed=shard_seed(params.seed, seed_tag, i))
                    outs = generator.generate(prompts, shard_params, on_batch=bar.advance)  # type: ignore[union-attr]
                    rows = _response_rows(shards[i], outs, params.n, reference)
                    atomic_write_jsonl(paths[i], rows)
        finally:
            if generator is not None:
                generator.close()
    rows = [row for p in paths for row in read_jsonl(p)]
    if not finished:
        seconds = _seconds(started)
        tokens = sum(r.get("num_tokens") or 0 for r in rows)
        rate = {"tokens_per_s": round(tokens / seconds["seconds"], 2)} if seconds["seconds"] else {}
        info = {"responses": len(rows), "tokens": tokens, **seconds, **rate}
        RunDir.mark_done(folder, "generate", info)
    return rows


def _seconds(started: float) -> dict[str, float]:
    """A stage's wall time, for its DONE marker: the time of the process that finished it (a
    resumed stage's earlier, killed part is not in it)."""
    return {"seconds": round(time.monotonic() - started, 3)}


def _shard_size(shard_dir: Path, configured: int) -> int:
    """The shard size the stage started with: generation.shard_size may change between a run
    and its resume (it is operational), but shards already written keep their partition, or a
    resume would skip the instructions past a smaller old shard. Shard 0 is always full (or
    holds every instruction), so its instruction count is the size it was written with."""
    first = shard_dir / "shard-0000.jsonl"
    if not first.exists():
        return configured
    return len({row["prompt_id"] for row in read_jsonl(first)}) or configured


def _response_rows(
    shard: Sequence[Instruction],
    outs: list[list[Completion]],
    samples: int,
    reference: bool = False,
) -> list[Response]:
    """One row per response. Its id is the instruction's id when there is one sample per
    instruction, else "<instruction id>-<j>" ("<instruction id>-ref" for the source's own
    answer); `prompt_id` always names the instruction."""
    rows: list[Response] = []
    for x, completions in zip(shard, outs, strict=True):
        common: dict[str, Any] = {"prompt_id": x.id, "instruction": x.instruction, "input": x.input}
        if x.constraints:  # what a `constraints` judge checks the answer against
            common["constraints"] = list(x.constraints)
        for j, c in enumerate(completions):
            rows.append(
                {
                    "id": x.id if samples == 1 and not reference else f"{x.id}-{j}",
                    **common,
                    "response": c.text,
                    "finished": c.finished,
                    "num_tokens": c.num_tokens,
                    "source": "policy",
                }
            )
        if reference and x.reference:
            # A written answer ends where it ends: finished, never cut off by a token limit.
            rows.append(
                {"id": f"{x.id}-ref", **common, "response": x.reference, "finished": True,
                 "num_tokens": None, "source": "reference"}
            )  # fmt: skip
    return rows


def read_judgments(path: Path) -> dict[str, Judgment]:
    """The latest judgment per item id (a retried failure is superseded by its new answer)."""
    return {row["id"]: Judgment.from_dict(row) for row in read_jsonl(path)}


def judge_stage(
    folder: Path,
    responses: Sequence[Response],
    judge: Judge,
    cfg: RunConfig,
    tag: str,
    need_scores: bool = False,
) -> dict[str, Judgment]:
    """A judgment for every response, appended to `folder/judgments.jsonl` as it arrives (a
    streaming judge: `judge_batch`) or as its batch returns. Only items without a successful
    judgment are sent, so a resume never pays twice for a finished item; failed ones are sent
    again. `need_scores` (a loss that ranks by score): stop after the first batch, its
    judgments kept, if the judge gives no scores."""
    started = time.monotonic()
    path = folder / "judgments.jsonl"
    judgments = read_judgments(path)
    if RunDir.is_done(folder, "judge"):
        return judgments
    todo = [r for r in responses if r["id"] not in judgments or judgments[r["id"]].failed]
    batch = cfg.judge.batch_size
    with (
        JsonlAppender(path) as log,
        stage_bar(f"judge {tag}", len(responses), len(responses) - len(todo), "item") as bar,
        _released(judge),
    ):

        def record(j: Judgment) -> None:  # may run on the judge's thread: the append is atomic
            log.append(j.to_dict())
            judgments[j.id] = j
            bar.advance()

        for start in range(0, len(todo), batch):
            items = [
                JudgeItem(
                    r["id"], r["instruction"], r["input"], r["response"], not r["finished"],
                    tuple(r.get("constraints") or ()),
                )
                for r in todo[start : start + batch]
            ]  # fmt: skip
            results = judge_batch(judge, items, record)
            unscored = [j for j in results if not j.failed and j.score is None]
            if need_scores and unscored:
                raise CutLoopError(
                    f"loss {cfg.loss.name} ranks responses by judge score, but judge"
                    f" {cfg.judge.name!r} returned none (item {unscored[0].id}); use a judge"
                    " that scores (openai, hf, reward-model) or another --loss"
                )
    failed = [j for j in judgments.values() if j.failed]
    allowed = int(cfg.judge.max_failed_fraction * len(responses))
    # A spent budget is the user's stop sign, not judge noise: it stops the round whatever
    # max_failed_fraction tolerates, and a re-run (with a new budget) judges the rest.
    budget = [j for j in failed if (j.error or "").startswith(BUDGET_REACHED)]
    if len(failed) > allowed or budget:
        first = (budget or failed)[0]
        raise CutLoopError(
            f"{path}: {len(failed)} of {len(responses)} judgments failed"
            f" (first: {first.error}); re-run the same command to retry only those"
        )
    # Usage and failures over every row ever appended, superseded failures included: they
    # were paid for, and they say how the judge misbehaved.
    every = [Judgment.from_dict(row) for row in read_jsonl(path)]
    counts = {
        **judgment_counts(judgments.values()),
        "failures_by_kind": dict(Counter(failure_kind(j.error) for j in every if j.failed)),
        "top_critiques": critique_groups(judgments.values()),
    }
    paid = usage_totals(every)
    RunDir.mark_done(folder, "judge", {**counts, "usage": paid, **_seconds(started)})
    return judgments


@contextmanager
def _released(judge: Judge) -> Iterator[None]:
    """A judge may hold a model or an engine while a stage runs (`HFJudge`); its optional
    `release()` at the stage's end, failed or not, gives the memory back before training."""
    try:
        yield
    finally:
        release = getattr(judge, "release", None)
        if callable(release):
            release()


def critique_groups(judgments: Any, top: int = 5) -> list[list[Any]]:
    """The most common critiques, [text, count], grouped with their numbers taken out (a judge
    words one complaint about different answers the same way, numbers aside)."""
    groups = Counter(
        re.sub(r"\d+", "N", j.critique or "")[:200]
        for j in judgments
        if not j.acceptable and not j.failed
    )
    return [[text, n] for text, n in groups.most_common(top)]


def judgment_counts(judgments: Any) -> dict[str, Any]:
    """Acceptance statistics; failed judgments count in neither verdict."""
    js = list(judgments)
    ok = sum(j.acceptable for j in js)
    bad = sum(not j.acceptable and not j.failed for j in js)
    scores = [j.score for j in js if j.score is not None and not j.failed]
    decided = ok + bad
    return {
        "acceptable": ok,
        "unacceptable": bad,
        "failed": len(js) - decided,
        "acceptance_rate": ok / decided if decided else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
    }
