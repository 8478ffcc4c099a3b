"""Judges made of judges: `all`, `chain` and `vote`.

Config form (members are built through `load_judge`, so a member can be anything a top-level
judge can be: a built-in, a plugin, a rubric file, another composite):

    judge:
      name: chain
      judges:
        - {name: rules}
        - {name: openai, model: gpt-4, max_cost_usd: 20}

Each member that caches gets a cache file of its own, beside the composite's, named for its
position and name (`judge-cache.jsonl` -> `judge-cache.chain-1-openai.jsonl`): two members
with the same settings (e.g. a vote of three samples at temperature 0.7) must not answer
for each other. Reordering the members therefore starts their caches afresh.

A composite's judgment is the deciding member's judgment (verdict, critique, score, raw), with
`usage` summed over every member that judged the item, so spend accounting stays whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import Judge, JudgeItem, Judgment, Verdict, checked_judgments

Member = dict[str, Any] | Judge


def build_members(kind: str, judges: Sequence[Member], cache: str | Path | None) -> list[Judge]:
    """Members from config mappings ({name: ..., <options>}) or ready-made judges."""
    from cut_loop.judging.registry import load_judge  # the registry imports this module by name

    if isinstance(judges, (str, dict)) or not judges:
        raise CutLoopError(f"judge {kind!r}: `judges` must be a non-empty list of judges")
    members: list[Judge] = []
    for i, spec in enumerate(judges):
        if not isinstance(spec, dict):
            if not callable(getattr(spec, "judge", None)):
                raise CutLoopError(f"judge {kind!r}, member {i}: {spec!r} is not a judge")
            members.append(spec)
            continue
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise CutLoopError(f"judge {kind!r}, member {i}: needs a `name`")
        member_cache = None
        if cache is not None:
            path = Path(cache)
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name)[:40]
            member_cache = path.with_name(f"{path.stem}.{kind}-{i}-{slug}{path.suffix}")
        try:
            members.append(load_judge(name, options, cache=member_cache))
        except CutLoopError as e:
            raise CutLoopError(f"judge {kind!r}, member {i}: {e}") from None
    return members


def ask(member: Judge, items: Sequence[JudgeItem]) -> list[Judgment]:
    """`member.judge(items)`, checked against the protocol (a composite cannot line up
    answers that come back short or out of order)."""
    return checked_judgments(member, items, member.judge(items)) if items else []


def merged(decision: Judgment, judged: Sequence[Judgment]) -> Judgment:
    """`decision` with its usage replaced by the key-wise sum over every member's judgment."""
    usage: dict[str, float] = {}
    for j in judged:
        for key, value in j.usage.items():
            usage[key] = usage.get(key, 0) + value
    return replace(decision, usage=usage)


class _Composite:
    kind = "composite"

    def __init__(self, *, judges: Sequence[Member], cache: str | Path | None = None) -> None:
        self.members = build_members(self.kind, judges, cache)

    def release(self) -> None:
        """Pass the end of a judge stage on to every member that has a `release`."""
        for member in self.members:
            release = getattr(member, "release", None)
            if callable(release):
                release()

    def close(self) -> None:
        """Close every member that has a `close` (judges holding clients or models)."""
        for member in self.members:
            close = getattr(member, "close", None)
            if callable(close):
                close()


class AllJudge(_Composite):
    """Every member judges every item. Unacceptable if any member says so, with the critiques
    of every rejecting member joined in member order (CUT learns from each flaw named, and a
    cheap check's critique must not hide what another member found); else failed if any
    member failed; else acceptable (the last member's judgment, so its score)."""

    kind = "all"

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        answers = [ask(member, items) for member in self.members]
        out = []
        for per_item in zip(*answers, strict=True):
            rejections = [j for j in per_item if j.verdict is Verdict.UNACCEPTABLE]
            if rejections:
                critique = " ".join(j.critique.strip() for j in rejections if j.critique)
                decision = replace(rejections[0], critique=critique)
            else:
                decision = next((j for j in per_item if j.failed), per_item[-1])
            out.append(merged(decision, per_item))
        return out


class ChainJudge(_Composite):
    """Members in order, cheapest first: only the items every earlier member found acceptable
    go to the next one, so an expensive judge never sees what a cheap one already rejected.
    An item's judgment is the first rejection or failure, else the last member's acceptance.
    A failure stops the item too: it is retried as a whole on the next resume."""

    kind = "chain"

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        history: list[list[Judgment]] = [[] for _ in items]
        alive = list(range(len(items)))
        for member in self.members:
            for i, j in zip(alive, ask(member, [items[i] for i in alive]), strict=True):
                history[i].append(j)
            alive = [i for i in alive if history[i][-1].acceptable]
        return [merged(h[-1], h) for h in history]


class VoteJudge(_Composite):
    """Majority vote of n members, a of them accepting and r rejecting (the rest failed).

    A tie (n/2 each) goes to `ties`: "unacceptable" by default, because half the panel named a
    concrete flaw, and training on the response as a positive would reinforce it, while as a
    negative CUT learns from the critique given ("acceptable" is the choice for panels whose
    critiques you trust less than their passes). So with the default: unacceptable when
    r >= n/2, acceptable when a > n/2 (with ties="acceptable": a >= n/2, r > n/2). Both hold
    whatever the failed members would have said; when neither does, they could swing it and
    the item fails (and is retried on resume). A decision carries the first agreeing member's
    judgment (critique, score)."""

    kind = "vote"

    def __init__(
        self,
        *,
        judges: Sequence[Member],
        cache: str | Path | None = None,
        ties: str = "unacceptable",
    ) -> None:
        if ties not in ("unacceptable", "acceptable"):
            raise ValueError("ties must be 'unacceptable' or 'acceptable'")
        super().__init__(judges=judges, cache=cache)
        self.ties = Verdict(ties)

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        answers = [ask(member, items) for member in self.members]
        return [self.decide(per_item) for per_item in zip(*answers, strict=True)]

    def decide(self, votes: Sequence[Judgment]) -> Judgment:
        n = len(votes)
        accepts = sum(j.verdict is Verdict.ACCEPTABLE for j in votes)
        rejects = sum(j.verdict is Verdict.UNACCEPTABLE for j in votes)
        verdict: Verdict | None = None
        if accepts * 2 > n or (accepts * 2 == n and self.ties is Verdict.ACCEPTABLE):
            verdict = Verdict.ACCEPTABLE
        elif rejects * 2 > n or (rejects * 2 == n and self.ties is Verdict.UNACCEPTABLE):
            verdict = Verdict.UNACCEPTABLE
        if verdict is None:
            reasons = "; ".join(j.error or "" for j in votes if j.failed)
            failed = Judgment.fail(
                votes[0].id,
                f"vote undecided: {accepts} acceptable, {rejects} unacceptable, "
                f"{n - accepts - rejects} failed ({reasons})",
            )
            return merged(failed, votes)
        return merged(next(j for j in votes if j.verdict is verdict), votes)
