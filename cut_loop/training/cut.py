"""The CUT objective: Align-P, Align-N and Misalign examples, the fused CUT loss."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cut_loop.generation.prompts import PromptTemplate
from cut_loop.training.base import Triplet
from cut_loop.training.examples import CutExample, build_examples, collate
from cut_loop.training.fused_cut import fused_cut_loss
from cut_loop.training.logprobs import decoder_states


class CutObjective:
    """`Objective` for CUT (ALGORITHMS.md section 2): examples from `examples.build_examples`
    (positives down-sampled), the loss `cut_loss` computed by the fused head."""

    def __init__(
        self,
        template: PromptTemplate,
        max_length: int,
        downsample: float,
        threshold: float,
        weight_unlike: float,
        seed: int,
        chunk: int = 512,
        truncated: str = "keep",
        weight_like: float = 1.0,
    ) -> None:
        self.template, self.max_length, self.downsample, self.seed = (
            template, max_length, downsample, seed,
        )  # fmt: skip
        self.truncated, self.weight_like = truncated, weight_like
        self.threshold, self.weight_unlike, self.chunk = threshold, weight_unlike, chunk

    def build(
        self, triplets: Sequence[Triplet], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[CutExample]:
        return build_examples(
            triplets, self.template, tokenizer, self.max_length, self.downsample, self.seed,
            self.truncated,
        )  # fmt: skip

    def counts(self, examples: Sequence[CutExample]) -> dict[str, int]:
        negatives = sum(e.judged for e in examples)
        counts = {"negatives": negatives, "positives": len(examples) - negatives}
        align_n_only = sum(e.judged and not e.negative for e in examples)  # loss.truncated
        return {**counts, "align_n_only": align_n_only} if align_n_only else counts

    def collate(self, examples: Sequence[CutExample], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        hidden, labels, head = decoder_states(model, batch)
        return fused_cut_loss(
            hidden, labels, head.weight, head.bias, batch["neg_rows"],
            self.threshold, self.weight_unlike, self.chunk, weight_like=self.weight_like,
        )  # fmt: skip
