"""A real OpenAI-compatible chat server on loopback, for testing judges without a network.

`ChatServer` runs `http.server.ThreadingHTTPServer` on 127.0.0.1 (port 0: the OS picks a free
one) in a daemon thread and answers `POST /v1/chat/completions`. What each request gets is
scripted: `server.script(...)` queues behaviours that are consumed one per request, in arrival
order; once the queue is empty every request gets `default` (a normal answer). Every request
seen is recorded (`server.requests`: parsed JSON body + headers + the behaviour it got + whether
a chat completion was written back), and `server.max_in_flight` is the most requests it was
handling at once. `latency` (seconds) delays every answer, like a real model's response time;
requests are served concurrently (one thread each), so N clients in flight wait ~latency, not
N x latency.

Behaviours (strings or `Reply`):
- "ok": a normal answer computed by `answer_fn(request_body) -> str` (default: score 8);
- "429": HTTP 429 with `Retry-After: <retry_after>` seconds;
- any other three-digit code ("500", "400", "401"): that status with an OpenAI-style error body;
- "slow": sleeps `delay` seconds before answering normally (past the client's timeout);
- "garbage": HTTP 200 with a body that is not JSON (but says it is);
- "html": HTTP 200 with an HTML page as text/html (a proxy's error page);
- "empty": HTTP 200 with `"choices": []`;
- "drop": closes the socket without writing a response;
- Reply(content="..."): HTTP 200 whose assistant message is exactly `content`.

Use as a context manager; `close()` stops the thread and frees the port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when a client opens dozens at once;
    # the kernel then retransmits the SYN a second later, which looks like server latency.
    request_queue_size = 512
    daemon_threads = True


@dataclass(frozen=True)
class Reply:
    """A 200 answer whose assistant message text is exactly `content`."""

    content: str


Behaviour = str | Reply


def default_answer(body: dict[str, Any]) -> str:
    return json.dumps({"score": 8, "critique": "acceptable"})


@dataclass
class SeenRequest:
    body: dict[str, Any]
    headers: dict[str, str]  # names in lower case
    behaviour: Behaviour
    at: float  # time.monotonic() when it arrived
    answered: bool = False  # a chat completion (HTTP 200) was written back in full

    def response_text(self) -> str:
        """The text being judged: the `### Response:` section of the rubric's user message."""
        user = next(m["content"] for m in self.body["messages"] if m["role"] == "user")
        return user.split("### Response:\n", 1)[-1].split("\n\n### ", 1)[0].strip()


class ChatServer:
    def __init__(
        self,
        answer_fn: Callable[[dict[str, Any]], str] = default_answer,
        *,
        retry_after: float = 1.0,
        delay: float = 2.0,
        usage: tuple[int, int] = (11, 7),
        latency: float = 0.0,
    ) -> None:
        self.answer_fn = answer_fn
        self.retry_after = retry_after
        self.delay = delay
        self.latency = latency
        self.usage = usage
        self.requests: list[SeenRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._queue: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in arrival order."""
        with self._lock:
            self._queue.extend(behaviours)

    def _next(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else "ok"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the handler ---------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real API
            # Headers and body go out in two writes; with Nagle's algorithm on, the second
            # waits for the client's delayed ACK (~40 ms), a latency no real server adds.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(raw)
                behaviour = server._next()
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = SeenRequest(body, headers, behaviour, time.monotonic())
                with server._lock:
                    server.requests.append(seen)
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    if server.latency:
                        time.sleep(server.latency)
                    seen.answered = server._respond(self, body, behaviour)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _send(
                self, status: int, obj: Any, headers: dict[str, str] | None = None,
                content_type: str = "application/json",
            ) -> None:  # fmt: skip
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        return Handler

    def _respond(self, h: Any, body: dict[str, Any], behaviour: Behaviour) -> bool:
        """Answer one request; True when a chat completion was written back in full."""
        if isinstance(behaviour, Reply):
            h._send(200, self._completion(body, behaviour.content))
        elif behaviour == "ok":
            h._send(200, self._completion(body, self.answer_fn(body)))
        elif behaviour == "slow":
            time.sleep(self.delay)
            try:
                h._send(200, self._completion(body, self.answer_fn(body)))
            except OSError:  # the client gave up and hung up first: expected
                return False
        else:
            self._fault(h, body, behaviour)
            return False
        return True

    def _fault(self, h: Any, body: dict[str, Any], behaviour: str) -> None:
        if behaviour == "429":
            err = {"error": {"message": "Rate limit reached", "type": "rate_limit"}}
            h._send(429, err, {"Retry-After": f"{self.retry_after:g}"})
        elif behaviour.isdigit() and len(behaviour) == 3:
            err = {"error": {"message": f"scripted status {behaviour}", "type": "test"}}
            h._send(int(behaviour), err)
        elif behaviour == "garbage":
            h._send(200, b"<html>502 Bad Gateway from some proxy</html>")
        elif behaviour == "html":
            page = b"<html><body>502 Bad Gateway</body></html>"
            h._send(200, page, content_type="text/html")
        elif behaviour == "empty":
            h._send(200, {**self._completion(body, ""), "choices": []})
        elif behaviour == "drop":
            h.close_connection = True
            h.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees a dropped connection
        else:
            raise ValueError(f"unknown behaviour {behaviour!r}")

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        prompt_tokens, completion_tokens = self.usage
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
