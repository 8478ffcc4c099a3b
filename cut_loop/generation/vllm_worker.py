"""The vLLM engine process; cut_loop/generation/vllm.py is the parent side.

This module runs under the vLLM environment's interpreter, next to vLLM's own pinned
transformers, so it imports only the standard library at module level and vllm (plus torch)
inside `serve`: nothing else from cut_loop. The parent imports it too, for the file names.

Modes (`main(argv)`):
  stamp          print what a cached "does vllm import?" answer is keyed on (no import: fast)
  check          import vllm; exit 1 with the error on stderr when it fails
  serve WORKDIR  start the engine and answer requests until told to close

The serve protocol, files in WORKDIR, each written atomically (temp file, then rename):
  engine.json         (parent) model, dtype, seed, tensor_parallel_size, gpu_memory_utilization,
                      cpu_kvcache_gb, max_model_len, enforce_eager
  ready.json          (child)  the engine is up and has generated once: device, start seconds,
                      allocator (tcmalloc or default)
  request-NNNN.json   (parent) N = 1, 2, ...: prompts (rendered text), n, max_tokens,
                      temperature, top_p, seed, stop
  result-NNNN.json    (child)  completions [prompt][sample] = {text, finished, num_tokens},
                      prompt_token_ids [prompt], seconds
  close               (parent) the child exits, and the engine's memory goes back
  error.json          (child)  {"stage": "import" | "start" | "generate", "error": "..."}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.01


def request_path(workdir: Path, n: int) -> Path:
    return workdir / f"request-{n:04d}.json"


def result_path(workdir: Path, n: int) -> Path:
    return workdir / f"result-{n:04d}.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Readers see the whole file or none (a per-process temp name: writers may race)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False))
    os.replace(tmp, path)


def completion(output: Any) -> dict[str, Any]:
    """One vLLM CompletionOutput as the Completion fields of cut_loop's Generator protocol.

    Finished means the model ended the answer itself: an end-of-sequence token or a stop
    string (`finish_reason == "stop"`), not the token limit ("length"). vLLM counts the
    end-of-sequence token in `token_ids`; the transformers backend does not, so it is left out
    here too (a stop string's tokens do count, in both)."""
    finished = output.finish_reason == "stop"
    num_tokens = len(output.token_ids)
    if finished and not isinstance(output.stop_reason, str):
        num_tokens -= 1  # stop_reason None or an int: an end-of-sequence token
    return {"text": output.text.strip(), "finished": finished, "num_tokens": num_tokens}


def cpu_list(cpus: set[int]) -> str:
    """{0, 1, 2, 5} -> "0-2,5" (the format of VLLM_CPU_OMP_THREADS_BIND)."""
    ranges: list[list[int]] = []
    for c in sorted(cpus):
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def _cpu_env(options: dict[str, Any]) -> None:
    """vLLM's CPU defaults do not fit a small shared machine: it sizes the KV cache from
    node memory (and refuses to start when that is busy), and leaves a core idle."""
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(options["cpu_kvcache_gb"])
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_list(os.sched_getaffinity(0)))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    # The engine core in this process: re-seeding the RNG before a request then reaches the
    # sampler (see _generate), a failure raises its real cause, and the start skips two
    # interpreter launches (14 s, not 28 s, for SmolLM2-135M here, at the same tokens/s).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _die_with_parent() -> int:
    """SIGKILL this process when the parent dies (Linux), so a killed controller never leaves
    an engine holding memory; returns the parent's pid for the polling fallback."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    return parent


def _next_request(workdir: Path, n: int, parent: int) -> dict[str, Any] | None:
    """Wait for request n; None when the parent asks to close (or is gone)."""
    path = request_path(workdir, n)
    while not path.exists():
        if (workdir / "close").exists() or os.getppid() != parent:
            return None
        time.sleep(POLL_SECONDS)
    return json.loads(path.read_text())


def _generate(llm: Any, request: dict[str, Any], cpu: bool) -> dict[str, Any]:
    import torch
    from vllm import SamplingParams

    start = time.monotonic()
    tokenizer = llm.get_tokenizer()
    # Token ids, not text: vLLM would add special tokens (a BOS) to text prompts, and the
    # transformers backend adds none (templates carry what the model needs).
    ids = [tokenizer.encode(p, add_special_tokens=False) for p in request["prompts"]]
    seed = request["seed"]
    if cpu:
        # Per-request seeds crash vLLM's CPU sampler ("CPU Generator does not use offset"), so
        # the engine's one RNG is re-seeded instead, and the prefix cache emptied: a request's
        # samples then depend only on its prompts and seed, never on what ran before.
        torch.manual_seed(seed)
        llm.reset_prefix_cache()
    params = SamplingParams(
        n=request["n"],
        max_tokens=request["max_tokens"],
        temperature=request["temperature"],
        top_p=request["top_p"] if request["temperature"] > 0 else 1.0,
        stop=request["stop"] or None,
        seed=None if cpu else seed,  # vLLM gives the n samples seeds seed, seed + 1, ...
    )
    outputs = llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
    return {
        "completions": [
            [completion(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs
        ],
        "prompt_token_ids": ids,
        "seconds": time.monotonic() - start,
    }


def serve(workdir: Path) -> int:
    parent = _die_with_parent()
    options = json.loads((workdir / "engine.json").read_text())
    stage = "import"
    try:
        import torch

        cpu = not torch.cuda.is_available()
        if cpu:
            _cpu_env(options)
        from vllm import LLM, SamplingParams

        stage = "start"
        start = time.monotonic()
        llm = LLM(
            model=options["model"],
            dtype=options["dtype"],
            seed=options["seed"],
            tensor_parallel_size=options["tensor_parallel_size"],
            gpu_memory_utilization=options["gpu_memory_utilization"],
            max_model_len=options["max_model_len"] or None,
            enforce_eager=options["enforce_eager"],
        )
        # One token now, so that a model the kernels cannot run (e.g. an unsupported head size)
        # fails here, as a start failure, rather than in the middle of a stage.
        llm.generate([{"prompt_token_ids": [0]}], SamplingParams(max_tokens=1), use_tqdm=False)
        ready = {
            "device": "cpu" if cpu else "cuda",
            "start_seconds": time.monotonic() - start,
            "allocator": _allocator(),
        }
        write_json_atomic(workdir / "ready.json", ready)
        stage = "generate"
        n = 1
        while (request := _next_request(workdir, n, parent)) is not None:
            write_json_atomic(result_path(workdir, n), _generate(llm, request, cpu))
            n += 1
        return 0
    except Exception as e:
        write_json_atomic(workdir / "error.json", {"stage": stage, "error": _one_line(e)})
        raise


def _allocator() -> str:
    """ "tcmalloc" when the parent preloaded it into this process, else "default"."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "default"
    return "tcmalloc" if "libtcmalloc" in maps else "default"


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


def _stamp() -> dict[str, Any]:
    """Where vllm, torch and transformers are installed and when those folders last changed:
    an install or uninstall in any of them changes the stamp."""
    import importlib.util

    stamp: dict[str, Any] = {"python": sys.executable}
    for name in ("vllm", "torch", "transformers"):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec and spec.origin else None
        folder = Path(origin).parent.parent if origin else None
        stamp[name] = [str(folder), folder.stat().st_mtime_ns] if folder else None
    return stamp


def main(argv: list[str]) -> int:
    mode, *rest = argv
    if mode == "stamp":
        print(json.dumps(_stamp()))
        return 0
    if mode == "check":
        import vllm  # noqa: F401

        return 0
    if mode == "serve":
        return serve(Path(rest[0]))
    raise SystemExit(f"unknown mode {mode!r}: stamp, check or serve WORKDIR")


if __name__ == "__main__":  # pragma: no cover - run by cut_loop.generation.vllm
    sys.exit(main(sys.argv[1:]))
