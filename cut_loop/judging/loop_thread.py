"""`LoopThread`: run coroutines on one long-lived event loop in a daemon thread, from sync code.

Why not `asyncio.run` per call: an `openai.AsyncOpenAI` client is bound to the loop that first
used it (a new loop per call breaks it), and the caller may itself be inside a running loop (a
notebook), where `asyncio.run` cannot be called at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Started on the first `run`; `close` stops it, and a later `run` starts a fresh one.
    `run` may be called from any thread, several at once (their coroutines share the loop)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (or exception)."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
                self._thread.start()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller also stops the coroutine (and its requests)
            raise

    def close(self) -> None:
        """Stop the loop and join its thread; a no-op when it is not running."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
