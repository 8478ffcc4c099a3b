"""The OpenAI judge's money side: request and spend budgets, token and cost accounting, prices,
and the retry delays (backoff with jitter, Retry-After). Real openai client, loopback server."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import JudgeItem, usage_totals
from cut_loop.judging.openai_judge import OpenAIJudge
from cut_loop.judging.pricing import Budget, BudgetReached, table_price
from cut_loop.judging.registry import load_judge
from cut_loop.judging.retry import MAX_RETRY_AFTER, backoff_delay, retry_after_seconds
from cut_loop.judging.rubric import load_rubric
from tests.helpers.chat_server import ChatServer

KEY_ENV = "CUT_LOOP_TEST_JUDGE_KEY"


def items(n: int) -> list[JudgeItem]:
    """n distinct items whose prompts all have the same length (responses "Paris 0".."Paris 9")."""
    question = "What is the capital of France?"
    return [JudgeItem(f"id-{i}", question, "", f"Paris {i}") for i in range(n)]


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer(retry_after=0.01) as s:
        yield s


@pytest.fixture
def make_judge(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., OpenAIJudge]]:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    made: list[OpenAIJudge] = []

    def make(**options: Any) -> OpenAIJudge:
        kw = dict(base_url=server.base_url, api_key_env=KEY_ENV, backoff_base=0.001, timeout=5)
        made.append(OpenAIJudge(**{**kw, **options}))
        return made[-1]

    yield make
    for judge in made:
        judge.close()


# --- budgets -----------------------------------------------------------------------------------
def test_request_budget_fails_the_rest_without_sending_them(make_judge, server):
    judge = make_judge(max_requests=3, concurrency=2)
    out = judge.judge(items(5))
    assert len(server.requests) == 3
    assert sum(j.acceptable for j in out) == 3
    refused = [j for j in out if j.failed]
    assert len(refused) == 2 and judge.stats["budget_reached"] == 2
    for j in refused:
        assert j.error == "budget reached: 3 requests sent (max_requests=3)"
        assert j.usage["requests"] == 0
    # The same judge stays stopped: a later batch sends nothing either.
    [j] = judge.judge(items(6)[5:])
    assert j.failed and j.error.startswith("budget reached") and len(server.requests) == 3


def test_retries_and_reasks_count_against_the_request_budget(make_judge, server):
    server.script("500", "500")  # the first item takes 3 requests
    judge = make_judge(max_requests=4, concurrency=1)
    first, second, third = judge.judge(items(3))
    assert first.acceptable and first.usage["requests"] == 3
    assert second.acceptable and third.failed and len(server.requests) == 4


def test_a_budget_stop_mid_retries_keeps_what_was_spent(make_judge, server):
    server.script("500", "500", "500")
    [j] = make_judge(max_requests=2, max_retries=5).judge(items(1))
    assert j.failed and j.error.startswith("budget reached") and j.usage["requests"] == 2


def test_spend_budget_stops_before_going_over(make_judge, server):
    """$0.01 / $0.02 per 1K tokens; each answer reports 1000 + 100 tokens: $0.012 a request.
    With $0.05 the judge sends 4 requests ($0.048): a fifth would make $0.06."""
    server.usage = (1000, 100)
    judge = make_judge(max_cost_usd=0.05, price_prompt=0.01, price_completion=0.02, concurrency=1)
    out = judge.judge(items(6))
    assert len(server.requests) == 4 and sum(j.acceptable for j in out) == 4
    assert judge.stats["cost_usd"] == pytest.approx(0.048)
    assert all(j.error.startswith("budget reached: $0.0480 spent") for j in out if j.failed)
    assert usage_totals(out)["cost_usd"] == pytest.approx(0.048)


def test_requests_in_flight_are_reserved_against_the_spend_budget(make_judge, server):
    """Prices $1 per 1K prompt tokens, completions free, and the server reports exactly the
    judge's own prompt estimate (characters / 4), so estimate == cost == P / 1000 for each of
    these equal-length items. A budget of 3.5 requests admits 3; without reservations all 16
    would go out at once, before any answer (and its cost) came back."""
    [item] = items(1)
    chars = sum(len(m["content"]) for m in load_rubric("default").messages(item))
    p = round(chars * 0.25)
    server.usage = (p, 0)
    server.latency = 0.2  # all admitted requests are in flight together
    judge = make_judge(
        max_cost_usd=3.5 * p / 1000, price_prompt=1.0, price_completion=0.0, concurrency=16
    )
    out = judge.judge(items(10))
    assert len(server.requests) == 3 and server.max_in_flight == 3
    assert sum(j.acceptable for j in out) == 3
    assert judge.stats["cost_usd"] == pytest.approx(3 * p / 1000)


def test_budget_reservations_are_released_when_requests_fail(make_judge, server):
    server.script("500", "500", "500", "500")
    server.usage = (1000, 0)
    judge = make_judge(
        max_cost_usd=0.5, price_prompt=0.01, price_completion=0.0, max_retries=4, concurrency=1
    )
    [j] = judge.judge(items(1))
    assert j.acceptable and judge.budget._reserved_usd == pytest.approx(0.0)
    assert judge.stats["cost_usd"] == pytest.approx(0.01)  # failed requests reported no tokens


def test_zero_requests_means_cache_only(make_judge, server, tmp_path):
    cache = tmp_path / "cache.jsonl"
    make_judge(cache=cache).judge(items(1))
    out = make_judge(cache=cache, max_requests=0).judge(items(2))
    assert out[0].acceptable and out[0].usage == {"cache_hits": 1}
    assert out[1].failed and out[1].error.startswith("budget reached")
    assert len(server.requests) == 1


# --- cost accounting ---------------------------------------------------------------------------
def test_unknown_model_counts_tokens_but_not_dollars(make_judge, server):
    server.usage = (50, 5)
    judge = make_judge(model="my-local-judge")
    [j] = judge.judge(items(1))
    assert j.usage == {"requests": 1, "prompt_tokens": 50, "completion_tokens": 5}
    assert judge.stats["cost_usd"] is None and judge.stats["prompt_tokens"] == 50


def test_configured_prices_override_the_table(make_judge, server):
    server.usage = (2000, 500)
    [j] = make_judge(model="gpt-4", price_prompt=0.0, price_completion=0.0).judge(items(1))
    assert j.usage["cost_usd"] == 0.0  # e.g. a local server that happens to be named gpt-4


def test_a_spend_budget_needs_a_price():
    with pytest.raises(CutLoopError, match="max_cost_usd needs the price of model 'mystery'"):
        OpenAIJudge(model="mystery", max_cost_usd=1.0, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(CutLoopError, match=r"bad option: set both price_prompt") as e:
        load_judge("openai", {"model": "mystery", "price_prompt": 0.1})
    assert "\n" not in str(e.value)
    with pytest.raises(CutLoopError, match="must be >= 0"):
        load_judge("openai", {"max_requests": -1})


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4", (0.03, 0.06)),
        ("gpt-4-0613", (0.03, 0.06)),
        ("gpt-4-0125-preview", (0.01, 0.03)),
        ("gpt-4o-2024-08-06", (0.0025, 0.01)),
        ("gpt-4o-mini-2024-07-18", (0.00015, 0.0006)),
        ("gpt-4.1-mini", (0.0004, 0.0016)),
        ("gpt-4omni", None),
        ("llama-3-70b", None),
    ],
)
def test_table_price(model: str, price: tuple[float, float] | None) -> None:
    assert table_price(model) == price


def test_budget_ledger_by_hand():
    """Price (1, 2) per 1K. Before any answer a 4000-character prompt is estimated at 1000
    prompt tokens and 200 completion tokens: 1.0 + 0.4 = $1.40."""
    b = Budget(max_requests=None, max_cost_usd=3.0, price=(1.0, 2.0))
    first = b.reserve(4000)
    assert first == pytest.approx(1.4)
    second = b.reserve(4000)  # 2.8 reserved: a third (4.2) would exceed 3.0
    with pytest.raises(BudgetReached, match=r"\$0.0000 spent, \$2.8000 in flight"):
        b.reserve(4000)
    assert b.settle(first, 4000, 500, 100) == pytest.approx(0.7)  # 0.5 + 0.2
    # Now the estimate learns: 500 tokens per 4000 chars, 100 completion tokens -> $0.70.
    assert b.estimate(4000) == pytest.approx(0.7)
    b.settle(second, 4000, 500, 100)
    assert b.spent_usd == pytest.approx(1.4) and b.requests == 2
    b.reserve(4000)  # 1.4 + 0.7 <= 3.0


# --- retry delays ------------------------------------------------------------------------------
def test_backoff_grows_exponentially_with_jitter():
    rng = random.Random(0)
    for attempt in range(8):
        cap = min(10.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, None, 0.5, 10.0, rng) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) == 50  # jittered: no two retries in lock-step


def test_retry_after_is_honoured_with_a_little_jitter():
    rng = random.Random(0)
    delays = [backoff_delay(0, 2.0, 0.001, 0.01, rng) for _ in range(50)]
    assert all(2.0 <= d <= 2.2 for d in delays) and len(set(delays)) == 50
    assert backoff_delay(0, 10**6, 1, 1, rng) <= MAX_RETRY_AFTER * 1.1


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_an_http_date():
    import time

    wait = retry_after_seconds({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert wait is not None and 28 <= wait <= 30
