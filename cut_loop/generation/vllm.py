"""The vLLM generation backend: the engine runs in a child process; the two talk through files.

Why a child: the engine and its KV cache must hand their memory back before training starts,
and vLLM pins its own transformers, so it usually lives in an environment of its own
(`.venv-vllm`, made by `scripts/setup.sh --vllm`) that this process never imports. One child
serves one generate stage: it starts when the stage has shards to make, answers one request per
shard, and exits at `close()`. The file protocol is described in vllm_worker.py.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cut_loop.config import GenerationConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation.base import Completion, SamplingParams, generation_dtype
from cut_loop.generation.vllm_worker import request_path, result_path, write_json_atomic

PYTHON_ENV = "CUT_LOOP_VLLM_PYTHON"
ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages when installed)
REPO_VENV_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
FALLBACK = "use --generator hf (transformers) instead"


class VLLMStartError(CutLoopError):
    """vLLM is missing, does not import, or its engine did not start (`auto` falls back)."""


def find_vllm_python(configured: str = "") -> str | None:
    """The interpreter that runs the engine: `generation.vllm_python`, else $CUT_LOOP_VLLM_PYTHON
    (`none` turns vLLM off), else <checkout>/.venv-vllm/bin/python, else this interpreter if
    vllm is installed in it. None when there is none."""
    choice = configured or os.environ.get(PYTHON_ENV, "")
    if choice == "none":
        return None
    if choice:
        return choice
    if REPO_VENV_PYTHON.exists():
        return str(REPO_VENV_PYTHON)
    return sys.executable if importlib.util.find_spec("vllm") else None


@functools.cache
def vllm_import_error(python: str) -> str | None:
    """Why `import vllm` fails under `python`; None when it works. The import takes seconds,
    so answers are cached on disk, keyed by where vllm, torch and transformers are installed
    there and when those folders last changed."""
    from cut_loop.models import cache_root

    stamp = _worker(python, "stamp", timeout=60)
    if stamp.returncode != 0:
        return f"{python} does not run ({_last_line(stamp.stderr)})"
    key = json.loads(stamp.stdout)
    if key["vllm"] is None:
        return f"vllm is not installed for {python}"
    cache = cache_root() / "vllm-import-check.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if known.get(python, {}).get("stamp") == key:
        return known[python]["error"]
    check = _worker(python, "check", timeout=600)
    error = None if check.returncode == 0 else _last_line(check.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, {**known, python: {"stamp": key, "error": error}})
    return error


def check_options(cfg: GenerationConfig) -> None:
    """The vLLM fields of the config, all problems in one error."""
    errors = []
    if cfg.tensor_parallel_size < 1:
        errors.append("generation.tensor_parallel_size must be >= 1")
    if not 0 < cfg.gpu_memory_utilization <= 1:
        errors.append("generation.gpu_memory_utilization must be in (0, 1]")
    if cfg.cpu_kvcache_gb < 1:
        errors.append("generation.cpu_kvcache_gb must be >= 1 (GiB)")
    if cfg.max_model_len < 0:
        errors.append("generation.max_model_len must be >= 0 (0: the model's own)")
    if errors:
        raise CutLoopError("; ".join(errors))


class VLLMGenerator:
    """A vLLM engine in a child process, started by the constructor (a model vLLM cannot run
    fails here, as VLLMStartError) and stopped by `close()`.

    Each `generate` call is one request: the child tokenizes the prompts exactly as the
    transformers backend does (no added special tokens) and runs them as one engine batch.
    Samples depend only on the prompts and `params.seed` (on CPU the engine RNG is re-seeded
    per request; on GPUs vLLM seeds each request), so a resumed shard samples the same.
    """

    def __init__(self, model_path: str, cfg: GenerationConfig, python: str) -> None:
        check_options(cfg)
        if not Path(python).exists():
            raise VLLMStartError(
                f"generation.vllm_python: {python} does not exist; install vLLM with"
                f" scripts/setup.sh --vllm, or {FALLBACK}"
            )
        self.model = model_path
        self.python = python
        self.workdir = Path(tempfile.mkdtemp(prefix="cutloop-vllm-"))
        self.log_path = self.workdir / "engine.log"
        self.prompt_token_ids: list[list[int]] = []  # of the last call, as the engine saw them
        self._requests = 0
        self._failed = False
        self.dtype = generation_dtype(cfg.dtype)
        options = {
            "model": model_path,
            "dtype": generation_dtype(cfg.dtype),
            "seed": 0,  # requests carry their own seeds
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "cpu_kvcache_gb": cfg.cpu_kvcache_gb,
            "max_model_len": cfg.max_model_len,
            "enforce_eager": cfg.enforce_eager,
        }
        write_json_atomic(self.workdir / "engine.json", options)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                _worker_command(python, "serve", str(self.workdir)),
                env=_engine_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ready = self._wait(self.workdir / "ready.json")
        self.start_seconds = time.monotonic() - started  # imports, engine, warm-up token
        self.device: str = ready["device"]
        self.allocator: str = ready.get("allocator", "default")

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        self._requests += 1
        request = {
            "prompts": list(prompts),
            "n": params.n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stop": list(params.stop),
        }
        sent = request_path(self.workdir, self._requests)
        write_json_atomic(sent, request)
        done = result_path(self.workdir, self._requests)
        result = self._wait(done)
        sent.unlink()
        done.unlink()
        self.prompt_token_ids = result["prompt_token_ids"]
        if on_batch:
            on_batch(len(prompts))
        return [[Completion(**c) for c in row] for row in result["completions"]]

    def close(self) -> None:
        """Stop the engine and wait for the child to exit (its memory is free after this)."""
        if self.proc.poll() is None:
            (self.workdir / "close").touch()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._failed:  # a failure's error message names the log: keep it
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _wait(self, path: Path) -> dict[str, Any]:
        """Poll for a file the child writes; raise with the child's own reason if it stops."""
        error_file = self.workdir / "error.json"
        while not path.exists():
            if self.proc.poll() is not None or error_file.exists():
                self._failed = True
                if self.proc.poll() is None:  # it reported; do not wait for its shutdown
                    self.proc.kill()
                self.proc.wait()
                raise self._failure()
            time.sleep(0.02)
        return json.loads(path.read_text())

    def _failure(self) -> CutLoopError:
        error_file = self.workdir / "error.json"
        if error_file.exists():
            report = json.loads(error_file.read_text())
        else:  # killed (out of memory?) before it could say why
            tail = _last_line(self.log_path.read_text(errors="replace"))
            report = {"stage": "start", "error": f"exit code {self.proc.returncode}: {tail}"}
            if self.proc.returncode == -signal.SIGILL:
                return VLLMStartError(
                    f"vLLM's engine for {self.model} died of SIGILL (exit code -4): its CPU"
                    f" kernels used an instruction this CPU lacks, for dtype {self.dtype}; set"
                    f" generation.dtype=float32 (log: {self.log_path}), or {FALLBACK}"
                )
        stage, error = report["stage"], report["error"]
        where = f"(log: {self.log_path})"
        if stage == "import":
            return VLLMStartError(
                f"vLLM does not import under {self.python}: {error} {where}; re-run"
                f" scripts/setup.sh --vllm, or {FALLBACK}"
            )
        if stage == "generate":
            return CutLoopError(f"vLLM failed while generating: {error} {where}; or {FALLBACK}")
        lowered = error.lower()
        if any(w in lowered for w in ("memory", "kv cache", "cache blocks", "exit code -9")):
            return VLLMStartError(
                f"vLLM could not start {self.model}, out of memory: {error} {where}; lower"
                " generation.cpu_kvcache_gb (VLLM_CPU_KVCACHE_SPACE) on CPU, or"
                " generation.gpu_memory_utilization / generation.max_model_len on GPUs,"
                f" or {FALLBACK}"
            )
        if any(w in lowered for w in ("not supported", "unsupported", "architecture")):
            return VLLMStartError(
                f"vLLM does not support the model {self.model}: {error} {where}; {FALLBACK}"
            )
        return VLLMStartError(f"vLLM could not start {self.model}: {error} {where}; {FALLBACK}")


TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find_tcmalloc(dirs: Sequence[str] = LIBRARY_DIRS) -> str | None:
    """The path of a tcmalloc shared library, or None (Debian/Ubuntu: libtcmalloc-minimal4)."""
    for folder in dirs:
        for name in TCMALLOC_NAMES:
            if (path := Path(folder) / name).exists():
                return str(path)
    return None


def _engine_env() -> dict[str, str]:
    """The child's environment. On CPU, tcmalloc is preloaded when the machine has it, as
    vLLM's CPU guide asks: each engine step allocates activations and logits of tens of MB,
    which glibc hands back to the kernel and page-faults in again; tcmalloc keeps them
    (8% more tokens/s for SmolLM2-135M here). GPU engines are left as they are."""
    import torch

    env = dict(os.environ)
    tcmalloc = None if torch.cuda.is_available() else find_tcmalloc()
    preload = env.get("LD_PRELOAD", "")
    if tcmalloc and "tcmalloc" not in preload:
        env["LD_PRELOAD"] = f"{tcmalloc}:{preload}" if preload else tcmalloc
    return env


def _worker_command(python: str, *args: str) -> list[str]:
    # Appended, not prepended, to sys.path: the vLLM environment's own packages (its
    # transformers) must win over anything beside this checkout.
    boot = (
        f"import sys; sys.path.append({str(ROOT)!r});"
        " from cut_loop.generation.vllm_worker import main; sys.exit(main(sys.argv[1:]))"
    )
    return [python, "-c", boot, *args]


def _worker(python: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            _worker_command(python, *args), capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(args, 1, "", str(e))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"
