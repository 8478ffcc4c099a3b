"""How far a round's policy moved: the log-probability it gives round 0's held-out answers.

The mean per-token log p of the starting policy's own held-out answers, under the policy after
round k, minus the same under the starting policy (so 0 at round 0). Negative: the policy has
moved away from what it used to say (as any learning must); the size says how far, whatever the
judge thinks of where it went. A forward pass over a few thousand tokens, in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cut_loop.generation.prompts import PromptTemplate
from cut_loop.stages import Response
from cut_loop.training.base import Triplet
from cut_loop.training.examples import pad_rows, pad_token_id, plain_sequence
from cut_loop.training.logprobs import batch_logprobs


@torch.no_grad()
def mean_token_logprob(
    model_path: str,
    responses: Sequence[Response],
    template: PromptTemplate,
    max_length: int,
    batch_size: int = 8,
) -> float | None:
    """Mean log p(y_t | plain(x), y_<t) over every token of `responses` (an end-of-sequence
    counted for finished ones) under the model in `model_path`; None without tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    pad = pad_token_id(tokenizer)
    rows = [
        plain_sequence(_triplet(r), template, tokenizer, max_length)
        for r in responses
        if r["response"] or r["finished"]
    ]
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch: dict[str, Any] = {
            k: v.to(device) for k, v in pad_rows(rows[start : start + batch_size], pad).items()
        }
        logp, mask = batch_logprobs(model, batch)
        total += float(logp[mask].sum())
        count += int(mask.sum())
    del model
    return total / count if count else None


def _triplet(r: Response) -> Triplet:
    return Triplet(r["id"], r["instruction"], r["input"], r["response"], None,
                   truncated=not r["finished"])  # fmt: skip
