"""The documented example plugin (judges/example_judge.py) loaded by path and run in the loop,
through the real CLI, exactly as its docstring tells a user to."""

from __future__ import annotations

from pathlib import Path

import pytest

from cut_loop.rundir import read_jsonl
from tests.loop.conftest import run_cli

pytestmark = pytest.mark.slow

MIN_WORDS = 4


def test_example_length_judge_runs_in_the_loop(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "6", "--eval-size", "2",
        "--max-new-tokens", "12", "--iterations", "1",
        "--judge", "judges/example_judge.py:LengthJudge",
        "--set", f"judge.min_words={MIN_WORDS}", "--set", "train.warmup_steps=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    round_dir = run_dir / "round-01"
    responses = {r["id"]: r for p in (round_dir / "responses").glob("*") for r in read_jsonl(p)}
    judged = read_jsonl(round_dir / "judgments.jsonl")
    assert sorted(j["id"] for j in judged) == sorted(responses)
    for j in judged:  # exactly the plugin's rule, applied to what the policy wrote
        words = len(responses[j["id"]]["response"].split())
        assert j["score"] == words
        if words >= MIN_WORDS:
            assert j["verdict"] == "acceptable" and j["critique"] is None
        else:
            assert j["verdict"] == "unacceptable"
            assert j["critique"] == (
                f"The response is too short: it has {words} words, but a complete answer "
                f"needs at least {MIN_WORDS}."
            )
    assert (round_dir / "DONE.round").is_file()
    config = (run_dir / "config.yaml").read_text()
    assert "judges/example_judge.py:LengthJudge" in config and f"min_words: {MIN_WORDS}" in config
