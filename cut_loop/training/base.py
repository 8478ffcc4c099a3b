"""What the trainer consumes, the Trainer protocol, and the Objective protocol (one per loss)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Triplet:
    """(instruction, response, judgment): judgment None means the judge found it acceptable.

    `id` names the response; `prompt_id` names its instruction, which several responses share
    when the round samples more than one per instruction (ranking losses group by it).
    """

    id: str
    instruction: str
    input: str
    response: str
    judgment: str | None
    score: float | None = None
    truncated: bool = False  # the response hit the token limit: no end-of-sequence is trained
    prompt_id: str = ""  # empty: the same as `id` (one response per instruction)

    @property
    def group(self) -> str:
        return self.prompt_id or self.id


@dataclass
class TrainResult:
    steps: int
    examples: int
    metrics: dict[str, Any] = field(default_factory=dict)


class Trainer(Protocol):
    def train(
        self, triplets: Sequence[Triplet], start_model: Path, work_dir: Path, out_dir: Path
    ) -> TrainResult:
        """Train from `start_model` on `triplets`; keep resumable state under `work_dir`
        (resuming from the newest checkpoint there if any) and save the final policy as a
        Hugging Face directory in `out_dir`."""
        ...


class Objective(Protocol):
    """One training loss, seen from a loss-agnostic trainer: how judged triplets become
    examples, how examples batch, and the loss of a batch. Built-ins: `cut.py`, `sft.py`,
    `rrhf.py`, `dpo.py`. Examples are frozen dataclasses with an `id` (a checkpoint
    fingerprints them, so they must be plain data)."""

    def build(
        self, triplets: Sequence[Triplet], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[Any]:
        """Tokenized examples (empty: nothing to train, the policy passes through). Raises
        CutLoopError, before any training, when the triplets cannot feed this loss."""
        ...

    def counts(self, examples: Sequence[Any]) -> dict[str, int]:
        """What the examples hold, for the round's metrics (e.g. negatives, positives)."""
        ...

    def collate(self, examples: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
        """A batch of tensors, always with (R, T) `input_ids` and `attention_mask`."""
        ...

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        """The batch's scalar loss under `model` (a transformers causal LM; with LoRA its base
        model) and named components: the same keys every batch, None where a batch has none."""
        ...
