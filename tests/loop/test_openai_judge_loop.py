"""The whole loop judged by the `openai` judge: the real openai client in the loop's process
talks to a real chat-completions server on loopback in the test's process."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cut_loop.rundir import read_jsonl
from tests.helpers.chat_server import ChatServer
from tests.loop.conftest import kill_when, run_cli

pytestmark = pytest.mark.slow

SECRET = "sk-test-do-not-write-me-anywhere"


def grade(body: dict[str, Any]) -> str:
    """A toy grader: long answers pass, short ones get a CUT-style critique."""
    prompt = body["messages"][-1]["content"]
    if len(prompt) > 700:
        return json.dumps({"score": 8, "critique": "acceptable"})
    return json.dumps({"score": 3, "critique": "The response is too short to be useful."})


def test_loop_with_openai_judge_on_loopback(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = tmp_path / "run"
    with ChatServer(grade) as server:
        result = run_cli(
            "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
            "--instructions", "demo", "--per-round", "6", "--eval-size", "3",
            "--max-new-tokens", "12", "--iterations", "1", "--judge", "openai",
            "--set", f"judge.base_url={server.base_url}", "--set", "judge.model=local-judge",
            "--set", "judge.concurrency=4", "--set", "train.warmup_steps=1",
            env={"OPENAI_API_KEY": SECRET},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        requests = list(server.requests)
    # One request per distinct (instruction, response): 6 round items, 3 eval items before and
    # 3 after the round, less eval answers the trained policy repeated word for word (those are
    # answered from the run's judge cache, never paid twice).
    folders = [run_dir / "round-01", run_dir / "eval" / "round-00", run_dir / "eval" / "round-01"]
    distinct = {
        (r["id"], r["response"])
        for folder in folders
        for shard in (folder / "responses").glob("*.jsonl")
        for r in read_jsonl(shard)
    }
    assert 9 <= len(distinct) <= 12
    assert len(requests) == len(distinct)
    assert {r.body["model"] for r in requests} == {"local-judge"}
    assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in requests)
    judged = read_jsonl(run_dir / "round-01" / "judgments.jsonl")
    assert len(judged) == 6 and all(j["score"] in (3, 8) for j in judged)
    assert all(j["usage"] for j in judged)
    for j in judged:
        if j["score"] == 3:
            assert j["verdict"] == "unacceptable" and "too short" in j["critique"]
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["round"] for r in evals] == [0, 1] and all(r["mean_score"] for r in evals)
    # The key is nowhere: no file of the run (weights and caches too), nor what it printed.
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.stdout + result.stderr
    # A re-run pays for nothing: every answer is in the run directory already.
    with ChatServer(grade) as server:
        again = run_cli("run", "--run-dir", str(run_dir), "--iterations", "1",
                        env={"OPENAI_API_KEY": SECRET})  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.requests == []


@pytest.mark.fault("windows")
def test_a_kill_mid_batch_loses_at_most_the_requests_in_flight(
    tmp_path: Path, tiny_model_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    """SIGKILL while round 1's one judge batch is half answered. Each answer was recorded the
    moment it arrived, so the resumed run repeats, and leaves out of the usage it reports,
    only the requests that were in flight at the kill (at most judge.concurrency)."""
    run_dir, concurrency = tmp_path / "run", 2
    args = [
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "8", "--eval-size", "2",
        "--max-new-tokens", "8", "--iterations", "1", "--judge", "openai",
        "--set", "judge.model=local-judge", "--set", "judge.batch_size=64",
        "--set", f"judge.concurrency={concurrency}", "--set", "train.warmup_steps=1",
        "--set", "eval.drift=false",
    ]  # fmt: skip
    with ChatServer(grade, latency=0.3) as server:
        args += ["--set", f"judge.base_url={server.base_url}"]
        # Round 0's two eval answers are judged first, then round 1's batch of eight.
        killed = kill_when(args, lambda: sum(r.answered for r in server.requests) >= 2 + 4)
        assert killed is None, "the run finished before the kill"
        assert not (run_dir / "round-01" / "DONE.judge").exists(), "the kill landed too late"
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
        requests = list(server.requests)
    asked = Counter(json.dumps(r.body["messages"]) for r in requests)
    repeated = sum(n - 1 for n in asked.values())
    record_property("requests_repeated", repeated)
    assert repeated <= concurrency, f"{repeated} requests were paid again"
    reported = sum(
        json.loads(p.read_text())["usage"].get("requests", 0) for p in run_dir.rglob("DONE.judge")
    )
    assert len(requests) - concurrency <= reported <= len(requests)
    assert len(read_jsonl(run_dir / "round-01" / "judgments.jsonl")) >= 8
