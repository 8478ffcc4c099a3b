"""The SFT objective: likelihood of the acceptable responses, nothing else.

The classic first stage (ALGORITHMS.md section 5), and the baseline CUT is compared with:
criticised responses are dropped, acceptable ones are trained on under the plain prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cut_loop.generation.prompts import PromptTemplate
from cut_loop.training.base import Triplet
from cut_loop.training.examples import (
    CutExample,
    collate,
    plain_likelihood_allowed,
    plain_sequence,
)
from cut_loop.training.fused_cut import fused_cut_loss
from cut_loop.training.logprobs import decoder_states


class SftObjective:
    """`Objective`: L = (1/|T|) sum_T -log p(y_t | plain(x), y_<t) over the response tokens T
    of the micro-batch's acceptable responses (token mean, as CUT's Align term). No
    down-sampling: every acceptable response is kept, every criticised one dropped."""

    def __init__(
        self, template: PromptTemplate, max_length: int, chunk: int = 512, truncated: str = "keep"
    ) -> None:
        self.template, self.max_length, self.chunk = template, max_length, chunk
        self.truncated = truncated  # `keep`: cut-off acceptable answers are trained on too

    def build(
        self, triplets: Sequence[Triplet], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[CutExample]:
        return [
            CutExample(t.id, *plain_sequence(t, self.template, tokenizer, self.max_length))
            for t in triplets
            if t.judgment is None and plain_likelihood_allowed(t, self.truncated)
        ]

    def counts(self, examples: Sequence[CutExample]) -> dict[str, int]:
        return {"positives": len(examples)}

    def collate(self, examples: Sequence[CutExample], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)  # positives only: no Misalign rows

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        # CUT without negatives is exactly this likelihood; its fused head is the fast path.
        hidden, labels, head = decoder_states(model, batch)
        loss, _ = fused_cut_loss(
            hidden, labels, head.weight, head.bias, batch["neg_rows"], 1.0, 0.0, self.chunk
        )
        return loss, {}
