"""The held-out evaluation in the loop: eval judges of its own, one row per round and judge
with intervals and the paired difference from round 0; `cutloop eval` re-scores stored answers
beside the training record, for free on a re-run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cut_loop.rundir import atomic_write_jsonl, read_jsonl
from tests.helpers.chat_server import ChatServer
from tests.loop.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

FIXED = str(ROOT / "tests" / "helpers" / "fixed_judges.py")
ROW_KEYS = {
    "judge", "n", "acceptance_rate", "ci95", "delta_vs_start", "delta_ci95",
    "mean_response_tokens", "finished_fraction",
}  # fmt: skip


@pytest.fixture(scope="module")
def disagreeing_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """Trained on a judge that rejects everything, evaluated by one that accepts everything
    and by the rules judge."""
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "6", "--eval-size", "5",
        "--max-new-tokens", "12", "--iterations", "2", "--judge", f"{FIXED}:RejectAll",
        "--set", f"eval.judges=[{FIXED}:AcceptAll, rules]",
        "--set", "generation.template=alpaca", "--set", "train.warmup_steps=1",
        "--set", "train.micro_batch_size=2", "--set", "train.grad_accum=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_eval_judges_score_apart_from_the_training_judge(disagreeing_run: Path) -> None:
    rows = read_jsonl(disagreeing_run / "metrics.jsonl")
    judged = [r for r in rows if r["kind"] == "judge"]
    assert [r["acceptance_rate"] for r in judged] == [0.0, 0.0]  # the training judge
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["round"], r["judge"]) for r in evals] == [
        (k, j) for k in (0, 1, 2) for j in ("AcceptAll", "rules")
    ]
    for row in evals:
        assert row.keys() >= ROW_KEYS and row["n"] == 5
        lo, hi = row["ci95"]
        assert 0 <= lo <= row["acceptance_rate"] <= hi <= 1
    accept = [r for r in evals if r["judge"] == "AcceptAll"]
    assert all(r["acceptance_rate"] == 1.0 for r in accept)
    assert accept[0]["ci95"] == pytest.approx([0.5655, 1.0], abs=1e-4)  # Wilson, 5 of 5
    assert all(r["delta_vs_start"] == 0.0 and r["delta_ci95"] == [0.0, 0.0] for r in accept)
    # Greedy held-out answers: the same policy gives the same answers, so round 0 under the
    # rules judge pairs with itself exactly.
    rules0 = next(r for r in evals if r["judge"] == "rules" and r["round"] == 0)
    assert rules0["delta_vs_start"] == 0.0
    for k in (0, 1, 2):
        folder = disagreeing_run / "eval" / f"round-{k:02d}"
        assert (folder / "judge-AcceptAll" / "DONE.judge").is_file()
        assert (folder / "judge-rules" / "DONE.judge").is_file()
        assert not (folder / "judgments.jsonl").exists()


def test_status_shows_every_eval_judge(disagreeing_run: Path) -> None:
    result = run_cli("status", str(disagreeing_run))
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "AcceptAll" in flat and "rules" in flat and "1.000" in flat


def grade(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    score = 8 if len(prompt) % 2 else 3
    return json.dumps({"score": score, "critique": "acceptable" if score > 5 else "Too vague."})


def test_cutloop_eval_rescores_stored_answers_beside_the_record_and_for_free_again(
    disagreeing_run: Path,
) -> None:
    before = {
        p: p.read_bytes()
        for p in disagreeing_run.rglob("*")
        if p.is_file() and "evals" not in p.parts
    }
    args = ["eval", str(disagreeing_run), "--judge", "openai"]
    env = {"OPENAI_API_KEY": "sk-test"}
    with ChatServer(grade) as server:
        sets = ["--set", f"base_url={server.base_url}", "--set", "model=local-judge"]
        result = run_cli(*args, *sets, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        first = len(server.requests)
    distinct = {
        r["response"]
        for k in (0, 1, 2)
        for p in (disagreeing_run / "eval" / f"round-{k:02d}" / "responses").glob("*.jsonl")
        for r in read_jsonl(p)
    }
    assert 1 <= first <= 15 and first >= len(distinct) > 0
    out = disagreeing_run / "evals" / "openai-local-judge"
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r.keys() >= ROW_KEYS for r in rows)
    # The training record is untouched (byte for byte): everything went under evals/.
    after = {p: p.read_bytes() for p in before}
    assert after == before
    with ChatServer(grade) as server:
        again = run_cli(
            *args, "--set", f"base_url={server.base_url}", "--set", "model=local-judge", env=env
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.requests == []
    assert read_jsonl(out / "metrics.jsonl") == rows


def test_constraints_loop_with_the_control_arm(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Constraints attached to the demo set, judged by the constraints judge, evaluated by it
    and the rules judge, with `--loss none`: the policy passes through, so the greedy held-out
    answers, verdicts and log-probabilities of round 1 are round 0's exactly (a zero paired
    difference is what the control arm must show)."""
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "6", "--eval-size", "6",
        "--max-new-tokens", "10", "--iterations", "1", "--judge", "constraints",
        "--loss", "none", "--set", "data.constraints=2",
        "--set", "eval.judges=[constraints, rules]", "--set", "generation.template=alpaca",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sample = read_jsonl(run_dir / "round-01" / "instructions.jsonl")
    assert all(1 <= len(x["constraints"]) <= 2 for x in sample)
    judged = read_jsonl(run_dir / "round-01" / "judgments.jsonl")
    # A random tiny model meets almost none of them: concrete critiques, scores in [0, 1).
    assert any(j["verdict"] == "unacceptable" and "the instruction asks" in j["critique"]
               for j in judged)  # fmt: skip
    assert all(0 <= j["score"] <= 1 for j in judged)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["round"], r["judge"]) for r in evals] == [
        (0, "constraints"), (0, "rules"), (1, "constraints"), (1, "rules"),
    ]  # fmt: skip
    for r in evals:
        assert r["delta_vs_start"] == 0.0 and r["delta_ci95"] == [0.0, 0.0]
        # (the random tiny model's answers decode to little text: the drift may have no token)
        assert r["start_answers_logprob"] == evals[0]["start_answers_logprob"]
    train = next(r for r in rows if r["kind"] == "train")
    assert train["steps"] == 0 and 0 <= train["sample_finished_fraction"] <= 1
    assert train["sample_mean_tokens"] > 0
    assert (run_dir / "round-01" / "model" / "config.json").is_file()


