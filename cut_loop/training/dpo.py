"""The DPO objective: prefer the better of two judged responses to the same instruction.

Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model", arXiv 2305.18290. Pairs come from the judgments (acceptable over criticised, or the
higher score over the lower); the reference policy is the round's starting policy.

The reference's log-probabilities are computed once, before training, by a frozen copy of the
starting model, and stored with the examples (and in work_dir, so a resumed run reads them
back rather than recomputing them). That costs one forward pass per pair instead of one per
pair per epoch, and keeps the trainer a single-model trainer.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.progress import stage_bar
from cut_loop.rundir import atomic_write_text
from cut_loop.training.base import Triplet
from cut_loop.training.examples import pad_rows, pad_token_id, plain_sequence
from cut_loop.training.logprobs import sequence_logprobs


@dataclass(frozen=True)
class PreferencePair:
    """A chosen and a rejected response to one instruction under the plain prompt, and the
    reference policy's summed response log-probabilities of each."""

    id: str
    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def preference_pairs(triplets: Sequence[Triplet]) -> list[tuple[Triplet, Triplet]]:
    """(chosen, rejected) pairs within each group (`Triplet.group`), in input order. When
    every response of a group has a score, every pair with different scores (higher chosen;
    equal scores give no pair); otherwise every acceptable x criticised pair."""
    grouped: dict[str, list[Triplet]] = {}
    for t in triplets:
        grouped.setdefault(t.group, []).append(t)
    pairs = []
    for members in grouped.values():
        if all(t.score is not None for t in members):
            pairs += [(a, b) for a in members for b in members if a.score > b.score]  # type: ignore[operator]
        else:
            good = [t for t in members if t.judgment is None]
            pairs += [(a, b) for a in good for b in members if b.judgment is not None]
    return pairs


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """L = mean over pairs of -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), all four
    (P,) summed response log-probabilities (policy and reference, chosen and rejected).
    Components: chosen_reward and rejected_reward (the implicit rewards beta * (pi - ref),
    means), reward_margin (their mean difference), reward_accuracy (share of pairs whose chosen
    reward is the higher)."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen - rejected).mean()
    components: dict[str, float | None] = {
        "chosen_reward": chosen.mean().item(),
        "rejected_reward": rejected.mean().item(),
        "reward_margin": (chosen - rejected).mean().item(),
        "reward_accuracy": (chosen > rejected).float().mean().item(),
    }
    return loss, components


class DpoObjective:
    """`Objective` for DPO: one example per preference pair; `micro_batch_size` counts pairs."""

    def __init__(
        self,
        template: PromptTemplate,
        max_length: int,
        beta: float,
        *,
        device: torch.device,
        bf16: bool,
        batch_size: int,
        chunk: int = 512,
    ) -> None:
        self.template, self.max_length, self.beta, self.chunk = template, max_length, beta, chunk
        self.device, self.bf16, self.batch_size = device, bf16, batch_size

    def build(
        self, triplets: Sequence[Triplet], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[PreferencePair]:
        sizes = Counter(t.group for t in triplets)
        if sizes and max(sizes.values()) < 2:
            raise CutLoopError(
                "loss dpo needs generation.samples_per_instruction >= 2: it compares judged"
                " responses to the same instruction, and every instruction here has only one"
            )
        pairs = []
        for chosen, rejected in preference_pairs(triplets):
            c = plain_sequence(chosen, self.template, tokenizer, self.max_length)
            r = plain_sequence(rejected, self.template, tokenizer, self.max_length)
            pairs.append(PreferencePair(f"{chosen.id}>{rejected.id}", *c, *r))
        if not pairs:  # all verdicts (or scores) equal: nothing to prefer
            return []
        return self._with_reference(pairs, tokenizer, start_model, work_dir)

    def counts(self, examples: Sequence[PreferencePair]) -> dict[str, int]:
        return {"pairs": len(examples)}

    def collate(self, examples: Sequence[PreferencePair], pad_id: int) -> dict[str, torch.Tensor]:
        """Rows [0, P) the chosen responses, [P, 2P) the rejected ones in the same order;
        `reference` (P, 2) float64: the reference's (chosen, rejected) log-probabilities."""
        rows = [(e.chosen_ids, e.chosen_labels) for e in examples]
        rows += [(e.rejected_ids, e.rejected_labels) for e in examples]
        reference = [(e.ref_chosen, e.ref_rejected) for e in examples]
        return {**pad_rows(rows, pad_id), "reference": torch.tensor(reference, dtype=torch.float64)}

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | None]]:
        seq_logp, _ = sequence_logprobs(model, batch, self.chunk)
        chosen, rejected = seq_logp.chunk(2)
        reference = batch["reference"].to(seq_logp.dtype)
        return dpo_loss(chosen, rejected, reference[:, 0], reference[:, 1], self.beta)

    def _with_reference(
        self, pairs: list[PreferencePair], tokenizer: Any, start_model: Path, work_dir: Path
    ) -> list[PreferencePair]:
        """The pairs with the frozen starting policy's log-probabilities, computed with the
        training's precision and read back from work_dir when this data already has them."""
        key = hashlib.sha256(
            json.dumps([(p.id, p.chosen_ids, p.rejected_ids) for p in pairs]).encode()
        ).hexdigest()
        cache = Path(work_dir) / "reference_logps.json"
        if cache.exists() and json.loads(cache.read_text())["key"] == key:
            values = json.loads(cache.read_text())["logps"]
        else:
            values = self._reference_logps(pairs, pad_token_id(tokenizer), start_model)
            atomic_write_text(cache, json.dumps({"key": key, "logps": values}))
        return [
            replace(p, ref_chosen=c, ref_rejected=r)
            for p, (c, r) in zip(pairs, values, strict=True)
        ]

    def _reference_logps(
        self, pairs: list[PreferencePair], pad_id: int, start_model: Path
    ) -> list[tuple[float, float]]:
        from transformers import AutoModelForCausalLM

        # float32 weights under the same autocast as training: at step 0 policy == reference.
        model = AutoModelForCausalLM.from_pretrained(start_model, dtype=torch.float32)
        model.to(self.device).eval().requires_grad_(False)
        values: list[tuple[float, float]] = []
        batches = range(0, len(pairs), self.batch_size)
        with stage_bar("reference log-probs", len(batches), unit="batch") as bar, torch.no_grad():
            for start in batches:
                batch = self.collate(pairs[start : start + self.batch_size], pad_id)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    chosen, rejected = sequence_logprobs(model, batch, self.chunk)[0].chunk(2)
                values += zip(chosen.tolist(), rejected.tolist(), strict=True)
                bar.advance()
        return values
