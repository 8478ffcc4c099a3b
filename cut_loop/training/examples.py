"""Tokenized CUT training examples from judged triplets, the collate that batches them, and the
tokenizing and padding helpers every objective shares.

One `CutExample` per kept triplet (ALGORITHMS.md section 2):
- Align-P (judgment None): plain prompt + response, ordinary likelihood.
- Align-N + Misalign (a critique): the judged prompt + response as the first context, and the
  plain prompt + the *same response token ids* as its Misalign partner. The response is
  tokenized once, on its own, and concatenated to each prompt, so the two contexts score exactly
  the same tokens and the ratio r_t = p(y_t | judged) / p(y_t | plain) pairs up token by token.

Prompts come from `PromptTemplate.render` / `render_judged`, the same text generation used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.training.base import Triplet

IGNORE = -100  # label of a position that carries no loss (prompt, padding)


@dataclass(frozen=True)
class CutExample:
    """Token ids and labels (same length; labels are IGNORE on prompt tokens, else equal to the
    ids: the loss shifts them). `plain_*` is set for negatives only: the Misalign context
    (absent for an Align-N-only example, see `TRUNCATED`)."""

    id: str
    input_ids: list[int]
    labels: list[int]
    plain_input_ids: list[int] | None = None
    plain_labels: list[int] | None = None
    judged: bool = False  # the first context holds a critique (Align-N)

    @property
    def negative(self) -> bool:
        """Has a Misalign partner (the plain context of a criticised response)."""
        return self.plain_input_ids is not None


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Prompt text -> ids exactly as generation encodes it (generation/hf.py): no special tokens
    added, since rendered templates already hold whatever the model needs (chat templates write
    their BOS), so training sees the very token sequence the response was sampled from."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def join_and_truncate(
    prompt_ids: list[int], response_ids: list[int], max_length: int
) -> tuple[list[int], list[int]]:
    """Prompt + response as (input_ids, labels), at most `max_length` tokens.

    As in the reference, an overlong sequence loses prompt tokens from the left, so the response
    stays whole. A response that alone does not fit keeps its head: the last prompt token stays
    (its prediction is the first response token's loss) and the response's tail is cut."""
    if max_length < 2:
        raise CutLoopError("train.max_length must be >= 2 (a prompt token and a response token)")
    if len(response_ids) >= max_length:
        prompt_ids, response_ids = prompt_ids[-1:], response_ids[: max_length - 1]
    else:
        keep = max_length - len(response_ids)
        prompt_ids = prompt_ids[-keep:]
    return prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + response_ids


def downsample_positives(triplets: Sequence[Triplet], ratio: float, seed: int) -> list[Triplet]:
    """Keep every negative and `int(ratio * #negatives)` randomly chosen positives, in the
    original order.

    This is the reference's rule exactly (`n_keep = int(n_neg * downsample)`, floor, and all
    positives when that is not fewer than there are). With no negatives it keeps no positives:
    a round the judge fully accepted trains nothing and the policy passes through unchanged."""
    positives = [i for i, t in enumerate(triplets) if t.judgment is None]
    n_neg = len(triplets) - len(positives)
    n_keep = int(n_neg * ratio)
    if n_keep >= len(positives):
        return list(triplets)
    kept = set(random.Random(seed).sample(positives, n_keep))
    return [t for i, t in enumerate(triplets) if t.judgment is not None or i in kept]


def response_ids(tokenizer: Any, triplet: Triplet) -> list[int]:
    """The response's token ids, tokenized on its own, with the EOS token appended unless
    `Triplet.truncated` (generation was cut off, so the model must not learn to stop there)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise CutLoopError("the tokenizer has no EOS token: responses cannot be terminated")
    ids = tokenizer(triplet.response, add_special_tokens=False)["input_ids"]
    if not triplet.truncated and (not ids or ids[-1] != eos):
        ids = [*ids, eos]
    return ids


