"""OpenAIJudge against a real HTTP server on loopback, through the real openai client."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import JudgeItem, Judgment, Verdict, failure_kind, usage_totals
from cut_loop.judging.openai_judge import OpenAIJudge
from cut_loop.judging.rubric import load_rubric, parse_answer
from cut_loop.rundir import JsonlAppender, read_jsonl
from tests.helpers.chat_server import ChatServer, Reply

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "CUT_LOOP_TEST_JUDGE_KEY"
SECRET = "sk-test-5ecr3t-never-on-disk"
CRITIQUE = "The response is incorrect. The capital of France is Paris, not Lyon."


def grade(body: dict[str, Any]) -> str:
    """The fake judge: rejects any response that mentions Lyon, accepts the rest."""
    user = body["messages"][-1]["content"] if len(body["messages"]) == 2 else ""
    if "Lyon" in user:
        return json.dumps({"score": 3, "critique": CRITIQUE})
    return json.dumps({"score": 9, "critique": "acceptable"})


def items(*responses: str) -> list[JudgeItem]:
    return [
        JudgeItem(f"id-{i}", "What is the capital of France?", "", r)
        for i, r in enumerate(responses)
    ]


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer(grade, retry_after=0.5, delay=1.0) as s:
        yield s


@pytest.fixture
def make_judge(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., OpenAIJudge]]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    made: list[OpenAIJudge] = []

    def make(**options: Any) -> OpenAIJudge:
        kw = dict(base_url=server.base_url, api_key_env=KEY_ENV, backoff_base=0.001, timeout=5)
        judge = OpenAIJudge(**{**kw, **options})
        made.append(judge)
        return judge

    yield make
    for judge in made:
        judge.close()


def test_normal_path_renders_the_rubric_and_reads_the_verdicts(server, make_judge):
    judge = make_judge(model="gpt-test")
    out = judge.judge(items("Paris.", "It is Lyon.", "Paris, of course."))
    assert [j.id for j in out] == ["id-0", "id-1", "id-2"]
    assert [j.verdict for j in out] == [
        Verdict.ACCEPTABLE,
        Verdict.UNACCEPTABLE,
        Verdict.ACCEPTABLE,
    ]
    assert out[0].critique is None and out[0].score == 9
    assert out[1].critique == CRITIQUE and out[1].score == 3
    assert json.loads(out[1].raw) == {"score": 3, "critique": CRITIQUE}
    assert len(server.requests) == 3 and judge.stats["retries"] == 0
    body = server.requests[0].body
    assert body["model"] == "gpt-test" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert "What is the capital of France?" in user["content"] and "(none)" in user["content"]
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_usage_is_recorded_and_summed_over_a_reask(make_judge, server):
    """gpt-4 at $0.03 / $0.06 per 1K tokens: 100 prompt + 20 completion tokens cost
    0.003 + 0.0012 = $0.0042 per request; the re-ask doubles everything."""
    server.usage = (100, 20)
    server.script(Reply("Looks fine to me."))  # no score: one re-ask
    judge = make_judge(model="gpt-4")
    [once] = judge.judge(items("Paris."))
    [plain] = make_judge(model="gpt-4").judge(items("Paris is the capital."))
    assert once.usage == {
        "requests": 2, "prompt_tokens": 200, "completion_tokens": 40,
        "cost_usd": pytest.approx(0.0084),
    }  # fmt: skip
    assert plain.usage == {
        "requests": 1, "prompt_tokens": 100, "completion_tokens": 20,
        "cost_usd": pytest.approx(0.0042),
    }  # fmt: skip
    assert judge.stats["prompt_tokens"] == 200 and judge.stats["completion_tokens"] == 40
    assert judge.stats["cost_usd"] == pytest.approx(0.0084)


def test_429_and_500_are_retried_and_counted(make_judge, server):
    server.retry_after = 0.01
    server.script("429", "500", "503")
    judge = make_judge()
    [j] = judge.judge(items("Paris."))
    assert j.acceptable
    assert judge.stats == {**judge.stats, "requests": 4, "retries": 3}


def test_a_wait_for_a_retry_is_said_once_above_the_bar(make_judge, server, capsys):
    server.script("500", "500", "429")
    out = make_judge().judge(items("Paris.", "Paris!"))
    assert all(j.acceptable for j in out)
    said = [x for x in capsys.readouterr().err.splitlines() if x.startswith("judge: ")]
    assert len(said) == 1 and said[0].startswith("judge: a request failed (HTTP 5")


def test_retry_after_is_honoured(make_judge, server):
    server.script("429")  # Retry-After: 0.5 s; our own backoff would wait ~1 ms
    [j] = make_judge().judge(items("Paris."))
    assert j.acceptable
    first, second = server.requests
    assert second.at - first.at >= 0.5


def test_gives_up_after_max_retries(make_judge, server):
    server.script("500", "500", "500")
    judge = make_judge(max_retries=2)
    [j] = judge.judge(items("Paris."))
    assert j.failed and "HTTP 500" in j.error and "3 attempts" in j.error
    assert len(server.requests) == 3 and judge.stats["failed"] == 1


def test_timeout_dropped_connection_and_garbage_are_retried(make_judge, server):
    server.delay = 3.0
    server.script("slow", "drop", "garbage", "html")
    judge = make_judge(timeout=0.5)
    [j] = judge.judge(items("Paris."))
    assert j.acceptable and judge.stats["retries"] == 4
    assert [r.behaviour for r in server.requests] == ["slow", "drop", "garbage", "html", "ok"]


def test_empty_choices_fail_after_the_retries(make_judge, server):
    server.script("empty", "empty")
    [j] = make_judge(max_retries=1).judge(items("Paris."))
    assert j.failed and "no choices" in j.error and len(server.requests) == 2


def test_a_dead_server_costs_one_retry_schedule_not_one_per_item(monkeypatch):
    """Nothing listens on the port: the first items in flight spend their attempts, every
    later item fails at once, without a request, naming why (a re-run asks them again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connecting is refused
    monkeypatch.setenv(KEY_ENV, SECRET)
    judge = OpenAIJudge(
        base_url=f"http://127.0.0.1:{port}/v1", api_key_env=KEY_ENV, concurrency=2,
        max_retries=2, backoff_base=0.01, timeout=2,
    )  # fmt: skip
    with judge:
        out = judge.judge(items(*[f"Paris {i}" for i in range(8)]))
    assert all(j.failed for j in out)
    # One item's 3 attempts, plus what the other item in flight had sent by then.
    assert 3 <= judge.stats["requests"] <= 2 * 3
    skipped = [j for j in out if j.error.startswith("not sent: the server did not answer")]
    assert len(skipped) >= 6 and all(j.usage["requests"] == 0 for j in skipped[-6:])


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [("429", "rate_limit"), ("503", "server"), ("garbage", "bad_reply"), ("empty", "bad_reply"),
     (Reply("I cannot say."), "parse")],
)  # fmt: skip
def test_failures_are_grouped_by_kind_from_the_judges_own_words(
    make_judge, server, behaviour, kind
):
    server.retry_after = 0.01
    server.script(*[behaviour] * 4)
    [j] = make_judge(max_retries=1).judge(items("Paris."))
    assert j.failed and failure_kind(j.error) == kind, j.error


