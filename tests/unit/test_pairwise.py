"""Pairwise preferences: reading the judge's answer, the prompt, and the win rate over both
orders, against hand-worked values."""

from __future__ import annotations

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.evaluation.pairwise import pairs_for, win_row
from cut_loop.judging.base import Judgment
from cut_loop.judging.pairwise import PairItem, load_pair_rubric, parse_preference


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("Output (a)", "a"),
        ("**Output (b)**", "b"),
        ("output b", "b"),
        ("I prefer Output (a). It is correct.", "a"),
        ("Output (a) is wordy; Output (b) is right.", None),  # names both: unreadable
        ("The first one.", None),
        ("Outputs (a)", None),
    ],
)
def test_parse_preference(text: str, choice: str | None) -> None:
    assert parse_preference(text) == choice


def test_the_shipped_rubric_shows_both_outputs_in_order() -> None:
    rubric = load_pair_rubric("default")
    system, user = rubric.messages(PairItem("p|ab", "Name a fruit.", "", "Apple {input}", "Pear"))
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    assert text.index("Apple {input}") < text.index("Output (b)") < text.index("Pear")
    assert "(none)" in text  # no input


def test_a_rubric_without_both_outputs_is_refused(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("system: s\nuser: 'Compare {output_1}.'\n")
    with pytest.raises(CutLoopError, match=r"bad.yaml: `user` lacks \{output_2\}"):
        load_pair_rubric(str(path))


def response(pid: str, text: str) -> dict:
    return {"id": pid, "prompt_id": pid, "instruction": f"do {pid}", "input": "",
            "response": text, "finished": True, "num_tokens": len(text.split())}  # fmt: skip


def pref(id: str, first_wins: bool) -> Judgment:
    return Judgment.accept(id, 1.0) if first_wins else Judgment.reject(id, "other", 0.0)


def test_win_rate_over_both_orders_by_hand() -> None:
    responses = [response(p, t) for p, t in [("1", "a b"), ("2", "c"), ("3", "d e f"),
                                             ("4", "g"), ("5", "h")]]  # fmt: skip
    refs = {"1": "r1", "2": "r2", "3": "r3", "4": "r4"}  # 5 has no reference: not compared
    pairs = pairs_for(responses, refs)
    assert [p.id for p in pairs] == ["1|ab", "1|ba", "2|ab", "2|ba", "3|ab", "3|ba", "4|ab",
                                     "4|ba"]  # fmt: skip
    assert (pairs[0].first, pairs[0].second) == ("a b", "r1")
    assert (pairs[1].first, pairs[1].second) == ("r1", "a b")
    judged = {
        "1|ab": pref("1|ab", True), "1|ba": pref("1|ba", False),  # wins both: 1
        "2|ab": pref("2|ab", True), "2|ba": pref("2|ba", True),  # position (a) both times: 0.5
        "3|ab": pref("3|ab", False), "3|ba": pref("3|ba", True),  # loses both: 0
        "4|ab": pref("4|ab", True), "4|ba": Judgment.fail("4|ba", "timeout"),  # left out
    }  # fmt: skip
    row = win_row("gpt", "start", responses, refs, judged, seed=0, resamples=2000)
    assert row["n"] == 3 and row["win_rate"] == pytest.approx(0.5)
    assert (row["wins"], row["ties"], row["losses"]) == (1, 1, 1)
    assert row["position_consistency"] == pytest.approx(2 / 3)
    lo, hi = row["ci95"]
    assert 0 <= lo < 0.5 < hi <= 1
    assert row["mean_response_tokens"] == pytest.approx((2 + 1 + 3) / 3)
    assert row["mean_response_chars"] == pytest.approx((3 + 1 + 5) / 3)
    assert row["reference_mean_chars"] == 2
    assert win_row("gpt", "start", responses, refs, {}, 0, 100)["win_rate"] is None
