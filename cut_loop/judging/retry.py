"""When to retry an HTTP judge request, and how long to wait first."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

RETRY_STATUS = {408, 409, 429}  # plus every 5xx
FATAL_STATUS = {401, 403, 404}  # wrong key, no access, wrong model or URL: every item would fail
MAX_RETRY_AFTER = 600.0  # seconds; a sanity cap on what a server may ask us to wait


def retryable(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


def backoff_delay(
    attempt: int, retry_after: float | None, base: float, cap: float, rng: random.Random = random
) -> float:
    """Seconds to wait before retry number `attempt` + 1 (attempt 0 failed first).

    With a Retry-After the server knows best: wait that long (capped at MAX_RETRY_AFTER) plus
    0-10% jitter, so that the many requests a 429 stopped at once do not all return at once.
    Without one: exponential backoff with "equal jitter", uniform in [c/2, c] where
    c = min(cap, base * 2**attempt): never less than half the backoff, never in lock-step.
    """
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER) * (1 + 0.1 * rng.random())
    c = min(cap, base * 2**attempt)
    return c / 2 + rng.uniform(0, c / 2)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if present."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