def test_a_client_error_fails_the_item_without_retries(make_judge, server):
    server.script("400")  # e.g. the prompt is too long: retrying cannot help
    [j] = make_judge().judge(items("Paris."))
    assert j.failed and "HTTP 400" in j.error and len(server.requests) == 1


def test_a_rejected_key_stops_the_run_with_one_line(make_judge, server):
    server.script("401")
    with pytest.raises(CutLoopError, match="HTTP 401") as e:
        make_judge().judge(items("Paris."))
    assert "\n" not in str(e.value)


def test_malformed_answer_gets_one_reask(make_judge, server):
    server.script(Reply("Hmm, hard to say."), Reply(f"Score: 2\nCritique: {CRITIQUE}"))
    judge = make_judge()
    [j] = judge.judge(items("Paris."))
    assert j.verdict is Verdict.UNACCEPTABLE and j.critique == CRITIQUE and j.score == 2
    assert judge.stats["reasks"] == 1
    reask = server.requests[1].body["messages"]
    assert [m["role"] for m in reask] == ["system", "user", "assistant", "user"]
    assert reask[2]["content"] == "Hmm, hard to say."
    assert reask[3]["content"] == judge.rubric.reask


def test_malformed_twice_fails(make_judge, server):
    server.script(Reply("Hmm."), Reply("Still thinking."))
    [j] = make_judge().judge(items("Paris."))
    assert j.failed and j.raw == "Still thinking." and len(server.requests) == 2


