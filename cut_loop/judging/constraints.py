"""`ConstraintsJudge`: checks each response against its instruction's IFEval-style constraints.

Offline and deterministic. Every violated constraint yields one critique sentence naming what
was measured and what was asked ("The response is 84 words long; the instruction asks for fewer
than 50 words."); several join into one critique. Compose it with judges of content, e.g.
`chain` of constraints then openai, since it says nothing about whether the answer is right.
"""

from __future__ import annotations

from collections.abc import Sequence

from cut_loop.constraints.checks import problem_with, violations
from cut_loop.judging.base import JudgeItem, Judgment


class ConstraintsJudge:
    """Options (keyword only): `score` (True): give each judgment the share of the item's
    constraints the response satisfies (1.0 when acceptable), for metrics.

    An item satisfying all its constraints is acceptable (score 1.0), and so is an item without
    constraints (score None: nothing was checked); otherwise it is unacceptable with the joined
    sentences, score satisfied / total. Only an item whose constraints are malformed (an unknown
    id, bad args: nothing `attach_constraints` or the instruction sources produce) fails, with
    the reason.
    """

    def __init__(self, *, score: bool = True) -> None:
        self.score = score

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One judgment per item, in order."""
        return [self._one(item) for item in items]

    def _one(self, item: JudgeItem) -> Judgment:
        if not item.constraints:
            return Judgment.accept(item.id, raw="constraints")
        problems = [p for p in map(problem_with, item.constraints) if p]
        if problems:
            return Judgment.fail(item.id, f"malformed constraint: {problems[0]}", raw="constraints")
        found = violations(item.response, item.constraints)
        total = len(item.constraints)
        score = (total - len(found)) / total if self.score else None
        if not found:
            return Judgment.accept(item.id, score=score, raw="constraints")
        return Judgment.reject(item.id, " ".join(found), score=score, raw="constraints")
