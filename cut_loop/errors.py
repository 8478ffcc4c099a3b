"""The one exception type a user sees, and the environment faults shown like it.

Anything raised as `CutLoopError` is printed by the CLI as a single line (no traceback) and the
process exits non-zero. Raise it for bad input and environment problems the user can fix; let
genuine bugs raise normally so their tracebacks survive. `environment_fault` names the
faults of the machine rather than of the code (disk full, read-only or unwritable paths, a
file where a folder belongs), whichever library they surface from, so the CLI shows them as one
line too.
"""

from __future__ import annotations

import errno
import os
import re
import traceback

# Errors of the file system the user can fix, with what to do about each.
_ADVICE = {
    errno.ENOSPC: "free some space, then re-run the same command to resume",
    errno.EDQUOT: "free some space, then re-run the same command to resume",
    errno.EFBIG: "raise the file size limit (ulimit -f), then re-run to resume",
    errno.EROFS: "use a --run-dir on a writable disk",
    errno.EACCES: "check its permissions, or use another path",
    errno.EPERM: "check its permissions, or use another path",
    errno.ENOTDIR: "a part of this path is a file where a folder belongs",
    errno.EISDIR: "a folder is given where a file belongs",
    errno.EEXIST: "something is in the way: move it, or use another path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "raise the open-file limit (ulimit -n)",
}

# How an OS error reads when safetensors (Rust: "os error 28") or torch (its C++ writer:
# "file write failed", no errno kept) wrap it in their own exception.
_RUST_OS_ERROR = re.compile(r"os error (\d+)")
_WRITE_FAILED = ("file write failed", "No space left", "StorageFull")


class CutLoopError(Exception):
    """A user-facing failure: the message is one line naming the file/field and what to do."""


def environment_fault(e: BaseException) -> str | None:
    """A one-line message for a fault of the machine (see the module docstring), else None:
    anything else is a bug, and keeps its traceback."""
    if isinstance(e, OSError) and e.errno in _ADVICE:
        where = e.filename if e.filename is not None else "a run file"
        return f"{where}: {e.strerror or errno.errorcode[e.errno]}; {_ADVICE[e.errno]}"
    if type(e).__name__ not in ("RuntimeError", "SafetensorError"):
        return None
    text = str(e)
    if (m := _RUST_OS_ERROR.search(text)) and int(m.group(1)) in _ADVICE:
        code = int(m.group(1))
        return f"writing a checkpoint or model failed: {os.strerror(code)}; {_ADVICE[code]}"
    if any(w in text for w in _WRITE_FAILED):
        return (
            "writing a checkpoint or model failed (a full disk or a file size limit):"
            f" {_ADVICE[errno.ENOSPC]}"
        )
    return None


def raised_at(e: BaseException) -> str:
    """`file:line` where `e` was raised (its traceback's innermost frame), for one-line
    messages about a user's own code (a judge plugin)."""
    frames = traceback.extract_tb(e.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown place"


def foreign_error(what: str, e: BaseException) -> CutLoopError:
    """One line for an exception raised by a user's code: what raised, where, and how to see
    the whole traceback."""
    return CutLoopError(
        f"{what} raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        f" (at {raised_at(e)}; CUT_LOOP_TRACEBACK=1 shows the traceback)"
    )