def shown(prompt: str) -> tuple[str, str]:
    """(Output (a), Output (b)) of a pairwise prompt."""
    a = prompt.split("### Output (a):\n", 1)[1].split("\n\n### Output (b):\n", 1)[0]
    b = prompt.split("### Output (b):\n", 1)[1].split("\n\nWhich output is better?", 1)[0]
    return a.strip(), b.strip()


def longer_wins(body: dict) -> str:
    """A pairwise judge with a known taste: the longer output wins, a tie goes to (a)."""
    a, b = shown(body["messages"][-1]["content"])
    return "**Output (b)**" if len(b) > len(a) else "Output (a)"


# Held-out answers of known lengths per round (instruction i of 5): round 1 wins 3, ties 1,
# loses 1 against round 0 under `longer_wins`; round 2 ties 1 and loses 4.
LENGTHS = {0: [2, 3, 4, 5, 6], 1: [4, 3, 1, 6, 9], 2: [2, 2, 2, 2, 2]}


@pytest.fixture
def answered_run(disagreeing_run: Path, tmp_path: Path) -> Path:
    """A copy of the run whose held-out answers are replaced by distinct texts of LENGTHS (the
    tiny random model's answers decode to nothing, which would make every pair a tie)."""
    run = tmp_path / "run"
    shutil.copytree(disagreeing_run, run, ignore=shutil.ignore_patterns("evals", "model"))
    for k, lengths in LENGTHS.items():
        [path] = (run / "eval" / f"round-{k:02d}" / "responses").glob("*.jsonl")
        rows = read_jsonl(path)
        for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
            row["response"] = (f"{k}{i}" + "z" * n)[: max(n, 2)]
        atomic_write_jsonl(path, rows)
    return run


def test_pairwise_win_rate_against_round_0_asks_both_orders_and_is_free_again(
    answered_run: Path,
) -> None:
    args = ["eval", str(answered_run), "--judge", "openai", "--pairwise", "start"]
    env = {"OPENAI_API_KEY": "sk-test"}
    with ChatServer(longer_wins) as server:
        sets = ["--set", f"base_url={server.base_url}", "--set", "model=local-judge"]
        result = run_cli(*args, *sets, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        asked = [shown(r.body["messages"][-1]["content"]) for r in server.requests]
    answers = {
        k: [r["response"] for r in read_jsonl(next((answered_run / "eval" / f"round-{k:02d}"
            / "responses").glob("*.jsonl")))]
        for k in LENGTHS
    }  # fmt: skip
    out = answered_run / "evals" / "openai-local-judge-vs-start" / "metrics.jsonl"
    rows = read_jsonl(out)
    assert [r["round"] for r in rows] == [1, 2]  # round 0 is the reference itself
    one, two = rows
    assert one["n"] == 5 and one["win_rate"] == pytest.approx(3.5 / 5)
    assert (one["wins"], one["ties"], one["losses"]) == (3, 1, 1)
    assert one["position_consistency"] == pytest.approx(0.8)
    assert two["win_rate"] == pytest.approx(0.5 / 5) and two["ties"] == 1
    for row in rows:
        lo, hi = row["ci95"]
        assert 0 <= lo <= row["win_rate"] <= hi <= 1
        assert row["reference_mean_chars"] == pytest.approx(sum(map(len, answers[0])) / 5)
    assert one["mean_response_chars"] == pytest.approx(sum(map(len, answers[1])) / 5)
    # Every pair was asked once in each order, and nothing else.
    expected = [
        pair for k in (1, 2) for now, ref in zip(answers[k], answers[0], strict=True)
        for pair in ((now, ref), (ref, now))
    ]  # fmt: skip
    assert sorted(asked) == sorted(expected)
    assert "win rate" in " ".join(result.stdout.split())
    with ChatServer(longer_wins) as server:
        sets = ["--set", f"base_url={server.base_url}", "--set", "model=local-judge"]
        again = run_cli(*args, *sets, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.requests == []
    assert read_jsonl(out) == rows


def test_pairwise_needs_a_judge_that_compares_and_a_reference(disagreeing_run: Path) -> None:
    rules = run_cli("eval", str(disagreeing_run), "--judge", "rules", "--pairwise", "start")
    assert rules.returncode != 0 and "cannot compare two answers" in rules.stderr
    no_ref = run_cli("eval", str(disagreeing_run), "--judge", "openai", "--pairwise", "output")
    assert no_ref.returncode != 0 and "carry no reference output" in no_ref.stderr
