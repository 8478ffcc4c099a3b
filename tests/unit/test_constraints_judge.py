"""The `constraints` judge: verdicts, scores and critiques on a small batch, loading it by name,
and composing it with `rules` in `all` and `chain`."""

from __future__ import annotations

from typing import Any

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import Judge, JudgeItem, Verdict
from cut_loop.judging.constraints import ConstraintsJudge
from cut_loop.judging.registry import load_judge

Q = "Name three fruits. Answer with less than 10 words. Refrain from the use of any commas."
SHORT = {
    "id": "length_constraints:number_words",
    "args": {"num_words": 10, "relation": "less than"},
}
NO_COMMA = {"id": "punctuation:no_comma", "args": {}}
BOTH = (SHORT, NO_COMMA)
LONG = "Apples, pears, plums, and then there are many more fruits I could name."
WORDS_13 = "The response is 13 words long; the instruction asks for fewer than 10 words."
COMMAS_3 = "The response contains 3 commas; the instruction asks for no commas at all."
REFUSAL = "As an AI language model, I cannot name fruits."


def item(id: str, response: str, constraints: tuple[dict[str, Any], ...] = BOTH) -> JudgeItem:
    return JudgeItem(id, Q, "", response, constraints=constraints)


BATCH = [
    item("ok", "Apples pears plums."),
    item("long", "Apples pears plums and then there are many more fruits I could name."),
    item("both", LONG),
    item("none", LONG, ()),  # nothing to check
]


def test_verdicts_scores_and_critiques() -> None:
    out = ConstraintsJudge().judge(BATCH)
    assert [j.id for j in out] == ["ok", "long", "both", "none"]
    assert [j.verdict for j in out] == [Verdict.ACCEPTABLE, Verdict.UNACCEPTABLE,
                                        Verdict.UNACCEPTABLE, Verdict.ACCEPTABLE]  # fmt: skip
    assert [j.score for j in out] == [1.0, 0.5, 0.0, None]
    assert out[1].critique == WORDS_13
    assert out[2].critique == f"{WORDS_13} {COMMAS_3}"  # one sentence per violation, in order
    assert out[0].critique is None and out[3].critique is None
    assert {j.raw for j in out} == {"constraints"}


def test_without_scores() -> None:
    out = ConstraintsJudge(score=False).judge(BATCH)
    assert [j.score for j in out] == [None] * 4
    assert out[2].critique == f"{WORDS_13} {COMMAS_3}"


def test_a_malformed_constraint_fails_only_its_item() -> None:
    bad = item("bad", "Apples.", ({"id": "language:response_language", "args": {}},))
    good, failed = ConstraintsJudge().judge([BATCH[0], bad])
    assert good.acceptable
    assert failed.failed and failed.error.startswith(
        "malformed constraint: unknown constraint id 'language:response_language'"
    )


def test_loads_by_name_with_its_option() -> None:
    judge = load_judge("constraints", {})
    assert isinstance(judge, ConstraintsJudge) and isinstance(judge, Judge) and judge.score
    assert load_judge("constraints", {"score": False}).score is False
    with pytest.raises(CutLoopError, match=r"unknown option.*it accepts: score"):
        load_judge("constraints", {"threshold": 1})


def test_all_with_rules_rejects_when_either_does_and_names_every_flaw() -> None:
    """`all` joins the critiques of every rejecting member, in member order."""
    batch = [
        item("fine", "Apples pears plums."),
        item("constraints only", LONG),
        item("rules only", "", ()),
        item("both", REFUSAL),
    ]
    judge = load_judge("all", {"judges": [{"name": "constraints"}, {"name": "rules"}]})
    fine, mine, rules, both = judge.judge(batch)
    assert fine.acceptable
    assert mine.critique == f"{WORDS_13} {COMMAS_3}"
    assert rules.critique.startswith("The response is empty")
    comma = "The response contains 1 comma; the instruction asks for no commas at all."
    assert both.critique.startswith(comma + " The response refuses with boilerplate")
    swapped = load_judge("all", {"judges": [{"name": "rules"}, {"name": "constraints"}]})
    [refused] = swapped.judge(batch[3:])
    assert refused.critique.startswith("The response refuses with boilerplate")
    assert refused.critique.endswith(comma)


def test_chain_constraints_first_spares_the_next_judge() -> None:
    class Counting:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def judge(self, items: list[JudgeItem]) -> list[Any]:
            self.seen += [i.id for i in items]
            return ConstraintsJudge().judge(items)

    later = Counting()
    out = load_judge("chain", {"judges": [ConstraintsJudge(), later]}).judge(BATCH)
    assert later.seen == ["ok", "none"]  # the two rejected items never went on
    assert [j.acceptable for j in out] == [True, False, False, True]