def test_a_low_score_without_critique_counts_as_malformed(make_judge, server):
    server.script(Reply('{"score": 2, "critique": "acceptable"}'), Reply("Score: 8"))
    [j] = make_judge().judge(items("Paris."))
    assert j.acceptable and j.score == 8 and len(server.requests) == 2


def test_concurrency_is_bounded(make_judge, server):
    server.delay = 0.3
    server.script(*["slow"] * 4)
    out = make_judge(concurrency=2).judge(items(*[f"Paris {i}" for i in range(4)]))
    assert all(j.acceptable for j in out) and server.max_in_flight == 2


def test_identical_items_share_one_request(make_judge, server):
    out = make_judge().judge(items("Paris.", "Paris.", "Paris."))
    assert [j.id for j in out] == ["id-0", "id-1", "id-2"] and len(server.requests) == 1


def test_identical_items_pay_and_count_their_one_request_once(make_judge, server):
    out = make_judge().judge(items("Paris.", "Paris."))
    assert usage_totals(out)["requests"] == 1 and out[0].usage and not out[1].usage


def test_each_answer_is_streamed_the_moment_it_arrives(make_judge, server):
    """The slow item's answer comes last; the fast ones were handed over before it arrived."""
    server.delay = 1.0
    server.script("slow", "ok", "ok")
    seen: list[tuple[str, float]] = []
    batch = items("Paris, slowly.", "Paris.", "Paris!")
    out = make_judge(concurrency=3).judge(
        batch, on_judgment=lambda j: seen.append((j.id, time.monotonic()))
    )
    assert sorted(i for i, _ in seen) == [j.id for j in out] == ["id-0", "id-1", "id-2"]
    slow_text = next(r.response_text() for r in server.requests if r.behaviour == "slow")
    slow = next(it.id for it in batch if it.response == slow_text)
    arrival = dict(seen)
    assert seen[-1][0] == slow
    assert arrival[slow] - max(t for i, t in seen if i != slow) > 0.5


def test_cache_answers_a_second_judge_without_any_request(make_judge, server, tmp_path):
    cache = tmp_path / "cache.jsonl"
    first = make_judge(cache=str(cache)).judge(items("Paris.", "It is Lyon."))
    assert len(server.requests) == 2 and len(read_jsonl(cache)) == 2
    again = [JudgeItem("other", i.instruction, i.input, i.response) for i in items("It is Lyon.")]
    second = make_judge(cache=str(cache))
    [j] = second.judge(again)
    assert len(server.requests) == 2 and second.stats["cache_hits"] == 1
    assert j.id == "other" and j.critique == first[1].critique and j.raw == first[1].raw
    assert j.usage == {"cache_hits": 1}  # paid for once, by the first judge: free now
    assert second.stats["requests"] == 0 and second.stats["cost_usd"] == 0
    make_judge(cache=str(cache), acceptable_score=8).judge(again)  # another key: asks again
    assert len(server.requests) == 3


def test_failures_are_not_cached(make_judge, server, tmp_path):
    cache = tmp_path / "cache.jsonl"
    server.script("500", "500")
    [j] = make_judge(cache=cache, max_retries=1).judge(items("Paris."))
    assert j.failed and read_jsonl(cache) == []
    [j] = make_judge(cache=cache).judge(items("Paris."))
    assert j.acceptable and len(read_jsonl(cache)) == 1


