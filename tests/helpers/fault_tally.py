"""The tally of fault-injection cases, printed as one line at the end of a test session.

A test marked `@pytest.mark.fault(kind)` is recorded by tests/conftest.py's report hook: ok
when it passed, not ok when it failed (a skip is not recorded). Kinds: "kills" (SIGKILL at a
seeded random moment), "windows" (SIGKILL or a stop signal aimed at a narrow window), "bad
inputs" (a bad input or an environment fault: one line, nothing touched). A test that saw judge
requests paid twice says how many with `record_property("requests_repeated", n)`.
"""

from __future__ import annotations

KINDS = {"kills": "survived", "windows": "survived", "bad inputs": "handled"}

_cases: list[tuple[str, bool, int]] = []


def record(kind: str, ok: bool, repeated: int = 0) -> None:
    if kind not in KINDS:
        raise ValueError(f"fault kind {kind!r}: one of {', '.join(KINDS)}")
    _cases.append((kind, ok, repeated))


def summary() -> str | None:
    """kills survived / tried, windows survived / tried, bad inputs handled / tried, requests
    repeated; None when no case ran."""
    if not _cases:
        return None
    parts = []
    for kind, verb in KINDS.items():
        mine = [ok for k, ok, _ in _cases if k == kind]
        parts.append(f"{kind} {verb} {sum(mine)}/{len(mine)}")
    repeated = sum(n for *_, n in _cases)
    return f"fault injection: {', '.join(parts)}, judge requests repeated {repeated}"
