import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cut_loop.errors import CutLoopError, environment_fault
from cut_loop.rundir import (
    JsonlAppender,
    RunDir,
    RunLock,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)


def test_torn_last_line_is_ignored_and_repaired_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')  # a kill mid-append
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    with JsonlAppender(path) as log:
        log.append({"a": 4})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 4}]


def test_corrupt_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(CutLoopError, match=r"log.jsonl:2"):
        read_jsonl(path)


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"k": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_stage_markers(tmp_path: Path) -> None:
    assert not RunDir.is_done(tmp_path, "judge")
    RunDir.mark_done(tmp_path, "judge", {"acceptable": 3})
    assert RunDir.is_done(tmp_path, "judge")
    assert RunDir.done_info(tmp_path, "judge")["acceptable"] == 3


def test_lock_refuses_a_second_process_and_dies_with_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
            "from cut_loop.rundir import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CutLoopError, match="another cutloop process"), RunLock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # a SIGKILLed holder leaves no stale lock
        pass


def test_written_and_appended_run_files_get_one_mode(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.json", "{}\n")
    with JsonlAppender(tmp_path / "b.jsonl") as log:
        log.append({"x": 1})
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.json", "b.jsonl")}
    assert modes == {0o666 & ~umask}


def test_a_corrupt_stage_marker_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "DONE.train").write_text('{"steps": 3,')
    with pytest.raises(CutLoopError, match=r"DONE.train: corrupt stage marker; delete it"):
        RunDir.done_info(tmp_path, "train")
    (tmp_path / "DONE.train").write_text("[1, 2]\n")
    with pytest.raises(CutLoopError, match="corrupt stage marker"):
        RunDir.done_info(tmp_path, "train")


def test_a_run_directory_that_is_or_sits_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CutLoopError, match="the run directory is a file"):
        RunDir(tmp_path / "f").check_usable()
    with pytest.raises(CutLoopError, match=r"/f: a part of its path is a file"):
        RunDir(tmp_path / "f" / "a" / "b").check_usable()
    RunDir(tmp_path / "new" / "run").check_usable()  # absent folders are fine: made later
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("error", "expect"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/r/x"), "/r/x: No space left on"),
        (OSError(errno.EROFS, "Read-only file system", "/r"), "/r: Read-only file system; use"),
        (OSError(errno.EACCES, "Permission denied", "/r/lock"), "/r/lock: Permission denied"),
        (
            RuntimeError("Error while serializing: I/O error: No space left (os error 28)"),
            "writing a checkpoint or model failed: No space left on device; free some space",
        ),
        (
            RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
            "(a full disk or a file size limit)",
        ),
    ],
)
def test_environment_faults_read_as_one_line(error: BaseException, expect: str) -> None:
    message = environment_fault(error)
    assert message is not None and expect in message and "\n" not in message


def test_other_errors_are_bugs_and_keep_their_traceback() -> None:
    assert environment_fault(RuntimeError("shape mismatch")) is None
    assert environment_fault(OSError(errno.ECONNRESET, "reset")) is None
    assert environment_fault(ValueError("No space left")) is None


def test_the_lock_holder_is_known_while_it_runs_and_none_after(tmp_path: Path) -> None:
    assert RunLock(tmp_path).holder() is None
    with RunLock(tmp_path):
        code = f"from cut_loop.rundir import RunLock; print(RunLock({str(tmp_path)!r}).holder())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.strip() == str(os.getpid())
    assert RunLock(tmp_path).holder() is None


def test_temp_files_a_kill_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "round-01" / "responses" / "shard-0000.jsonl", "{}\n")
    left = tmp_path / "round-01" / "responses" / ".shard-0001.jsonl.ab12cd.tmp"
    left.write_text('{"torn": ')
    (tmp_path / ".model.tmp").mkdir()  # a folder: its writer clears it before writing
    assert RunDir(tmp_path).remove_stale_temp_files() == 1
    assert not left.exists() and (tmp_path / ".model.tmp").is_dir()
    assert (tmp_path / "round-01" / "responses" / "shard-0000.jsonl").read_text() == "{}\n"
