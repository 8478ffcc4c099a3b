from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs started here generate with transformers under `auto`: it would pick vLLM where
# .venv-vllm exists, and vLLM's CPU kernels cannot run the tiny model's head size (tests/engines
# covers vLLM; its runs name their interpreter with generation.vllm_python, which wins).
ENV = {"CUT_LOOP_VLLM_PYTHON": "none"}


def cutloop_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cut_loop", *args]


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cutloop ARGS` in a subprocess, as a user runs it (`env` adds variables)."""
    return subprocess.run(
        cutloop_cmd(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **ENV, **(env or {})},
    )


def kill_when(
    args: list[str], condition: Callable[[], bool], timeout: float = 240
) -> subprocess.CompletedProcess[str] | None:
    """Start `cutloop ARGS`, SIGKILL its whole process group as soon as `condition()` holds.
    Returns None when it was killed; the finished process if it ended first (the caller's
    assertions then fail: the kill must land inside the stage under test)."""
    proc = subprocess.Popen(
        cutloop_cmd(*args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **ENV},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail("the run neither reached the kill point nor finished in time")


@pytest.fixture
def base_args(tiny_model_dir: Path) -> Callable[..., list[str]]:
    """Common CLI arguments for a tiny, fast, offline run."""

    def make(run_dir: Path, *extra: str) -> list[str]:
        return [
            "run",
            "--run-dir", str(run_dir),
            "--model", str(tiny_model_dir),
            "--instructions", "demo",
            "--per-round", "8",
            "--eval-size", "4",
            "--max-new-tokens", "16",
            "--iterations", "2",
            "--judge", "rules",
            "--set", "generation.template=alpaca",
            "--set", "train.warmup_steps=1",
            "--set", "train.micro_batch_size=2",
            "--set", "train.grad_accum=1",
            "--set", "train.save_every=2",
            *extra,
        ]  # fmt: skip

    return make


def tensorboard_points(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of RUN/tensorboard/: tag -> [(step, value)] in file order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
