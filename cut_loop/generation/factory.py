"""Choosing and building a generation backend from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cut_loop.config import GenerationConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation.base import Generator, generation_dtype

if TYPE_CHECKING:
    from cut_loop.generation.vllm import VLLMGenerator

# `auto` tries vLLM once per process: after a failed start every later stage (the next round's
# checkpoint is the same architecture) goes straight to transformers.
_auto_gave_up: list[str] = []


def make_generator(cfg: GenerationConfig, model_path: str) -> Generator:
    """`hf` (transformers, in-process), `vllm` (an engine in a child process), or `auto`:
    vLLM when an interpreter with vLLM is found (see `find_vllm_python`), vllm imports there
    and the engine starts for this model; transformers otherwise, saying why when vLLM is
    installed but could not be used."""
    if cfg.backend == "vllm":
        from cut_loop.generation.vllm import VLLMGenerator, find_vllm_python

        python = find_vllm_python(cfg.vllm_python)
        if python is None:
            raise CutLoopError(
                "generation.backend=vllm: vLLM is not installed (no .venv-vllm, no"
                " generation.vllm_python or $CUT_LOOP_VLLM_PYTHON); install it with"
                " scripts/setup.sh --vllm, or use --generator hf"
            )
        return _started(VLLMGenerator(model_path, cfg, python))
    if cfg.backend == "auto" and not _auto_gave_up:
        vllm = _try_vllm(cfg, model_path)
        if vllm is not None:
            return vllm
    from cut_loop.generation.hf import HFGenerator

    return HFGenerator(model_path, dtype=generation_dtype(cfg.dtype), batch_size=cfg.batch_size)


def _try_vllm(cfg: GenerationConfig, model_path: str) -> Generator | None:
    from cut_loop.generation.vllm import (
        VLLMGenerator,
        VLLMStartError,
        find_vllm_python,
        vllm_import_error,
    )
    from cut_loop.progress import console

    python = find_vllm_python(cfg.vllm_python)
    if python is None:
        return None
    reason = vllm_import_error(python)
    if reason is None:
        try:
            return _started(VLLMGenerator(model_path, cfg, python))
        except VLLMStartError as e:
            reason = str(e)
    _auto_gave_up.append(reason)
    console.print(
        f"generation: with transformers, not vLLM: {reason}", markup=False, soft_wrap=True
    )
    return None


def _started(generator: VLLMGenerator) -> VLLMGenerator:
    from cut_loop.progress import console

    hint = ""
    if generator.device == "cpu" and generator.allocator != "tcmalloc":
        hint = (
            " (no tcmalloc found: installing libtcmalloc-minimal4 makes CPU generation ~8% faster)"
        )
    console.print(
        f"generation: vLLM engine for {generator.model} up in {generator.start_seconds:.0f} s"
        + hint,
        markup=False,
        soft_wrap=True,
    )
    return generator