def plain_sequence(
    triplet: Triplet, template: PromptTemplate, tokenizer: Any, max_length: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the plain prompt + the response: what generation produced and
    what likelihood-style losses (Align-P, SFT, RRHF, DPO) score."""
    prompt = encode_prompt(
        tokenizer, template.render(triplet.instruction, triplet.input, tokenizer)
    )
    return join_and_truncate(prompt, response_ids(tokenizer, triplet), max_length)


# How a response cut off at the token limit trains (`loss.truncated`). Under the plain prompt
# any likelihood term on a cut-off ramble (Align-P, or Misalign's unflagged tokens) teaches the
# policy to ramble on: measured in the CPU demo, the paper's `keep` made answers longer every
# round. `judged` trains them only where the critique is in the context, and still lengthened
# them (LoRA shares the weights of both contexts: 66 -> 80 tokens in one round, vs 58 with
# `drop`, the demo's choice).
TRUNCATED = {
    "keep": "as the paper: trained like any other response (without an end-of-sequence)",
    "judged": "criticised: Align-N only (no Misalign term); accepted: left out",
    "drop": "left out of training",
}


def plain_likelihood_allowed(triplet: Triplet, truncated: str) -> bool:
    """Whether the plain-prompt likelihood of `triplet` may be trained under `truncated`."""
    return not triplet.truncated or truncated == "keep"


def build_examples(
    triplets: Sequence[Triplet],
    template: PromptTemplate,
    tokenizer: Any,
    max_length: int,
    downsample: float,
    seed: int,
    truncated: str = "keep",
) -> list[CutExample]:
    """Down-sample positives (see `downsample_positives`), then tokenize each kept triplet
    (the response as `response_ids` makes it, shared by both contexts of a negative).
    Cut-off responses train as `truncated` says (see `TRUNCATED`): with `judged`, a
    criticised one is an Align-N example alone (its judged context, no Misalign partner)."""
    examples = []
    for t in downsample_positives(triplets, downsample, seed):
        if t.truncated and (truncated == "drop" or (truncated == "judged" and t.judgment is None)):
            continue
        response = response_ids(tokenizer, t)
        plain = encode_prompt(tokenizer, template.render(t.instruction, t.input, tokenizer))
        plain_ids, plain_labels = join_and_truncate(plain, response, max_length)
        if t.judgment is None:
            examples.append(CutExample(t.id, plain_ids, plain_labels))
            continue
        judged_text = template.render_judged(t.instruction, t.input, t.judgment, tokenizer)
        judged_ids, judged_labels = join_and_truncate(
            encode_prompt(tokenizer, judged_text), response, max_length
        )
        if not plain_likelihood_allowed(t, truncated):
            examples.append(CutExample(t.id, judged_ids, judged_labels, judged=True))
            continue
        examples.append(
            CutExample(t.id, judged_ids, judged_labels, plain_ids, plain_labels, judged=True)
        )
    return examples


def collate(examples: Sequence[CutExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch in the reference's layout, minus the positives' empty partner rows.

    Returns, with B = len(examples), N = number of negatives among them, R = B + N and
    T = the longest row:
      input_ids, labels, attention_mask: (R, T) long; rows [0, B) are the first contexts
        (judged for negatives, plain for positives), rows [B, R) the plain contexts of the
        negatives in batch order; padding has attention 0 and label IGNORE.
      neg_rows: (N,) long, the first-context row of each Misalign row B + k.
    """
    rows = [(e.input_ids, e.labels) for e in examples]
    neg_rows = [i for i, e in enumerate(examples) if e.negative]
    rows += [(examples[i].plain_input_ids, examples[i].plain_labels) for i in neg_rows]
    return {**pad_rows(rows, pad_id), "neg_rows": torch.tensor(neg_rows, dtype=torch.long)}


def pad_token_id(tokenizer: Any) -> int:
    """The id padding uses: the tokenizer's pad token, else its EOS (padding is masked)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(input_ids, labels) rows, right-padded to the longest: (R, T) long `input_ids`,
    `labels` and `attention_mask`; padding has attention 0 and label IGNORE."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, labs) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, : len(labs)] = torch.tensor(labs)
        attention[r, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
