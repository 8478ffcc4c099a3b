"""The Judge protocol and the typed judgment every judge returns.

A judge takes a batch of items and returns exactly one `Judgment` per item, in the same order.
A judgment is one of three things: acceptable, unacceptable (with a CUT-style critique saying
what is wrong), or failed (with the reason). A failed judgment is never counted as either
verdict: the loop stores it, reports it, and asks again on the next resume.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from cut_loop.errors import CutLoopError, foreign_error

# A failed judgment whose error starts with this was never sent: the judge's request or spend
# budget ran out. The loop stops the round on it (whatever max_failed_fraction allows); any
# judge, a plugin too, may use it for the same effect.
BUDGET_REACHED = "budget reached"

# What an unacceptable judgment without a critique is trained (and exported) with.
DEFAULT_CRITIQUE = "The response is unacceptable."


class Verdict(str, Enum):
    ACCEPTABLE = "acceptable"
    UNACCEPTABLE = "unacceptable"
    FAILED = "failed"


@dataclass(frozen=True)
class JudgeItem:
    """One response to judge. `truncated` is True when generation stopped at the token limit
    rather than at an end-of-sequence (the rules judge reports it; others may ignore it).
    `constraints` are the instruction's IFEval-style constraints (`Instruction.constraints`),
    which the constraints judge checks; others may ignore them."""

    id: str
    instruction: str
    input: str
    response: str
    truncated: bool = False
    constraints: tuple[dict[str, Any], ...] = field(default=(), hash=False)


@dataclass(frozen=True)
class Judgment:
    id: str
    verdict: Verdict
    critique: str | None = None  # what is wrong, CUT style; None when acceptable
    score: float | None = None  # optional numeric score (e.g. 1-10, or a reward)
    error: str | None = None  # why it failed; set only when verdict is FAILED
    raw: str | None = None  # the judge's raw output, for auditing
    # What producing this judgment cost in the call that returned it: e.g. requests,
    # prompt_tokens, completion_tokens, cost_usd (USD, when the price is known); a cache hit
    # cost nothing again and says {"cache_hits": 1}. Summing `usage` over every judgment a
    # judge returned gives what it spent (see `usage_totals`).
    usage: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAILED

    @property
    def acceptable(self) -> bool:
        return self.verdict is Verdict.ACCEPTABLE

    @classmethod
    def accept(cls, id: str, score: float | None = None, **kw: Any) -> Judgment:
        return cls(id, Verdict.ACCEPTABLE, None, score, **kw)

    @classmethod
    def reject(cls, id: str, critique: str, score: float | None = None, **kw: Any) -> Judgment:
        return cls(id, Verdict.UNACCEPTABLE, critique, score, **kw)

    @classmethod
    def fail(cls, id: str, error: str, **kw: Any) -> Judgment:
        return cls(id, Verdict.FAILED, error=error, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Judgment:
        return cls(
            id=d["id"],
            verdict=Verdict(d["verdict"]),
            critique=d.get("critique"),
            score=d.get("score"),
            error=d.get("error"),
            raw=d.get("raw"),
            usage=d.get("usage") or {},
        )


@runtime_checkable
class Judge(Protocol):
    """Anything with this method is a judge: built-ins and user plugins alike.

    `judge` must return one Judgment per item, in order, with `Judgment.id == item.id`. It should
    not raise for a single bad item: return `Judgment.fail(...)` for it instead.
    """

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]: ...


# Called with each judgment of a batch the moment it is known (see `judge_batch`).
OnJudgment = Callable[[Judgment], None]


def judge_batch(judge: Judge, items: Sequence[JudgeItem], record: OnJudgment) -> list[Judgment]:
    """`judge.judge(items)`, checked (`checked_judgments`), with `record` called once per item.

    A judge whose `judge` takes an `on_judgment` keyword (the OpenAI judge) streams: it calls
    it with each answer as the answer arrives, so a run killed mid-batch has recorded every
    answer it was paid for but the few in flight. Any other judge's answers are recorded when
    its batch returns. Either way each item is recorded once, and a streamed judgment is
    checked before it is recorded."""
    wanted = {it.id for it in items}
    recorded: set[str] = set()

    def on_judgment(j: Judgment) -> None:
        _check_one(judge, j)
        if j.id not in wanted or j.id in recorded:
            raise CutLoopError(
                f"judge {type(judge).__name__} streamed a judgment for {j.id!r}, which is not"
                " an item of the batch or was already answered"
            )
        recorded.add(j.id)
        record(j)

    streams = "on_judgment" in inspect.signature(judge.judge).parameters
    try:
        out = judge.judge(items, on_judgment=on_judgment) if streams else judge.judge(items)  # type: ignore[call-arg]
    except (CutLoopError, OSError):
        raise  # already one line, or the machine's fault (the CLI names it)
    except Exception as e:  # the judge's own bug: its answers so far are recorded
        raise foreign_error(f"judge {type(judge).__name__}", e) from e
    results = checked_judgments(judge, items, out)
    for j in results:
        if j.id not in recorded:
            recorded.add(j.id)
            record(j)
    return results


# Why judgments fail, in the words the built-in judges use (judging/openai_judge.py); the
# first match names the kind. A plugin's own errors count as "other".
_FAILURE_KINDS = (
    ("budget", (BUDGET_REACHED,)),
    ("rate_limit", ("HTTP 429",)),
    ("server", ("HTTP 5",)),
    ("transport", ("timed out", "connection error", "not sent: the server did not answer")),
    ("bad_reply", ("not a chat completion", "has no choices", "reply is empty")),
    ("parse", ("re-ask", "has no score", "names neither")),
)


def failure_kind(error: str | None) -> str:
    """budget, rate_limit, server, transport, bad_reply, parse or other (issue reports and
    metrics group failed judgments by it)."""
    text = error or ""
    for kind, words in _FAILURE_KINDS:
        if any(w in text for w in words):
            return kind
    return "other"


def usage_totals(judgments: Iterable[Judgment]) -> dict[str, float]:
    """Key-wise sum of `usage` over `judgments` (e.g. over every row of a judgments.jsonl,
    failed attempts included, since they were paid for too). `cost_usd` in the sum covers only
    the judgments whose cost was known."""
    totals: dict[str, float] = {}
    for j in judgments:
        for key, value in j.usage.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def checked_judgments(judge: object, items: Sequence[Any], out: object) -> list[Judgment]:
    """`out`, what `judge.judge(items)` returned, if it keeps the contract: a list of
    `Judgment`s with `Verdict` verdicts, one per item, in order, with the items' ids. Else one
    line naming the judge and what it returned (a plugin's dicts, strings or None included)."""
    name = type(judge).__name__
    if not isinstance(out, (list, tuple)):
        raise CutLoopError(f"judge {name} returned {_shown(out)}, not a list of Judgment")
    for j in out:
        _check_one(judge, j)
    if [j.id for j in out] != [i.id for i in items]:
        raise CutLoopError(
            f"judge {name} returned {len(out)} judgments for {len(items)} items, or out of"
            " order; a judge must return one Judgment per item, in order, with the item's id"
        )
    return list(out)


def _check_one(judge: object, j: object) -> None:
    name = type(judge).__name__
    if not isinstance(j, Judgment):
        raise CutLoopError(f"judge {name} returned {_shown(j)} where a Judgment belongs")
    if not isinstance(j.verdict, Verdict):
        raise CutLoopError(
            f"judge {name} returned a Judgment whose verdict is {_shown(j.verdict)}; use"
            " Judgment.accept / reject / fail (or a Verdict member)"
        )


def _shown(value: object) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text[:60]}{'...' if len(text) > 60 else ''})"


def close_judge(judge: Judge) -> None:
    """Call a judge's optional `close()` (judges holding clients or models have one)."""
    close = getattr(judge, "close", None)
    if callable(close):
        close()
