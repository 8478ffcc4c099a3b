"""The Generator protocol: prompts in, n completions per prompt out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 0.9
    n: int = 1  # samples per prompt (RRHF/DPO rank several)
    seed: int = 0
    # Stop strings: a completion ends before the first one (which is left out of its text), and
    # counts as finished.
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finished: bool  # False when generation stopped at max_new_tokens (a cut-off answer)
    num_tokens: int


class Generator(Protocol):
    """A loaded policy that completes fully rendered prompt strings (templates are applied by
    the caller, so every backend sees the same prompt text)."""

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        """Return, for each prompt, `params.n` completions; `on_batch(k)` (progress) is called
        as each group of k prompts finishes."""
        ...

    def close(self) -> None:
        """Free the model (memory goes back before training starts)."""
        ...


def generation_dtype(dtype: str) -> str:
    """`generation.dtype` made concrete: `auto` is bfloat16 where there is a GPU, else float32
    (on CPUs without AMX bf16 matmuls run slower than fp32 ones, and vLLM's bf16 CPU kernels
    crash with SIGILL on some CPUs that have AVX512-FP16)."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"
