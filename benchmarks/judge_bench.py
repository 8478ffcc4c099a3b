"""The `openai` judge's concurrency, measured: N judgments against a loopback chat-completions
server that takes `--latency` seconds per request (like a real model), concurrent vs one
request at a time.

    python benchmarks/judge_bench.py                      # 1000 items, 300 ms, concurrency 64
    python benchmarks/judge_bench.py --concurrency 32     # the judge's default
    python benchmarks/judge_bench.py --sequential 1000    # time all 1000 sequentially (~5 min)

Targets (issue 4): the concurrent run takes <= 10 s and is >= 30x faster than sequential.

The server (tests/helpers/chat_server.py, one thread per request) runs in a child process, so
its Python threads do not compete with the judge's event loop for this process's GIL, as a real
server would not. The sequential time is measured on the first `--sequential` items and, when
that is fewer than N, scaled up linearly (printed as such): sequential requests are
independent, each costing latency + overhead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cut_loop.judging.base import JudgeItem  # noqa: E402
from cut_loop.judging.openai_judge import OpenAIJudge  # noqa: E402

SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.helpers.chat_server import ChatServer
with ChatServer(latency={latency}) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    print(len(server.requests), server.max_in_flight, flush=True)
"""


def items(n: int) -> list[JudgeItem]:
    return [JudgeItem(str(i), "Name a primary colour.", "", f"Red, answer {i}.") for i in range(n)]


def timed(base_url: str, batch: list[JudgeItem], concurrency: int) -> float:
    with OpenAIJudge(base_url=base_url, concurrency=concurrency, model="bench") as judge:
        start = time.perf_counter()
        out = judge.judge(batch)
        elapsed = time.perf_counter() - start
    failed = sum(j.failed for j in out)
    if failed:
        raise SystemExit(f"{failed} of {len(out)} judgments failed: {out[0].error}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="judgments (default 1000)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--sequential", type=int, default=100, help="items timed sequentially")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(root=str(ROOT), latency=args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-bench"},
    )
    try:
        base_url = server.stdout.readline().strip()  # type: ignore[union-attr]
        batch = items(args.n)
        timed(base_url, items(8), args.concurrency)  # warm-up: imports, connections
        concurrent = timed(base_url, batch, args.concurrency)
        k = min(args.sequential, args.n)
        sequential_k = timed(base_url, batch[:k], 1)
    finally:
        out, _ = server.communicate("", timeout=30)
    requests, in_flight = out.split()
    sequential = sequential_k * args.n / k
    how = "measured" if k == args.n else f"measured on {k}, scaled x{args.n / k:g}"
    print(f"{args.n} judgments, server latency {args.latency * 1000:.0f} ms per request")
    print(f"concurrent (concurrency {args.concurrency}): {concurrent:7.2f} s")
    print(f"sequential (concurrency 1):  {sequential:7.2f} s  ({how}: {sequential_k:.2f} s)")
    print(f"speed-up: {sequential / concurrent:.1f}x")
    print(f"server: {requests} requests, at most {in_flight} in flight")
    ok = concurrent <= 10 and sequential / concurrent >= 30
    print(f"targets (<= 10 s, >= 30x): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
