"""One engine per policy: the eval after round k and the generation of round k+1 sample from
the same weights, so one generator (a vLLM engine start, or a transformers model load) serves
both. The loop closes it before anything else needs the memory (a judge, the trainer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cut_loop.generation.base import Completion, Generator, SamplingParams


class SharedGenerator:
    """Keeps the last generator open for the model it was made for; `loader(model)` is a
    `load_generator` for `generate_stage` that reuses it (or closes it and makes the next)."""

    def __init__(self, make: Callable[[str], Generator]) -> None:
        self._make = make
        self._model: str | None = None
        self._generator: Generator | None = None
        self.starts = 0  # generators made: what sharing saves is visible (and tested)

    def loader(self, model: str) -> Callable[[], Generator]:
        def load() -> Generator:
            if self._generator is None or self._model != model:
                self.close()
                self._generator, self._model = self._make(model), model
                self.starts += 1
            return _Borrowed(self._generator)

        return load

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
        self._generator, self._model = None, None


class _Borrowed:
    """The shared generator as a stage sees it: its `close` leaves the engine to the owner."""

    def __init__(self, generator: Generator) -> None:
        self._generator = generator

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        return self._generator.generate(prompts, params, on_batch=on_batch)

    def close(self) -> None:
        pass