def test_sigkill_mid_judging_then_resume_answers_each_item_exactly_once(
    server, tmp_path, monkeypatch
):
    """A child process judges 12 items, 4 requests at a time, with the run's cache. The server
    answers the first 6 requests and holds the next 4 (they never come back); once those 4 are
    in flight the child is SIGKILLed. A resume with the same cache asks only for the 6 items
    without an answer: across both runs the server answered each item exactly once, and the
    only items it saw twice are the 4 whose requests were in flight at the kill."""
    cache = tmp_path / "cache.jsonl"
    child = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from cut_loop.judging.base import JudgeItem
        from cut_loop.judging.openai_judge import OpenAIJudge
        judge = OpenAIJudge(base_url={server.base_url!r}, cache={str(cache)!r}, concurrency=4,
                            api_key_env={KEY_ENV!r}, timeout=600)
        judge.judge([JudgeItem(str(i), "Q", "", f"answer {{i}}") for i in range(12)])
    """)
    server.delay = 300  # held requests never come back (their handler threads are daemons)
    server.script(*["ok"] * 6, *["slow"] * 4)
    proc = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, KEY_ENV: SECRET})
    try:
        deadline = time.monotonic() + 45  # generous: a loaded machine starts Python slowly
        while (len(read_jsonl(cache)) < 6 or len(server.requests) < 10) and (
            time.monotonic() < deadline
        ):
            assert proc.poll() is None, "the child exited early"
            time.sleep(0.02)
        assert len(read_jsonl(cache)) == 6 and len(server.requests) == 10  # 4 in flight
        in_flight = {r.response_text() for r in server.requests if not r.answered}
        assert len(in_flight) == 4
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind in the child
        proc.wait()
    assert proc.returncode == -9
    monkeypatch.setenv(KEY_ENV, SECRET)
    with OpenAIJudge(base_url=server.base_url, cache=cache, api_key_env=KEY_ENV) as judge:
        out = judge.judge([JudgeItem(str(i), "Q", "", f"answer {i}") for i in range(12)])
    assert all(j.acceptable for j in out) and judge.stats["cache_hits"] == 6
    answered = Counter(r.response_text() for r in server.requests if r.answered)
    assert answered == Counter(f"answer {i}" for i in range(12))  # each exactly once
    seen = Counter(r.response_text() for r in server.requests)
    assert {text for text, n in seen.items() if n > 1} == in_flight
    assert len(server.requests) == 16


def test_credentials_in_the_base_url_are_refused_without_echoing_them():
    with pytest.raises(CutLoopError, match="holds credentials") as e:
        OpenAIJudge(base_url="https://me:sk-in-url@example.com/v1")
    assert "sk-in-url" not in str(e.value)


def test_the_key_never_leaves_the_process(make_judge, tmp_path):
    cache = tmp_path / "cache.jsonl"
    judge = make_judge(cache=cache)
    out = judge.judge(items("Paris.", "It is Lyon."))
    assert SECRET not in cache.read_text()
    assert SECRET not in json.dumps([j.to_dict() for j in out])
    assert SECRET.encode() not in pickle.dumps(judge)
    assert SECRET not in repr(judge) and SECRET not in json.dumps(judge.stats)


def test_missing_key_for_openai_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(CutLoopError, match=KEY_ENV) as e:
        OpenAIJudge(api_key_env=KEY_ENV)  # said at once, before the run does any work
    assert "\n" not in str(e.value)


def test_no_key_is_needed_when_everything_is_cached(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    [item] = items("Paris.")
    key = OpenAIJudge(api_key_env=KEY_ENV, client=openai.AsyncOpenAI(api_key="x")).cache_key(item)
    with JsonlAppender(tmp_path / "c.jsonl") as cache:
        cache.append({"key": key, "judgment": Judgment.accept("old").to_dict()})
    with OpenAIJudge(api_key_env=KEY_ENV, cache=tmp_path / "c.jsonl") as judge:
        [j] = judge.judge([item])
    assert j.acceptable and j.id == item.id and judge.stats["requests"] == 0


def test_missing_key_for_a_local_server_sends_a_dummy(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with OpenAIJudge(base_url=server.base_url, api_key_env=KEY_ENV) as judge:
        [j] = judge.judge(items("Paris."))
    assert j.acceptable and server.requests[0].headers["authorization"] == "Bearer EMPTY"


def test_injected_client_does_not_retry_on_its_own(server):
    client = openai.AsyncOpenAI(api_key="x", base_url=server.base_url, max_retries=4)
    server.script("500")
    with OpenAIJudge(client=client, max_retries=0) as judge:
        [j] = judge.judge(items("Paris."))
        assert j.failed and len(server.requests) == 1
        [j] = judge.judge(items("Paris."))  # the same client, a second call: still works
        assert j.acceptable


def test_judge_works_from_a_running_loop_and_from_a_thread(make_judge):
    judge = make_judge()

    async def inside_a_loop() -> bool:
        return judge.judge(items("Paris."))[0].acceptable

    assert asyncio.run(inside_a_loop())
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(judge.judge(items("Lyon"))[0].failed))
    worker.start()
    worker.join()
    assert result == [False]


WRONG = "The response is wrong."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 8, "critique": "acceptable"}', (8.0, None)),
        ('```json\n{"score": 3, "critique": "The response is wrong."}\n```', (3.0, WRONG)),
        ('Sure: {"score": "2", "judgment": "The response is wrong."} hope it helps', (2.0, WRONG)),
        ("Score: 4\nCritique: The response is wrong.", (4.0, WRONG)),
        ("**Score**: 3\n\nThe response is wrong.", (3.0, WRONG)),
        ("The response is wrong. 2/10", (2.0, WRONG)),
        ("Rating: 9 out of 10", (9.0, None)),
        ("No idea.", None),
        ('{"score": 0, "critique": "bad"}', None),
        ("Score: 11", None),
    ],
)
def test_parse_answer(text: str, expected: tuple[float, str | None] | None) -> None:
    assert parse_answer(text) == expected


def test_rubric_errors_are_one_line(tmp_path):
    with pytest.raises(CutLoopError, match=r"does not exist.*default"):
        load_rubric("no-such-rubric")
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: be strict\n")
    with pytest.raises(CutLoopError, match=r"missing or non-text key.*user"):
        load_rubric(str(bad))
    bad.write_text("system: s\nuser: 'no placeholder'\n")
    with pytest.raises(CutLoopError, match="response"):
        load_rubric(str(bad))
    bad.write_text("system: [unclosed\n")
    with pytest.raises(CutLoopError, match="not valid YAML") as e:
        load_rubric(str(bad))
    assert "\n" not in str(e.value)


def test_rubric_substitutes_only_its_placeholders():
    rubric = load_rubric("default")
    item = JudgeItem("x", "Say {input}", "", 'He wrote {"score": 1} and {instruction}.')
    user = rubric.messages(item)[1]["content"]
    assert 'He wrote {"score": 1} and {instruction}.' in user and "Say {input}" in user
    assert '{"score": <integer from 1 to 10>' in user  # the JSON example survives as written


def test_compare_reads_preferences_reasks_once_and_caches_apart_from_judgments(
    make_judge, server, tmp_path
):
    from cut_loop.judging.pairwise import PairItem

    cache = tmp_path / "cache.jsonl"
    server.script(Reply("Output (b)"), Reply("Both are fine."), Reply("Output (a)"))
    judge = make_judge(cache=cache, concurrency=1)
    pairs = [PairItem("p|ab", "Capital of France?", "", "Paris.", "Lyon."),
             PairItem("p|ba", "Capital of France?", "", "Lyon.", "Paris.")]  # fmt: skip
    ab, ba = judge.compare(pairs)
    assert (ab.id, ab.score, ab.verdict) == ("p|ab", 0.0, Verdict.UNACCEPTABLE)
    assert (ba.id, ba.score, ba.verdict) == ("p|ba", 1.0, Verdict.ACCEPTABLE)
    assert judge.stats["reasks"] == 1 and len(server.requests) == 3
    assert server.requests[2].body["messages"][-1]["content"] == judge.pairwise_rubric.reask
    assert "### Output (a):\nParis." in server.requests[0].body["messages"][1]["content"]
    # Cached per pair: asked again, nothing is sent; the same texts as a scored item are not
    # answered from the pairwise cache.
    again = make_judge(cache=cache)
    assert [j.score for j in again.compare(pairs)] == [0.0, 1.0] and len(server.requests) == 3
    again.judge(items("Paris."))
    assert len(server.requests) == 4
