"""`OpenAIJudge`: an LLM judge over any OpenAI-compatible chat endpoint (GPT-4, vLLM, ...).

The rubric (judges/<name>.yaml) asks for a score 1-10 and a CUT-style critique; score >=
`acceptable_score` is acceptable, anything lower is unacceptable with the critique. Requests run
concurrently on a private event loop; transient errors (429, 5xx, timeouts, dropped connections,
empty or unreadable bodies) are retried here, not inside the openai client, with exponential
backoff + jitter, honouring Retry-After. A malformed answer gets one re-ask, then the item fails.

With `cache=<file.jsonl>`, each answered item is appended (fsynced) as soon as it arrives and
looked up before any request, so a run killed mid-batch never pays twice for an item.

Every request is counted against a `Budget` (pricing.py) before it is sent: once `max_requests`
or `max_cost_usd` is reached, the items still waiting come back as failed judgments ("budget
reached: ...") without a request, the loop stops the round with that one line, and a re-run
judges only what is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletion

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import JudgeItem, Judgment, OnJudgment
from cut_loop.judging.loop_thread import LoopThread
from cut_loop.judging.pairwise import PairItem, load_pair_rubric, preference_from_answer
from cut_loop.judging.pricing import Budget, BudgetReached, table_price
from cut_loop.judging.retry import FATAL_STATUS, backoff_delay, retry_after_seconds, retryable
from cut_loop.judging.rubric import judgment_from_answer, load_rubric
from cut_loop.progress import console
from cut_loop.rundir import JsonlAppender, read_jsonl

OPENAI_URL = "https://api.openai.com/v1"
WAIT_NOTICE_S = 30.0

# Reads a judgment out of the model's answer text (None: unreadable, re-ask).
Reader = Callable[[str, str, dict[str, float]], Judgment | None]


class OpenAIJudge:
    """Judge with an OpenAI-compatible chat model.

    Options: `model` ("gpt-4"); `base_url` (None: $OPENAI_BASE_URL, else OpenAI); `api_key_env`
    ("OPENAI_API_KEY": the variable the key is read from when the first request needs it; the
    key lives only inside the HTTP client, never in the pickled judge, the cache, a judgment
    or a log); `concurrency` (32 requests in
    flight); `timeout` (60 s per request); `max_retries` (5 per request); `rubric` ("default":
    a name in judges/ or a YAML path); `acceptable_score` (7); `cache` (None, or an append-only
    JSONL path); `temperature` (0); `backoff_base` / `backoff_max` (1 s / 60 s: retry delays
    grow as base * 2**attempt, capped, with jitter); `client` (an `openai.AsyncOpenAI` to use
    instead of building one, e.g. in tests; it must stay on this judge's event loop);
    `max_requests` / `max_cost_usd` (None: no limit; requests of this judge object, retries and
    re-asks included, and their estimated USD cost); `price_prompt` / `price_completion` (USD
    per 1K tokens; default: pricing.PRICES_PER_1K by model name, else unknown, which is fine
    unless `max_cost_usd` is set); `pairwise_rubric` ("default": judges/pairwise/<name>.yaml or a
    path; the prompt of `compare`, for `cutloop eval --pairwise`).

    `stats` counts, since construction: requests, retries, reasks, cache_hits, failed items,
    budget_reached (items failed by a budget, no request sent), prompt_tokens,
    completion_tokens and cost_usd (None when the price is unknown).
    """

    def __init__(
        self,
        *,
        model: str = "gpt-4",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout: float = 60.0,
        max_retries: int = 5,
        rubric: str = "default",
        acceptable_score: float = 7,
        cache: str | Path | None = None,
        temperature: float = 0.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        client: openai.AsyncOpenAI | None = None,
        max_requests: int | None = None,
        max_cost_usd: float | None = None,
        price_prompt: float | None = None,
        price_completion: float | None = None,
        pairwise_rubric: str = "default",
    ) -> None:
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout > 0")
        if (max_requests is not None and max_requests < 0) or (
            max_cost_usd is not None and max_cost_usd < 0
        ):
            raise ValueError("max_requests and max_cost_usd must be >= 0")
        if (price_prompt is None) != (price_completion is None):
            raise ValueError("set both price_prompt and price_completion (USD per 1K tokens)")
        price = (
            (float(price_prompt), float(price_completion))  # type: ignore[arg-type]
            if price_prompt is not None
            else table_price(model)
        )
        if max_cost_usd is not None and price is None:
            raise CutLoopError(
                f"judge 'openai': max_cost_usd needs the price of model {model!r}; set "
                "judge.price_prompt and judge.price_completion (USD per 1K tokens)"
            )
        self.budget = Budget(max_requests, max_cost_usd, price)
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        url = urlsplit(self.base_url)
        if url.username or url.password:  # not echoed: the message may land in a CI log
            raise CutLoopError(
                "judge.base_url holds credentials (user:key@host), which would be saved with"
                f" the run's config; give the key in ${api_key_env} (judge.api_key_env) instead"
            )
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.rubric = load_rubric(rubric)
        self.pairwise_rubric = load_pair_rubric(pairwise_rubric)
        self.acceptable_score = float(acceptable_score)
        self.cache_path = Path(cache) if cache else None
        keyless = client is None and not os.environ.get(api_key_env)
        if keyless and self.base_url == OPENAI_URL and not self._cached():
            # Said now, not at the first request minutes later (a resume whose answers are all
            # in the cache needs no key, and finds out at its first request if it does).
            raise self._no_key()
        self.temperature = float(temperature)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # Our own retries only: counted, tested, and Retry-After is honoured exactly once.
        self._client = client.with_options(max_retries=0) if client is not None else None
        self._owns_client = client is None
        self._runner = LoopThread()
        # Set once a request spent every attempt without any HTTP answer (the server is down
        # or hangs); the items still to ask then fail at once, and a re-run asks them again.
        self._unreachable: str | None = None
        self._told_waiting = -float("inf")
        self.stats: dict[str, Any] = dict.fromkeys(
            ("requests", "retries", "reasks", "cache_hits", "failed", "budget_reached",
             "prompt_tokens", "completion_tokens"), 0,
        )  # fmt: skip
        self.stats["cost_usd"] = None if price is None else 0.0

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        # The client (which holds the key) and the event loop stay with this process.
        state = self.__dict__.copy()
        state.update(_client=None, _owns_client=True, _runner=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _runner=LoopThread())

    # --- the protocol ----------------------------------------------------------------------------
    def judge(
        self, items: Sequence[JudgeItem], on_judgment: OnJudgment | None = None
    ) -> list[Judgment]:
        """One judgment per item, in order. `on_judgment` (optional) is called, on this judge's
        thread, with each asked item's judgment the moment it arrives (not with cache hits).
        Safe to call from any thread, with or without a running event loop there. Raises
        CutLoopError only for problems no retry can fix (missing key, 401/403/404): answers
        already received are in the cache and given to `on_judgment` by then."""
        return self._runner.run(self._judge_all(list(items), on_judgment))

    def close(self) -> None:
        """Stop the event loop thread and close the HTTP client, unless it was injected."""
        if not self._runner.running:
            return
        if self._client is not None and self._owns_client:
            self._runner.run(self._client.close())
            self._client = None  # a later call builds a new one on the new loop
        self._runner.close()

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cached(self) -> bool:
        return (
            self.cache_path is not None
            and self.cache_path.is_file()
            and (self.cache_path.stat().st_size > 0)
        )

    def _no_key(self) -> CutLoopError:
        return CutLoopError(
            f"judge 'openai': set {self.api_key_env} to an OpenAI API key "
            "(or judge.base_url to a local OpenAI-compatible server)"
        )

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            key = os.environ.get(self.api_key_env)
            if not key:
                if self.base_url == OPENAI_URL:
                    raise self._no_key()
                key = "EMPTY"  # local servers (vLLM, llama.cpp) ignore it, the client needs one
            self._client = openai.AsyncOpenAI(
                api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0
            )
            self._owns_client = True
        return self._client

    # --- judging ----------------------------------------------------------------------------------
    def cache_key(self, item: JudgeItem) -> str:
        """sha256 over everything that determines the answer; the item id is not part of it."""
        parts = [self.model, self.base_url, self.rubric.fingerprint, self.acceptable_score,
                 self.temperature, item.instruction, item.input, item.response]  # fmt: skip
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()

    def compare(self, pairs: Sequence[PairItem]) -> list[Judgment]:
        """Which of two outputs the model prefers, one judgment per pair in order (score 1.0:
        `first`; see judging/pairwise.py), with the rubric `pairwise_rubric`. Cached, budgeted
        and retried exactly as `judge` is."""
        return self._runner.run(self._compare_all(list(pairs)))

    def pair_key(self, pair: PairItem) -> str:
        rubric = self.pairwise_rubric.fingerprint
        parts = ["pairwise", self.model, self.base_url, rubric, self.temperature,
                 pair.instruction, pair.input, pair.first, pair.second]  # fmt: skip
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()

    async def _judge_all(
        self, items: list[JudgeItem], on_judgment: OnJudgment | None = None
    ) -> list[Judgment]:
        def read(id: str, text: str, usage: dict[str, float]) -> Judgment | None:
            return judgment_from_answer(id, text, self.acceptable_score, usage)

        return await self._answer_all(
            [self.cache_key(it) for it in items], [it.id for it in items],
            [self.rubric.messages(it) for it in items], self.rubric.reask, read,
            "the judge's answer has no score 1-10 (twice)", on_judgment,
        )  # fmt: skip

    async def _compare_all(self, pairs: list[PairItem]) -> list[Judgment]:
        def read(id: str, text: str, usage: dict[str, float]) -> Judgment | None:
            return preference_from_answer(id, text, usage)

        rubric = self.pairwise_rubric
        return await self._answer_all(
            [self.pair_key(p) for p in pairs], [p.id for p in pairs],
            [rubric.messages(p) for p in pairs], rubric.reask, read,
            "the judge's answer names neither output (twice)",
        )  # fmt: skip

    async def _answer_all(
        self,
        keys: list[str],
        ids: list[str],
        prompts: list[list[dict[str, str]]],
        reask: str,
        read: Reader,
        unread: str,
        on_judgment: OnJudgment | None = None,
    ) -> list[Judgment]:
        """One judgment per prompt: from the cache when its key was answered before, else asked
        (concurrently, each appended to the cache and given to `on_judgment` the moment it
        arrives)."""
        cached: dict[str, dict[str, Any]] = {}
        if self.cache_path is not None:
            cached = {row["key"]: row["judgment"] for row in read_jsonl(self.cache_path)}
        todo = {k: (id, m) for k, id, m in zip(keys, ids, prompts, strict=True) if k not in cached}
        ids_of: dict[str, list[str]] = {}  # duplicates share one request
        for key, id in zip(keys, ids, strict=True):
            ids_of.setdefault(key, []).append(id)
        fresh: dict[str, Judgment] = {}
        client = self._get_client() if todo else None  # no key needed when all are cached
        appender = JsonlAppender(self.cache_path) if self.cache_path and todo else None
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(key: str, id: str, messages: list[dict[str, str]]) -> None:
            async with semaphore:
                judgment = await self._ask(client, id, messages, reask, read, unread)
            fresh[key] = judgment
            if appender is not None and not judgment.failed:
                appender.append({"key": key, "judgment": judgment.to_dict()})
            if on_judgment is not None:
                # The request is paid once; its usage goes with the first item that asked.
                for n, same in enumerate(ids_of[key]):
                    on_judgment(replace(judgment, id=same, usage=judgment.usage if n == 0 else {}))

        tasks = [asyncio.ensure_future(one(k, *todo[k])) for k in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if appender is not None:
                appender.close()
        out, paid = [], set()
        for key, id in zip(keys, ids, strict=True):
            if key in cached:  # paid for before: costs nothing now
                self.stats["cache_hits"] += 1
                hit = {**cached[key], "id": id, "usage": {"cache_hits": 1}}
                out.append(Judgment.from_dict(hit))
            else:  # duplicates share one request, and its usage is counted once
                usage = fresh[key].usage if key not in paid else {}
                paid.add(key)
                out.append(replace(fresh[key], id=id, usage=usage))
        self.stats["failed"] += sum(j.failed for j in out)
        return out

    async def _ask(
        self,
        client: Any,
        id: str,
        messages: list[dict[str, str]],
        reask: str,
        read: Reader,
        unread: str,
    ) -> Judgment:
        """Ask once; if `read` finds no judgment in the answer, re-ask once, then fail."""
        usage: dict[str, float] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        if self.budget.price is not None:
            usage["cost_usd"] = 0.0
        try:
            text, error = await self._complete(client, messages, usage)
            if text is None:
                return Judgment.fail(id, error or "no answer", usage=usage)
            verdict = read(id, text, usage)
            if verdict is not None:
                return verdict
            self.stats["reasks"] += 1
            messages = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": reask}]  # fmt: skip
            again, error = await self._complete(client, messages, usage)
        except BudgetReached as e:
            self.stats["budget_reached"] += 1
            return Judgment.fail(id, str(e), usage=usage)
        if again is None:
            return Judgment.fail(id, f"re-ask: {error}", raw=text, usage=usage)
        verdict = read(id, again, usage)
        if verdict is not None:
            return verdict
        return Judgment.fail(id, unread, raw=again, usage=usage)

    async def _complete(
        self, client: Any, messages: list[dict[str, str]], usage: dict[str, float]
    ) -> tuple[str | None, str | None]:
        """(answer text, None), or (None, why) once the retries are spent or the error is one a
        retry cannot fix. Adds every request, its tokens and cost to `usage` and `stats`.
        Raises BudgetReached, sending nothing, when the next attempt would exceed the budget."""
        error = "no attempt"
        chars = sum(len(m["content"]) for m in messages)
        unreachable = True  # every attempt so far got no HTTP answer at all
        for attempt in range(self.max_retries + 1):
            if self._unreachable is not None:
                # Another request spent all its attempts on a server that never answered: do
                # not spend this item's too (1000 items would wait hours, 32 at a time).
                return None, f"not sent: {self._unreachable}"
            reserved = self.budget.reserve(chars)
            if attempt:
                self.stats["retries"] += 1
            self.stats["requests"] += 1
            usage["requests"] += 1
            resp, retry_after, final = None, None, False
            try:
                resp = await client.chat.completions.create(
                    model=self.model, messages=messages, temperature=self.temperature,
                    timeout=self.timeout,
                )  # fmt: skip
            except openai.APIStatusError as e:
                status, message = e.status_code, _one_line(e.message)
                if status in FATAL_STATUS:
                    raise CutLoopError(
                        f"judge 'openai' ({self.base_url}, model {self.model!r}): HTTP {status}:"
                        f" {message}"
                    ) from None
                error, final = f"HTTP {status}: {message}", not retryable(status)
                retry_after = retry_after_seconds(e.response.headers)
                unreachable = False
            except openai.APITimeoutError:
                error = f"timed out after {self.timeout:g} s"
            except openai.APIConnectionError as e:
                error = f"connection error: {_one_line(str(e.__cause__ or e))}"
            except (json.JSONDecodeError, openai.APIResponseValidationError):
                error = "the server's reply is not a chat completion"
            if resp is not None:
                unreachable = False
                self._unreachable = None
            if resp is not None and not isinstance(resp, ChatCompletion):
                # A 200 that is not JSON at all (a proxy's HTML page): the client hands back
                # the body as a string. Retryable, like any garbled reply.
                resp, error = None, "the server's reply is not a chat completion"
            tokens = (0, 0)
            if resp is not None and resp.usage is not None:
                tokens = (resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0)
            self._account(reserved, chars, tokens, usage)
            if resp is not None:
                if resp.choices and resp.choices[0].message.content:
                    return resp.choices[0].message.content, None
                error = "the reply has no choices" if not resp.choices else "the reply is empty"
            if final:
                return None, error  # e.g. 400 prompt too long: a retry cannot help
            if attempt < self.max_retries:
                delay = backoff_delay(attempt, retry_after, self.backoff_base, self.backoff_max)
                self._say_waiting(delay, error)
                await asyncio.sleep(delay)
        error = f"{error} (gave up after {self.max_retries + 1} attempts)"
        if unreachable:
            self._unreachable = f"the server did not answer: {error}"
        return None, error

    def _say_waiting(self, delay: float, error: str) -> None:
        """A line above the progress bar while requests wait to be retried (at most one per
        WAIT_NOTICE_S), so a stalled bar reads as a server that is slow to answer."""
        now = time.monotonic()
        if now - self._told_waiting >= WAIT_NOTICE_S:
            self._told_waiting = now
            console.print(
                f"judge: a request failed ({error}); retrying in {delay:.0f} s", soft_wrap=True
            )

    def _account(
        self, reserved: float, chars: int, tokens: tuple[int, int], usage: dict[str, float]
    ) -> None:
        """Settle one request with the budget; add its tokens and cost to `usage` and `stats`."""
        cost = self.budget.settle(reserved, chars, *tokens)
        for key, n in zip(("prompt_tokens", "completion_tokens"), tokens, strict=True):
            usage[key] += n
            self.stats[key] += n
        if cost is not None:
            usage["cost_usd"] += cost
            self.stats["cost_usd"] += cost


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]
