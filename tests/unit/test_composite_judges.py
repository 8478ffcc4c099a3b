"""Composite judges: `chain` (the expensive judge never sees what a cheap one rejected), `all`,
`vote`; members built from config through load_judge, each with its own cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import JudgeItem, Judgment, Verdict, judge_batch
from cut_loop.judging.composite import AllJudge, ChainJudge, VoteJudge
from cut_loop.judging.registry import load_judge
from cut_loop.rundir import read_jsonl
from tests.helpers.chat_server import ChatServer

KEY_ENV = "CUT_LOOP_TEST_JUDGE_KEY"
RUBRIC = Path(__file__).resolve().parents[2] / "judges" / "default.yaml"
Q = "Explain why the sky is blue."
GOOD = "Sunlight scatters off air molecules, and blue light scatters the most."
WRONG = "The sky reflects the ocean, which is blue."
CRITIQUE = "The response is incorrect: the sky is blue because of Rayleigh scattering."


class Fixed:
    """A plugin judge with scripted answers: item id -> "a" / "u" / "f"."""

    def __init__(self, name: str, answers: dict[str, str], tokens: int = 0) -> None:
        self.name, self.answers, self.tokens = name, answers, tokens
        self.seen: list[str] = []
        self.closed = False

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        self.seen += [i.id for i in items]
        usage = {"prompt_tokens": self.tokens} if self.tokens else {}
        make = {
            "a": lambda id: Judgment.accept(id, score=9.0, raw=self.name, usage=usage),
            "u": lambda id: Judgment.reject(id, f"{self.name} says no.", 2.0, usage=usage),
            "f": lambda id: Judgment.fail(id, f"{self.name} broke", usage=usage),
        }
        return [make[self.answers[i.id]](i.id) for i in items]

    def close(self) -> None:
        self.closed = True


def items(*ids: str) -> list[JudgeItem]:
    return [JudgeItem(i, Q, "", GOOD) for i in ids]


def grade(body: dict[str, Any]) -> str:
    if "ocean" in body["messages"][-1]["content"]:
        return json.dumps({"score": 2, "critique": CRITIQUE})
    return json.dumps({"score": 9, "critique": "acceptable"})


def test_chain_the_expensive_judge_never_sees_rejected_items(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    batch = [
        JudgeItem("empty", Q, "", "   "),
        JudgeItem("refusal", Q, "", "As an AI language model, I cannot explain the weather."),
        JudgeItem("loop", Q, "", "The sky is blue because it is blue. " * 6),
        JudgeItem("good", Q, "", GOOD),
        JudgeItem("wrong", Q, "", WRONG),
    ]
    cache = tmp_path / "judge-cache.jsonl"
    with ChatServer(grade) as server:
        config = {"judges": [{"name": "rules"},
                             {"name": "openai", "base_url": server.base_url,
                              "api_key_env": KEY_ENV, "model": "gpt-4"}]}  # fmt: skip
        judge = load_judge("chain", config, cache=cache)
        out = judge.judge(batch)
        judge.close()
        asked = sorted(r.response_text() for r in server.requests)
    assert asked == sorted([GOOD, WRONG])  # the three rules rejections never went out
    by_id = {j.id: j for j in out}
    assert [j.id for j in out] == [i.id for i in batch]
    assert by_id["empty"].critique.startswith("The response is empty")
    assert by_id["refusal"].critique.startswith("The response refuses")
    assert by_id["loop"].critique.startswith("The response repeats the sentence")
    assert all(by_id[i].usage == {} for i in ("empty", "refusal", "loop"))  # cost nothing
    assert by_id["good"].acceptable and by_id["good"].score == 9
    assert by_id["wrong"].critique == CRITIQUE and by_id["wrong"].usage["requests"] == 1
    # The openai member cached into a file of its own, beside the composite's.
    member_cache = tmp_path / "judge-cache.chain-1-openai.jsonl"
    assert len(read_jsonl(member_cache)) == 2 and not cache.exists()


def test_chain_stops_an_item_at_the_first_rejection_or_failure():
    cheap = Fixed("cheap", {"1": "a", "2": "u", "3": "f", "4": "a"}, tokens=1)
    middle = Fixed("middle", {"1": "a", "4": "u"}, tokens=10)
    dear = Fixed("dear", {"1": "a"}, tokens=100)
    out = ChainJudge(judges=[cheap, middle, dear]).judge(items("1", "2", "3", "4"))
    assert (cheap.seen, middle.seen, dear.seen) == (["1", "2", "3", "4"], ["1", "4"], ["1"])
    verdicts = [j.verdict.value for j in out]
    assert verdicts == ["acceptable", "unacceptable", "failed", "unacceptable"]
    assert out[0].raw == "dear" and out[1].critique == "cheap says no."
    assert out[2].error == "cheap broke" and out[3].critique == "middle says no."
    assert [j.usage.get("prompt_tokens") for j in out] == [111, 1, 1, 11]  # summed


def test_all_rejects_if_any_member_rejects_with_every_critique_joined():
    a = Fixed("first", {"1": "a", "2": "u", "3": "f", "4": "f", "5": "a"})
    b = Fixed("second", {"1": "a", "2": "u", "3": "u", "4": "a", "5": "u"})
    out = AllJudge(judges=[a, b]).judge(items("1", "2", "3", "4", "5"))
    assert a.seen == b.seen == ["1", "2", "3", "4", "5"]  # everyone judges everything
    assert [j.verdict.value for j in out] == [
        "acceptable", "unacceptable", "unacceptable", "failed", "unacceptable",
    ]  # fmt: skip
    assert out[0].raw == "second"  # acceptable: the last member's judgment
    assert out[1].critique == "first says no. second says no."  # joined, in member order
    assert out[2].critique == "second says no."  # a rejection outranks a failure
    assert out[3].error == "first broke"


@pytest.mark.parametrize(
    ("votes", "ties", "expected"),
    [
        ("aau", "unacceptable", "a"),
        ("uua", "unacceptable", "u"),
        ("au", "unacceptable", "u"),
        ("au", "acceptable", "a"),
        ("afu", "unacceptable", "f"),  # the failed vote could swing it either way
        ("uufa", "unacceptable", "u"),  # even if the failed one accepted: a tie, and ties -> u
        ("uufa", "acceptable", "f"),
        ("aafu", "acceptable", "a"),
        ("aafu", "unacceptable", "f"),
        ("aaff", "acceptable", "a"),
        ("fff", "unacceptable", "f"),
    ],
)
def test_vote(votes: str, ties: str, expected: str) -> None:
    members = [Fixed(f"m{k}", {"x": v}) for k, v in enumerate(votes)]
    [j] = VoteJudge(judges=members, ties=ties).judge(items("x"))
    assert j.verdict.value[0] == expected
    if expected == "u":
        first = next(k for k, v in enumerate(votes) if v == "u")
        assert j.critique == f"m{first} says no."
    if expected == "f":
        assert j.error.startswith("vote undecided") and "broke" in j.error


def test_nested_composites_from_config_and_their_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # the rubric judge checks for it up front
    config = {
        "judges": [
            {"name": "rules"},
            {"name": "vote", "ties": "acceptable",
             "judges": [{"name": "rules"}, {"name": str(RUBRIC)}]},
        ]
    }  # fmt: skip
    judge = load_judge("all", config, cache=tmp_path / "judge-cache.jsonl")
    inner = judge.members[1]
    assert isinstance(inner, VoteJudge) and inner.ties is Verdict.ACCEPTABLE
    rubric_judge = inner.members[1]
    assert rubric_judge.cache_path == tmp_path / "judge-cache.all-1-vote.vote-1-default.yaml.jsonl"


def test_close_reaches_every_member():
    a, b = Fixed("a", {}), Fixed("b", {})
    ChainJudge(judges=[a, VoteJudge(judges=[b])]).close()
    assert a.closed and b.closed


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"judges": []}, "`judges` must be a non-empty list"),
        ({"judges": "rules"}, "`judges` must be a non-empty list"),
        ({"judges": [{"model": "gpt-4"}]}, "member 0: needs a `name`"),
        ({"judges": [{"name": "rules"}, {"name": "nope"}]}, "member 1: unknown judge 'nope'"),
        ({"judges": [{"name": "rules", "colour": 1}]}, "member 0: judge 'rules': unknown opt"),
        ({}, r"missing required option\(s\) judges"),
    ],
)
def test_configuration_errors_are_one_line(config: dict[str, Any], message: str) -> None:
    with pytest.raises(CutLoopError, match=message) as e:
        load_judge("chain", config)
    assert "\n" not in str(e.value)


def test_a_member_that_breaks_the_protocol_is_caught():
    class Short:
        def judge(self, items):
            return []

    with pytest.raises(CutLoopError, match="returned 0 judgments for 1 items"):
        AllJudge(judges=[Short()]).judge(items("x"))


def test_member_objects_are_used_as_given(tmp_path: Path):
    a = Fixed("a", {"x": "a"})
    judge = load_judge("vote", {"judges": [a]}, cache=tmp_path / "c.jsonl")
    assert judge.members == [a] and judge.judge(items("x"))[0].acceptable


class Returns:
    """A plugin judge that returns `value` whatever it is asked."""

    def __init__(self, value: object) -> None:
        self.value = value

    def judge(self, items: Sequence[JudgeItem]) -> object:
        return self.value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, r"judge Returns returned a NoneType \(None\), not a list of Judgment"),
        (
            [{"id": "x", "verdict": "acceptable"}],
            r"returned a dict \(\{'id': 'x'.*where a Judgment",
        ),
        (["acceptable"], r"returned a str \('acceptable'\) where a Judgment belongs"),
        ([Judgment("x", "acceptable")], r"verdict is a str \('acceptable'\); use Judgment.accept"),
        ([Judgment.accept("y")], r"returned 1 judgments for 1 items, or out of order"),
    ],
)
def test_a_plugin_breaking_the_contract_gets_one_line_naming_it(value, message) -> None:
    with pytest.raises(CutLoopError, match=message):
        AllJudge(judges=[Returns(value)]).judge(items("x"))


class Streams:
    """A plugin judge that streams `streamed` through `on_judgment`, then returns `returned`."""

    def __init__(self, streamed: list[Judgment], returned: list[Judgment]) -> None:
        self.streamed, self.returned = streamed, returned

    def judge(self, items: Sequence[JudgeItem], on_judgment=None) -> list[Judgment]:
        for j in self.streamed:
            on_judgment(j)
        return self.returned


def test_a_streaming_judge_records_each_item_once_whether_streamed_or_returned() -> None:
    a, b = Judgment.accept("x"), Judgment.reject("y", "wrong")
    recorded: list[Judgment] = []
    out = judge_batch(Streams([b], [a, b]), items("x", "y"), recorded.append)
    assert out == [a, b] and recorded == [b, a]
    recorded.clear()
    assert judge_batch(Returns([a, b]), items("x", "y"), recorded.append) == recorded == [a, b]


@pytest.mark.parametrize(
    ("streamed", "message"),
    [
        ([Judgment.accept("z")], r"streamed a judgment for 'z', which is not an item"),
        ([Judgment.accept("x")] * 2, r"streamed a judgment for 'x'.*already answered"),
        (["acceptable"], r"judge Streams returned a str \('acceptable'\) where a Judgment"),
    ],
)
def test_a_streaming_judge_breaking_the_contract_gets_one_line(streamed, message) -> None:
    ok = [Judgment.accept("x"), Judgment.accept("y")]
    with pytest.raises(CutLoopError, match=message):
        judge_batch(Streams(streamed, ok), items("x", "y"), lambda j: None)
