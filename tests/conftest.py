from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CUT_ONLINE = SHARED / "data" / "cut_online"
sys.path.insert(0, str(ROOT))

from tests.helpers.fault_tally import record, summary  # noqa: E402 - needs ROOT on the path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + BPE tokenizer (HF directory), built once per test session."""
    from tests.helpers.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def cut_online_dir() -> Path:
    """The CUT authors' released rounds (../shared beside the repo; tests may read them). A
    clone without ../shared skips the tests that read them, saying why; the product and every
    other test never need that folder."""
    if not CUT_ONLINE.is_dir():
        pytest.skip(f"{CUT_ONLINE} is absent (the CUT release data lives in ../shared)")
    return CUT_ONLINE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Tally the tests marked `fault` (tests/helpers/fault_tally.py)."""
    report = (yield).get_result()
    marker = item.get_closest_marker("fault")
    if marker is None or report.skipped:
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        repeated = dict(item.user_properties).get("requests_repeated", 0)
        record(marker.args[0], report.passed, int(repeated))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if line := summary():
        terminalreporter.write_line(line)
