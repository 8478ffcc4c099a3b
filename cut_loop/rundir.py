"""The run directory: paths, atomic writes, append-only logs, stage markers and the lock.

Rule (DESIGN.md): a file is either complete or absent (temp file, fsync, rename), except the
append-only JSONL logs, whose last partial line is ignored on read. Resume walks the stages and
skips those with a DONE marker.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cut_loop.errors import CutLoopError

# The process's umask, read once (reading it means setting it). Run files get the mode any
# other file of the user gets (0644 under the usual 022), not mkstemp's private 0600: one mode
# for every file of a run, appended logs and atomically written files alike.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def file_mode() -> int:
    """The mode every run file gets (see _UMASK)."""
    return 0o666 & ~_UMASK


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file written by this package; a torn last line (a kill mid-append) is
    dropped, a torn line anywhere else is corruption and raises."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line has no newline: an interrupted append
                break
            raise CutLoopError(f"{path}:{i + 1}: corrupt JSON line in a run file") from None
    return rows


class JsonlAppender:
    """Append-only JSONL log: each row is flushed and fsynced before `append` returns, so a row
    that was reported written survives a SIGKILL or a power cut."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail(path)
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    @staticmethod
    def _repair_torn_tail(path: Path) -> None:
        # A kill mid-append leaves a last line without its newline; appending after it would
        # glue two rows together. Cut the torn fragment off first.
        if not path.exists() or path.stat().st_size == 0:
            return
        data = path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())

    def append(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunDir:
    """Paths and markers of one run. Creating the object touches nothing on disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- top-level files ---------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    @property
    def eval_instructions_path(self) -> Path:
        return self.root / "eval" / "instructions.jsonl"

    # --- per-round folders -------------------------------------------------------------------
    def round_dir(self, k: int) -> Path:
        return self.root / f"round-{k:02d}"

    def eval_dir(self, k: int) -> Path:
        """Held-out evaluation of the policy after round k (k = 0: the starting model)."""
        return self.root / "eval" / f"round-{k:02d}"

    def model_dir(self, k: int) -> Path:
        return self.round_dir(k) / "model"

    # --- stage markers -----------------------------------------------------------------------
    @staticmethod
    def is_done(folder: Path, stage: str) -> bool:
        return (folder / f"DONE.{stage}").exists()

    @staticmethod
    def mark_done(folder: Path, stage: str, info: dict[str, Any] | None = None) -> None:
        atomic_write_json(folder / f"DONE.{stage}", {"finished": now(), **(info or {})})

    @staticmethod
    def done_info(folder: Path, stage: str) -> dict[str, Any] | None:
        path = folder / f"DONE.{stage}"
        if not path.exists():
            return None
        try:  # written atomically by us: unreadable means edited or a damaged disk
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            info = None
        if not isinstance(info, dict):
            raise CutLoopError(
                f"{path}: corrupt stage marker; delete it and re-run to redo that stage"
            )
        return info

    def remove_stale_temp_files(self) -> int:
        """Delete the temp files of atomic writes a SIGKILL cut short (`.<name>.<random>.tmp`:
        never read, the real file is absent or older); call with the run's lock held. Returns
        how many there were."""
        stale = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def check_usable(self) -> None:
        """Refuse, before anything is written, a run directory that cannot be one."""
        for path in (self.root, *self.root.parents):
            if path.exists() and not path.is_dir():
                what = "the run directory" if path == self.root else "a part of its path"
                raise CutLoopError(f"{path}: {what} is a file, not a folder")
            if path.exists():
                break

    def log(self, message: str) -> None:
        """One line in the human-readable log (appended, flushed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{now()} {message}\n")

    def iter_round_numbers(self) -> Iterator[int]:
        for p in sorted(self.root.glob("round-[0-9][0-9]")):
            yield int(p.name.split("-")[1])


class RunLock:
    """An exclusive advisory lock on `<run>/lock`: two controllers on one run directory would
    both pay for the same judgments. The kernel drops the lock when the holder dies, so a
    SIGKILLed run never leaves a stale lock behind."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CutLoopError(
                f"{self.path}: another cutloop process is running on this run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def holder(self) -> int | None:
        """The pid of the process running on the directory now, or None (`cutloop status`)."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="ignore").strip()
            return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)  # closing drops the shared lock if we got it
        return None

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
