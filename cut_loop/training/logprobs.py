"""Log-probabilities of label tokens without the B x T x V softmax.

Only the label tokens' probabilities are ever needed, and log p(y_t) = logit[y_t] -
logsumexp(logits_t) gives them chunk by chunk of positions (ALGORITHMS.md section 2, notes).
Every loss in cut_loop scores tokens through here or through `fused_cut.py`, which shares
`label_logprobs` so that both give bit-identical numbers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cut_loop.training.examples import IGNORE


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays): logsumexp over a big vocabulary in bf16 loses the
    label's probability in rounding, whatever the autocast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def project(
    hidden: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    """Logits of `hidden` under the LM head (at least float32, autocast off); `hidden` itself
    when there is no head (it already holds logits)."""
    with torch.autocast(hidden.device.type, enabled=False):
        logits = upcast(hidden)
        if weight is not None:
            logits = F.linear(logits, upcast(weight), None if bias is None else upcast(bias))
        return logits


def label_logprobs(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """(n,) log p(labels) for one chunk of n positions: logit[y] - logsumexp(logits)."""
    logits = project(hidden, weight, bias)
    with torch.autocast(hidden.device.type, enabled=False):
        return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    hidden_or_logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    chunk: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(labels) at every position, without the full-vocabulary tensor.

    hidden_or_logits: (R, T, H) final hidden states when `weight` (the LM head, (V, H), with
      optional `bias` (V,)) is given, else (R, T, V) logits. Position t scores labels[:, t]:
      the caller shifts (hidden[:, :-1] with labels[:, 1:]).
    labels: (R, T) long, IGNORE where no loss is taken.
    Returns (logp, mask): (R, T) log-probabilities (0 where masked; float32, or float64 for
    float64 inputs) and the (R, T) bool mask of scored positions.

    Only scored positions are projected, `chunk` of them at a time. With `weight`, each chunk's
    logits are recomputed in the backward pass (activation checkpointing) instead of being kept,
    so the logits live one chunk x V block at a time, forward and backward.
    """
    mask = labels != IGNORE
    selected = hidden_or_logits[mask]  # (N, H) or (N, V)
    targets = labels[mask]
    pieces = []
    for start in range(0, targets.numel(), chunk):
        h, y = selected[start : start + chunk], targets[start : start + chunk]
        if weight is not None and torch.is_grad_enabled():
            pieces.append(checkpoint(label_logprobs, h, y, weight, bias, use_reentrant=False))
        else:
            pieces.append(label_logprobs(h, y, weight, bias))
    scored = torch.cat(pieces) if pieces else hidden_or_logits.new_zeros(0, dtype=torch.float32)
    logp = scored.new_zeros(labels.shape).masked_scatter(mask, scored)
    return logp, mask


# Off only to measure the padded batch against it (benchmarks/train_bench.py).
GROUPED_ON_CPU = True


def decoder_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[Any, ...]:
    """(hidden, labels, head) of a collated batch under a causal LM (a transformers model; with
    LoRA its base model, whose layers carry the adapters): the decoder's final hidden states
    (R, T - 1, H) aligned with the labels (R, T - 1) they predict, and the LM head module.
    The model's own (R, T, V) logits are never built.

    On a CPU the rows run in groups of similar length (`unpadded_states`): a CPU computes every
    padding position at full price, and in the demo's CUT batches (a judged and a plain context
    per negative, right-padded to the longest) 31% of the positions are padding. A GPU keeps
    the one padded batch: one wide launch costs it about the same as a narrower one."""
    ids, attention = batch["input_ids"], batch["attention_mask"]
    decoder = model.get_decoder()
    if GROUPED_ON_CPU and ids.device.type == "cpu" and not bool(attention.all()):
        hidden = unpadded_states(decoder, ids, attention)
    else:
        hidden = decoder(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
    return hidden[:, :-1], batch["labels"][:, 1:], model.get_output_embeddings()


def unpadded_states(
    decoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The decoder's (R, T, H) hidden states of right-padded rows, run in groups of rows of
    similar length (`length_groups`), each group padded only to its own longest row (what
    stands at a padding position is no loss's business). Position t of a right-padded row is
    position t wherever it runs, so the states are the padded batch's, to rounding."""
    lengths = attention_mask.sum(dim=1).tolist()
    groups = length_groups(lengths)
    pieces = []
    for rows in groups:
        n = max(lengths[r] for r in rows)
        index = torch.tensor(rows, device=input_ids.device)
        states = decoder(
            input_ids=input_ids[index, :n], attention_mask=attention_mask[index, :n],
            use_cache=False,
        ).last_hidden_state  # fmt: skip
        pieces.append(F.pad(states, (0, 0, 0, input_ids.shape[1] - n)))
    order = torch.tensor([r for rows in groups for r in rows], device=input_ids.device)
    return torch.cat(pieces)[torch.argsort(order)]  # back to the batch's row order


def length_groups(lengths: list[int], group_cost: int = 96) -> list[list[int]]:
    """Row indices in groups of similar length, minimising the positions computed (each group
    padded to its longest row) plus `group_cost` positions per group: a small group runs
    narrower matmuls and more Python per token. 96 was the best of 0/48/96/192 in a sweep on
    round 2 of the README demo's CUT batches (192 and 48 within noise, 0 no faster than the
    padded batch). Exact, by dynamic programming over the
    rows sorted by length (a micro-batch has a few dozen rows at most)."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    best = [0] * (len(order) + 1)  # best[i]: cost of the i shortest rows
    cut = [0] * (len(order) + 1)  # cut[i]: where the last group of best[i] starts
    for end in range(1, len(order) + 1):
        best[end], cut[end] = min(
            (best[start] + (end - start) * lengths[order[end - 1]] + group_cost, start)
            for start in range(end)
        )
    groups, end = [], len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def batch_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logprobs` of a collated batch under a causal LM: (R, T - 1) log p of each next
    token and its mask (see `decoder_states`)."""
    hidden, labels, head = decoder_states(model, batch)
    return token_logprobs(hidden, labels, head.weight, head.bias, chunk)


def sequence_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p over each row's scored tokens, number of those tokens): two (R,) tensors,
    float32 and long. What sequence-level losses (RRHF, DPO) rank and compare."""
    logp, mask = batch_logprobs(model, batch, chunk)
    return logp.sum(dim=1), mask.sum(dim=1)
