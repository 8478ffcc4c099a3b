"""Judge plugins with a fixed opinion, for tests where two judges must disagree. Loaded through
the real plugin mechanism (`--judge tests/helpers/fixed_judges.py:AcceptAll`)."""

from __future__ import annotations

from collections.abc import Sequence

from cut_loop.judging.base import JudgeItem, Judgment


class AcceptAll:
    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        return [Judgment.accept(it.id, raw="accept-all") for it in items]


class RejectAll:
    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        return [Judgment.reject(it.id, "The response is wrong.", raw="reject-all") for it in items]
