"""What a chat-completions request costs, and the request / spend budget of one judge.

Prices are USD per 1,000 tokens, (prompt, completion). The table holds OpenAI's list prices for
common judge models (checked 2025; prices change, so `price_prompt` / `price_completion`
override it). A model not in the table has an unknown cost: its tokens are still counted, but a
spend budget cannot be enforced for it (the judge refuses to start rather than overspend).
"""

from __future__ import annotations

from dataclasses import dataclass

from cut_loop.judging.base import BUDGET_REACHED

PRICES_PER_1K: dict[str, tuple[float, float]] = {
    "gpt-4": (0.03, 0.06),
    "gpt-4-32k": (0.06, 0.12),
    "gpt-4-turbo": (0.01, 0.03),
    "gpt-4-1106-preview": (0.01, 0.03),
    "gpt-4-0125-preview": (0.01, 0.03),
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "gpt-3.5-turbo": (0.0005, 0.0015),
}


def table_price(model: str) -> tuple[float, float] | None:
    """The table's price for `model`, or for the longest table name it is a dated snapshot of
    ("gpt-4o-2024-08-06" -> "gpt-4o", "gpt-4-0613" -> "gpt-4"); None when unknown."""
    matches = [name for name in PRICES_PER_1K if model == name or model.startswith(name + "-")]
    return PRICES_PER_1K[max(matches, key=len)] if matches else None


def request_cost(price: tuple[float, float], prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one request's tokens at `price` (per 1K prompt / completion tokens)."""
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1000


class BudgetReached(Exception):
    """The next request would go over a budget; the message says which (one line)."""


@dataclass
class Budget:
    """Request and spend limits of one judge object (so: of one `cutloop run` invocation; a
    re-run starts afresh, and answers it already paid for come from the cache for free), and
    the ledger they are checked against.

    Not thread-safe: the OpenAI judge calls it from its one event-loop thread only.

    Spend is checked *before* a request is sent, against what was spent plus an estimate of
    every request still in flight (so 32 concurrent requests cannot all slip under the line at
    once). An estimate can be low, so the spend can overshoot `max_cost_usd` by at most the
    estimation error of the requests in flight; the request limit is exact.
    """

    max_requests: int | None = None
    max_cost_usd: float | None = None
    price: tuple[float, float] | None = None
    requests: int = 0
    spent_usd: float = 0.0
    _reserved_usd: float = 0.0
    _answered: int = 0
    _prompt_tokens: int = 0
    _prompt_chars: int = 0
    _completion_tokens: int = 0

    def reserve(self, prompt_chars: int) -> float:
        """Count the next request (of about `prompt_chars` characters) and reserve its estimated
        cost, returned for `settle`; raises BudgetReached, counting nothing, when it must not
        be sent."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise BudgetReached(
                f"{BUDGET_REACHED}: {self.requests} requests sent"
                f" (max_requests={self.max_requests})"
            )
        estimate = self.estimate(prompt_chars)
        if self.max_cost_usd is not None and (
            self.spent_usd + self._reserved_usd + estimate > self.max_cost_usd
        ):
            raise BudgetReached(
                f"{BUDGET_REACHED}: ${self.spent_usd:.4f} spent, ${self._reserved_usd:.4f} in "
                f"flight, next request ~${estimate:.4f} (max_cost_usd={self.max_cost_usd:g})"
            )
        self.requests += 1
        self._reserved_usd += estimate
        return estimate

    def settle(
        self, reserved: float, prompt_chars: int, prompt_tokens: int, completion_tokens: int
    ) -> float | None:
        """Record a request that came back (answered or not: tokens are 0 when the reply had no
        usage) and release its reservation; returns its cost, None when the price is unknown."""
        self._reserved_usd = max(0.0, self._reserved_usd - reserved)
        if prompt_tokens or completion_tokens:
            self._answered += 1
            self._prompt_tokens += prompt_tokens
            self._prompt_chars += prompt_chars
            self._completion_tokens += completion_tokens
        if self.price is None:
            return None
        cost = request_cost(self.price, prompt_tokens, completion_tokens)
        self.spent_usd += cost
        return cost

    def estimate(self, prompt_chars: int) -> float:
        """A request's expected cost: prompt characters at the tokens-per-character seen so far
        (1/4 before any answer), plus the mean completion seen so far (200 tokens before)."""
        if self.price is None:
            return 0.0
        if self._answered:
            per_char = self._prompt_tokens / max(1, self._prompt_chars)
            completion = self._completion_tokens / self._answered
        else:
            per_char, completion = 0.25, 200.0
        return request_cost(self.price, round(prompt_chars * per_char), round(completion))
