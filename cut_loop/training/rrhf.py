"""The RRHF objective: rank the judged responses to each instruction by their scores.

Yuan et al., "RRHF: Rank Responses to Align Language Models with Human Feedback without
tears", arXiv 2304.05302; ALGORITHMS.md section 3. We implement the paper's loss over all
pairs; the public trainer only compares pairs that involve each query's first response.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.training.base import Triplet
from cut_loop.training.examples import pad_rows, plain_sequence
from cut_loop.training.logprobs import sequence_logprobs


@dataclass(frozen=True)
class RankedGroup:
    """The judged responses to one instruction (`id` = its group): one (input_ids, labels)
    row per response under the plain prompt, and the response's judge score."""

    id: str
    input_ids: list[list[int]]
    labels: list[list[int]]
    scores: list[float]


def rrhf_loss(
    seq_logp: torch.Tensor,
    lengths: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    rrhf_weight: float,
    length_penalty: float,
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """The RRHF loss of a batch of G groups (queries) of responses.

    seq_logp: (R,) sum of log p(y_t | x, y_<t) over each response's scored tokens;
    lengths: (R,) how many tokens that is; scores: (R,) judge scores; groups: (R,) long, the
    group of each response, numbered 0 .. G-1.
    For each group, over its responses i:
      p_i    = seq_logp_i / |y_i| ** length_penalty
      L_rank = sum over pairs with r_i < r_j of max(0, p_i - p_j)   (equal scores: no pair)
      L_ft   = -seq_logp_b / |y_b|, b the best-scored response (the first of equals)
      L_g    = rrhf_weight * L_rank + L_ft
    L = mean of L_g over groups; a group of one response has no pairs, so L_g = L_ft (SFT).
    An empty response (|y| = 0) counts as length 1 (its sums are 0).
    Returns (loss, components): rank_loss and sft_loss (means over groups), ranked_pairs
    (pairs with different scores, per group).
    """
    length = lengths.clamp(min=1).to(seq_logp.dtype)
    p = seq_logp / length**length_penalty
    ranked = (groups[:, None] == groups[None, :]) & (scores[:, None] < scores[None, :])
    rank = torch.relu(p[:, None] - p[None, :])[ranked].sum()
    n_groups = int(groups.max()) + 1
    best = [
        members[scores[members].argmax()]  # argmax: the first of equal maxima
        for members in (torch.nonzero(groups == g).squeeze(1) for g in range(n_groups))
    ]
    best_rows = torch.stack(best)
    ft = -(seq_logp[best_rows] / length[best_rows]).sum()
    loss = (rrhf_weight * rank + ft) / n_groups
    components: dict[str, float | None] = {
        "rank_loss": rank.item() / n_groups,
        "sft_loss": ft.item() / n_groups,
        "ranked_pairs": int(ranked.sum()) / n_groups,
    }
    return loss, components


class RrhfObjective:
    """`Objective` for RRHF: one example per instruction holding all its judged responses
    (`micro_batch_size` counts instructions; memory grows with responses per instruction).
    Needs a score on every response; verdicts and critiques are not used."""

    def __init__(
        self,
        template: PromptTemplate,
        max_length: int,
        rrhf_weight: float,
        length_penalty: float,
        chunk: int = 512,
    ) -> None:
        self.template, self.max_length, self.chunk = template, max_length, chunk
        self.rrhf_weight, self.length_penalty = rrhf_weight, length_penalty

    def build(
        self, triplets: Sequence[Triplet], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[RankedGroup]:
        unscored = [t for t in triplets if t.score is None or not math.isfinite(t.score)]
        if unscored:
            raise CutLoopError(
                f"loss rrhf needs a judge that returns scores: {len(unscored)} of"
                f" {len(triplets)} judged responses have no numeric score (first: id"
                f" {unscored[0].id!r}); use a scoring judge, or a `score` on every row offline"
            )
        grouped: dict[str, list[Triplet]] = {}
        for t in triplets:
            grouped.setdefault(t.group, []).append(t)
        examples = []
        for group, members in grouped.items():
            rows = [plain_sequence(t, self.template, tokenizer, self.max_length) for t in members]
            examples.append(
                RankedGroup(
                    group,
                    [ids for ids, _ in rows],
                    [labels for _, labels in rows],
                    [float(t.score) for t in members],  # type: ignore[arg-type]
                )
            )
        return examples

    def counts(self, examples: Sequence[RankedGroup]) -> dict[str, int]:
        pairs = sum(a < b for e in examples for a in e.scores for b in e.scores)
        return {
            "groups": len(examples),
            "responses": sum(len(e.scores) for e in examples),
            "ranked_pairs": pairs,
        }

    def collate(self, examples: Sequence[RankedGroup], pad_id: int) -> dict[str, torch.Tensor]:
        """Every response of every group as a row; `groups` (R,) long numbers each row's group
        within the batch, `scores` (R,) float64 holds its score."""
        rows = [row for e in examples for row in zip(e.input_ids, e.labels, strict=True)]
        groups = [g for g, e in enumerate(examples) for _ in e.scores]
        return {
            **pad_rows(rows, pad_id),
            "groups": torch.tensor(groups, dtype=torch.long),
            "scores": torch.tensor([s for e in examples for s in e.scores], dtype=torch.float64),
        }

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        seq_logp, lengths = sequence_logprobs(model, batch, self.chunk)
        return rrhf_loss(
            seq_logp, lengths, batch["scores"], batch["groups"],
            self.rrhf_weight, self.length_penalty,
        )  # fmt: skip
