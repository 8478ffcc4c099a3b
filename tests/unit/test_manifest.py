"""The reproducibility manifest: what it records, and how a version change is told."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cut_loop.data.records import Instruction
from cut_loop.manifest import (
    _vllm_version,
    build_manifest,
    record_invocation,
    run_version_changes,
)
from cut_loop.rundir import RunDir, read_jsonl


def test_the_first_invocation_is_kept_and_every_one_is_appended(tmp_path: Path) -> None:
    pool = [Instruction("a", "Say hi.", ""), Instruction("b", "Say bye.", "")]
    rd = RunDir(tmp_path)
    first = build_manifest(3, pool, judge=object(), vllm_python=None)
    assert first["versions"]["torch"] == torch.__version__ and first["seed"] == 3
    assert first["versions"]["vllm"] is None and first["judge_prompt_sha256"] is None
    assert record_invocation(rd, first) == []
    later = {**first, "versions": {**first["versions"], "torch": "9.9.9"}}
    assert record_invocation(rd, later) == [f"torch {torch.__version__} -> 9.9.9"]
    assert json.loads((tmp_path / "manifest.json").read_text())["versions"] == first["versions"]
    assert len(read_jsonl(tmp_path / "invocations.jsonl")) == 2
    assert run_version_changes(tmp_path) == [f"torch {torch.__version__} -> 9.9.9"]


def test_the_instruction_hash_follows_the_content(tmp_path: Path) -> None:
    a = build_manifest(0, [Instruction("a", "Say hi.", "")], object(), None)
    b = build_manifest(0, [Instruction("a", "Say hi!", "")], object(), None)
    assert a["instructions_sha256"] != b["instructions_sha256"]


def test_the_vllm_version_is_asked_of_its_own_interpreter(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 0.32.0\n")
    fake.chmod(0o755)
    assert _vllm_version(str(fake)) == "0.32.0"
    assert _vllm_version(str(tmp_path / "missing")) is None
