"""Stop signals and a filling disk, on a real tiny run in a subprocess: each stops with one
line that says what happened, keeps what was finished, and the same command then resumes."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cut_loop.rundir import read_jsonl
from tests.loop.conftest import ENV, ROOT, cutloop_cmd, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.fault("windows")]


def _signal_when(
    args: list[str], condition: Callable[[], bool], sig: int, group: bool, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Start `cutloop ARGS`, send `sig` (to the process, or to its group as a terminal's
    Ctrl-C does) once `condition()` holds, and wait for it to exit."""
    proc = subprocess.Popen(
        cutloop_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ, **ENV},
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the run ended (or hung) before the signal: {err[-2000:]}")
        time.sleep(0.01)
    (os.killpg if group else os.kill)(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _last_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def _resumes(run_dir: Path, args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    for k in (1, 2):
        assert (run_dir / f"round-{k:02d}" / "DONE.round").is_file()
    assert len(read_jsonl(run_dir / "ledger.jsonl")) == 4 + 2 * 8


@pytest.mark.parametrize(
    ("sig", "group", "code", "name"),
    [(signal.SIGTERM, False, 143, "SIGTERM"), (signal.SIGINT, True, 130, "SIGINT")],
)
def test_a_stop_signal_mid_training_exits_with_its_code_and_the_resume_command(
    sig: int, group: bool, code: int, name: str, tmp_path: Path,
    base_args: Callable[..., list[str]],
) -> None:  # fmt: skip
    run_dir = tmp_path / "run"
    args = base_args(run_dir, "--set", "train.epochs=4", "--set", "train.micro_batch_size=1")
    train = run_dir / "round-01" / "train"
    result = _signal_when(args, lambda: any(train.glob("checkpoint-[0-9]*")), sig, group)
    assert result.returncode == code, result.stderr[-3000:]
    line = _last_line(result.stderr)
    assert line.startswith(f"stopped by {name}; finished work is kept, resume with: cutloop run")
    assert f"--run-dir {run_dir}" in line
    assert not (run_dir / "round-01" / "DONE.train").exists(), "the signal landed too late"
    assert (run_dir / "round-01" / "DONE.judge").is_file()
    _resumes(run_dir, args)


def test_a_file_size_limit_mid_save_is_one_line_and_the_resume_finishes(
    tmp_path: Path, tiny_model_dir: Path, base_args: Callable[..., list[str]]
) -> None:
    """RLIMIT_FSIZE below the model's size: the first checkpoint (or model) write fails with
    EFBIG, as a full disk would fail it. One line naming the fault, exit 2, every file finished
    before it intact; without the limit, the same command finishes the run."""
    limit = (tiny_model_dir / "model.safetensors").stat().st_size // 2

    def small_files() -> None:  # in the child, before it runs cutloop
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run_dir = tmp_path / "run"
    args = base_args(run_dir)
    result = subprocess.run(
        cutloop_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **ENV}, preexec_fn=small_files,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    line = _last_line(result.stderr)
    assert line.startswith("error: writing a checkpoint or model failed: File too large;"), line
    assert "re-run to resume" in line
    round1 = run_dir / "round-01"
    assert (round1 / "DONE.judge").is_file() and not (round1 / "DONE.train").exists()
    kept = (round1 / "judgments.jsonl").read_bytes()
    _resumes(run_dir, args)
    assert (round1 / "judgments.jsonl").read_bytes() == kept


def test_a_second_run_on_a_directory_in_use_is_refused_in_one_line_and_status_sees_it(
    tmp_path: Path, base_args: Callable[..., list[str]]
) -> None:
    run_dir = tmp_path / "run"
    # Training long enough that the first run holds the directory until it is killed.
    args = base_args(run_dir, "--set", "train.epochs=50", "--set", "train.micro_batch_size=1")
    first = subprocess.Popen(
        cutloop_cmd(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.yaml").exists():  # written under the lock
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended"
            time.sleep(0.05)
        second = run_cli(*args)
        status = run_cli("status", str(run_dir))
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        first.kill()
        first.wait()
    assert status.returncode == 0 and f"running now (pid {first.pid}): " in status.stdout
    assert second.returncode == 2
    assert _last_line(second.stderr) == (
        f"error: {run_dir}/lock: another cutloop process is running on this run directory"
    )
