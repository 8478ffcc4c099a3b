"""The `none` objective: no training at all, the control arm of a comparison.

Every round still samples, generates and judges, and the policy passes through unchanged (an
objective with no examples makes the trainers copy the starting model), so a run with
`--loss none` measures what the held-out evaluation does without learning: with greedy eval
decoding every round's answers equal round 0's, and any difference a loss shows is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cut_loop.training.base import Triplet


class NoTraining:
    """`Objective` with nothing to train on."""

    def build(
        self, triplets: Sequence[Triplet], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[Any]:
        return []

    def counts(self, examples: Sequence[Any]) -> dict[str, int]:
        return {}

    def collate(self, examples: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
        raise AssertionError("the `none` objective has no batches")

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        raise AssertionError("the `none` objective has no loss")
