"""Kill a real run (SIGKILL, whole process group) inside each stage, re-run the same command,
and compare with an uninterrupted run of the same config."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cut_loop.rundir import atomic_write_jsonl, read_jsonl
from tests.loop.conftest import ROOT, kill_when, run_cli, tensorboard_points

pytestmark = [pytest.mark.slow, pytest.mark.fault("windows")]

# SIGKILLs at seeded random moments: a handful in CI, CUT_LOOP_KILLS=20 for the long run.
RANDOM_KILLS = int(os.environ.get("CUT_LOOP_KILLS", "3"))

JUDGE = f"{ROOT}/tests/helpers/counting_judge.py:CountingJudge"


def _args(base_args: Callable[..., list[str]], run_dir: Path, log: Path) -> list[str]:
    return base_args(
        run_dir,
        "--judge", JUDGE,
        "--set", f"judge.log={log}",
        "--set", "judge.delay=0.05",
        "--set", "judge.batch_size=1",
        "--set", "generation.shard_size=2",
        "--set", "generation.batch_size=2",
        "--max-new-tokens", "48",
        "--set", "train.epochs=4",
        "--set", "train.micro_batch_size=1",
    )  # fmt: skip


def _responses(round_dir: Path) -> list[dict]:
    shards = sorted((round_dir / "responses").glob("shard-*.jsonl"))
    return [x for p in shards for x in read_jsonl(p)]


def _judgments(round_dir: Path) -> dict[str, dict]:
    return {j["id"]: j for j in read_jsonl(round_dir / "judgments.jsonl")}


def _finish_and_compare(run_dir: Path, ref_dir: Path, log: Path, args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    # A kill mid-write leaves the atomic write's temp file behind; the resume clears it.
    assert not [p for p in run_dir.rglob(".*.tmp") if p.is_file()], "stale temp files"
    for k in (1, 2):
        r, ref = run_dir / f"round-{k:02d}", ref_dir / f"round-{k:02d}"
        assert read_jsonl(r / "instructions.jsonl") == read_jsonl(ref / "instructions.jsonl")
        assert _responses(r) == _responses(ref)
        assert _judgments(r) == _judgments(ref)
        assert (r / "DONE.round").is_file() and (r / "model" / "model.safetensors").is_file()
    # Each round item is judged once; each eval item once per evaluation (rounds 0, 1, 2).
    seen = Counter(log.read_text().split())
    round_ids = {
        x["id"]
        for k in (1, 2)
        for x in read_jsonl(run_dir / f"round-{k:02d}" / "instructions.jsonl")
    }
    eval_ids = {x["id"] for x in read_jsonl(run_dir / "eval" / "instructions.jsonl")}
    assert {i: seen[i] for i in round_ids} == dict.fromkeys(round_ids, 1), "a request was repeated"
    assert {i: seen[i] for i in eval_ids} == dict.fromkeys(eval_ids, 3), "a request was repeated"
    # The curves of the resumed run: every point once, the reference's steps (the values of
    # the stage times differ, the rest are the reference's).
    points, ref_points = tensorboard_points(run_dir), tensorboard_points(ref_dir)
    assert {t: [s for s, _ in p] for t, p in points.items()} == {
        t: [s for s, _ in p] for t, p in ref_points.items()
    }
    for tag, values in points.items():
        if not tag.startswith(("time/", "train/seconds", "train/tokens_per_s")):
            assert values == pytest.approx(ref_points[tag], rel=1e-4, abs=1e-6), tag
    a = load_file(run_dir / "round-02" / "model" / "model.safetensors")
    b = load_file(ref_dir / "round-02" / "model" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def ref_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ref")


def _reference(tmp: Path, base_args: Callable[..., list[str]]) -> Path:
    """The same run, never interrupted (made by the first test that needs it)."""
    run_dir = tmp / "run"
    if not (run_dir / "round-02" / "DONE.round").exists():
        result = run_cli(*_args(base_args, run_dir, tmp / "judge.log"))
        assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.fault("kills")
@pytest.mark.parametrize("seed", range(RANDOM_KILLS))
def test_a_kill_at_a_random_moment_resumes_to_the_same_artifacts(
    seed: int, tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    """SIGKILL the whole process group at a seeded random moment: once the run directory holds
    a random share of the files the finished run has, plus a random fraction of a second (a
    moment on the wall clock would drift with the machine's load), then finish and compare."""
    ref = _reference(ref_run, base_args)
    rng = random.Random(seed)
    files = rng.randint(1, int(0.9 * sum(p.is_file() for p in ref.rglob("*"))))
    delay = rng.uniform(0.0, 0.1)
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    reached: list[float] = []

    def count() -> int:
        try:
            return sum(p.is_file() for p in run_dir.rglob("*"))
        except FileNotFoundError:  # a folder the run renamed or removed mid-walk
            return 0

    def due() -> bool:
        if not reached and count() >= files:
            reached.append(time.monotonic())
        return bool(reached) and time.monotonic() - reached[0] >= delay

    killed = kill_when(args, due)
    assert killed is None, f"the run finished before the kill ({files} files + {delay:.2f} s)"
    _finish_and_compare(run_dir, ref, log, args)


def test_kill_during_generation_resumes_from_last_shard(
    tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    ref = _reference(ref_run, base_args)
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    shards = run_dir / "round-01" / "responses"
    done = run_dir / "round-01" / "DONE.generate"
    killed = kill_when(args, lambda: len(list(shards.glob("shard-*.jsonl"))) >= 1)
    assert killed is None, "the run finished before the kill"
    assert not done.exists(), "the kill landed after generation"
    kept = {p.name: p.read_text() for p in shards.glob("shard-*.jsonl")}
    _finish_and_compare(run_dir, ref, log, args)
    for name, text in kept.items():  # finished shards were not generated again
        assert (shards / name).read_text() == text


def test_kill_during_judging_never_repeats_a_request(
    tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    ref = _reference(ref_run, base_args)
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    judgments = run_dir / "round-01" / "judgments.jsonl"
    killed = kill_when(args, lambda: judgments.exists() and len(read_jsonl(judgments)) >= 3)
    assert killed is None, "the run finished before the kill"
    assert not (run_dir / "round-01" / "DONE.judge").exists()
    _finish_and_compare(run_dir, ref, log, args)


def test_kill_during_training_resumes_from_saved_step(
    tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    ref = _reference(ref_run, base_args)
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    train = run_dir / "round-01" / "train"
    killed = kill_when(args, lambda: any(train.glob("checkpoint-[0-9]*")))
    assert killed is None, "the run finished before the kill"
    assert not (run_dir / "round-01" / "DONE.train").exists()
    saved = max(int(p.name.split("-")[1]) for p in train.glob("checkpoint-[0-9]*"))
    _finish_and_compare(run_dir, ref, log, args)
    info = read_jsonl(run_dir / "round-01" / "train" / "log.jsonl")
    done = json.loads((run_dir / "round-01" / "DONE.train").read_text())
    assert done["resumed_from"] >= saved > 0
    ref_done = json.loads((ref / "round-01" / "DONE.train").read_text())
    assert done["steps"] == ref_done["steps"]
    assert max(row["step"] for row in info) == ref_done["steps"]


def test_a_kill_between_the_round_sample_and_the_ledger_still_enters_the_round(
    tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    """The window between `round-01/instructions.jsonl` and the ledger's rewrite: the kill
    lands just after the sample is written, and the ledger is put back as it was before it
    (what a kill inside that window leaves). The resumed run's ledger is the reference's."""
    ref = _reference(ref_run, base_args)
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    sample = run_dir / "round-01" / "instructions.jsonl"
    killed = kill_when(args, sample.exists)
    assert killed is None, "the run finished before the kill"
    ledger = run_dir / "ledger.jsonl"
    atomic_write_jsonl(ledger, [r for r in read_jsonl(ledger) if r["use"] == "eval"])
    _finish_and_compare(run_dir, ref, log, args)
    rows = read_jsonl(ledger)
    assert rows == read_jsonl(ref / "ledger.jsonl")
    assert {r["use"] for r in rows} == {"eval", "round-1", "round-2"}


def test_a_kill_after_the_last_checkpoint_keeps_the_rounds_loss(
    tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    """Killed once the last step's checkpoint is saved but before DONE.train: the resume has
    no step left to run, and DONE.train still carries the loss (read from the step log)."""
    ref = _reference(ref_run, base_args)
    ref_done = json.loads((ref / "round-01" / "DONE.train").read_text())
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    last = run_dir / "round-01" / "train" / f"checkpoint-{ref_done['steps']}"
    killed = kill_when(args, last.exists)
    assert killed is None, "the run finished before the kill"
    assert not (run_dir / "round-01" / "DONE.train").exists(), "the kill landed too late"
    _finish_and_compare(run_dir, ref, log, args)
    done = json.loads((run_dir / "round-01" / "DONE.train").read_text())
    assert done["resumed_from"] == ref_done["steps"]
    assert done["loss"] == ref_done["loss"] is not None
    assert done["mean_loss"] == pytest.approx(ref_done["mean_loss"])
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert all(r.get("loss") is not None for r in rows)


def test_a_kill_between_a_stages_output_and_its_marker_redoes_nothing(
    tmp_path: Path, ref_run: Path, base_args: Callable[..., list[str]]
) -> None:
    """Every shard and every judgment written, the DONE markers not yet: what a kill in the
    microseconds before `DONE.generate` / `DONE.judge` leaves (made by killing in training and
    removing both markers). The resume marks both stages without generating or judging again."""
    ref = _reference(ref_run, base_args)
    run_dir, log = tmp_path / "run", tmp_path / "judge.log"
    args = _args(base_args, run_dir, log)
    round1 = run_dir / "round-01"
    killed = kill_when(args, lambda: any((round1 / "train").glob("checkpoint-[0-9]*")))
    assert killed is None, "the run finished before the kill"
    for stage in ("generate", "judge"):
        (round1 / f"DONE.{stage}").unlink()
    kept = {p: p.read_bytes() for p in [*round1.glob("responses/*"), round1 / "judgments.jsonl"]}
    _finish_and_compare(run_dir, ref, log, args)  # each item judged once, in the whole run
    assert {p: p.read_bytes() for p in kept} == kept
    assert (round1 / "DONE.generate").is_file() and (round1 / "DONE.judge").is_file()
