"""A judge budget stops the round cleanly, and a re-run judges only the rest: the real CLI,
the `openai` judge, and a chat-completions server on loopback."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cut_loop.rundir import RunDir, read_jsonl
from tests.helpers.chat_server import ChatServer
from tests.loop.conftest import run_cli

pytestmark = pytest.mark.slow


def test_request_budget_stops_the_round_and_a_rerun_finishes_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "6", "--eval-size", "0",
        "--max-new-tokens", "12", "--iterations", "1", "--judge", "openai",
        "--set", "judge.model=gpt-4", "--set", "judge.max_requests=4",
        "--set", "train.warmup_steps=1",
        # Tolerating failures does not cover a spent budget: the round still stops.
        "--set", "judge.max_failed_fraction=0.5",
    ]  # fmt: skip
    with ChatServer() as server:
        args += ["--set", f"judge.base_url={server.base_url}"]
        first = run_cli(*args, env={"OPENAI_API_KEY": "sk-test"})
        assert first.returncode != 0
        last = first.stderr.strip().splitlines()[-1]  # after the progress bars: one line
        assert last.startswith("error: ") and "2 of 6 judgments failed" in last, first.stderr
        assert "budget reached: 4 requests sent (max_requests=4)" in last
        assert len(server.requests) == 4
        round_dir = run_dir / "round-01"
        rows = read_jsonl(round_dir / "judgments.jsonl")
        assert sum(r["verdict"] == "failed" for r in rows) == 2
        assert all(r["usage"]["requests"] == 0 for r in rows if r["verdict"] == "failed")
        assert not (round_dir / "DONE.judge").exists()

        # Each invocation has its own budget: the same command judges the 2 left, and trains.
        second = run_cli(*args, env={"OPENAI_API_KEY": "sk-test"})
        assert second.returncode == 0, second.stderr[-3000:]
        answered = Counter(r.response_text() for r in server.requests if r.answered)
    assert len(server.requests) == 6 and (round_dir / "DONE.round").is_file()
    responses = [r for p in (round_dir / "responses").glob("*") for r in read_jsonl(p)]
    assert sum(answered.values()) == 6
    assert sorted(answered.elements()) == sorted(r["response"].strip() for r in responses)
    latest = {r["id"]: r for r in read_jsonl(round_dir / "judgments.jsonl")}
    assert all(j["verdict"] == "acceptable" for j in latest.values()) and len(latest) == 6
    # The round's usage counts every request of both invocations (none was sent twice).
    done = RunDir.done_info(round_dir, "judge")
    assert done["failures_by_kind"] == {"budget": 2}  # the superseded failures, by kind
    usage = done["usage"]
    assert usage["requests"] == 6 and usage["prompt_tokens"] == 6 * 11
    # gpt-4 list price, $0.03 / $0.06 per 1K tokens; the server reports 11 + 7 tokens a request
    assert usage["cost_usd"] == pytest.approx(6 * (11 * 0.03 + 7 * 0.06) / 1000)
    status = run_cli("status", str(run_dir))
    assert "judge $" in status.stdout and "0.0045" in status.stdout, status.stdout
