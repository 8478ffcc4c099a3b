"""The LM head and the CUT loss in one chunked pass, the gradient computed on the way.

Why: `token_logprobs` keeps memory low by recomputing each chunk's logits in the backward pass,
which costs a fourth vocabulary-sized matmul on top of the three any softmax loss needs (the
forward one and the two of the backward). But the CUT loss is a sum of per-token terms whose
derivatives are known as soon as a token's log p and its judged partner's log p are:
  dL/dlog p_t = -c / |F|                          on the first contexts (c = 1/2 with
                                                  negatives, else 1), and
  dL/dlog p_t = (d l_t / d log p_t) / (2 |U|)     on the Misalign tokens,
and every Misalign token's judged partner comes earlier in the collated layout (first contexts
first). So each chunk's logits turn into the gradients of the hidden states and of the head
right away (dL/dlogits = g_t (onehot(y_t) - softmax_t)), as Liger-Kernel's fused linear
cross-entropy does for plain cross-entropy: three matmuls in all, one chunk x V block alive at
a time, and the backward pass only scales the stored gradients. The price: the head's (V, H)
gradient is held from the forward pass to the backward one (none when the head is frozen, as
with LoRA), where autograd would allocate it in the backward pass anyway.

The value and the components come from `cut_loss` on the very log-probabilities
`token_logprobs` computes (same chunks, same arithmetic), so they are identical to the
unfused path; the gradients agree to rounding (tests/unit/test_cut_loss.py).
"""

from __future__ import annotations

import torch

from cut_loop.training.cut_loss import cut_loss, misalign_terms
from cut_loop.training.examples import IGNORE
from cut_loop.training.logprobs import project, upcast


def fused_cut_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    neg_rows: torch.Tensor,
    threshold: float,
    weight_unlike: float,
    chunk: int = 512,
    *,
    weight_like: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """`cut_loss` of a collated batch straight from the decoder's hidden states.

    hidden: (R, T, H) final hidden states, position t predicting labels[:, t] (the caller
      shifts); labels: (R, T) long with IGNORE; weight (V, H) and optional bias (V,): the LM
      head; neg_rows: as in `cut_loss`. Returns (loss, components) exactly as `cut_loss` on
      `token_logprobs(hidden, labels, weight, bias, chunk)` does, with the same gradients.
    """
    mask = labels != IGNORE
    components: dict[str, float | None] = {}
    loss = _FusedCut.apply(
        hidden[mask], weight, bias, labels, mask, neg_rows, threshold, weight_unlike, weight_like,
        chunk, components,
    )  # fmt: skip
    return loss, components


class _FusedCut(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, selected, weight, bias, labels, mask, neg_rows, threshold, weight_unlike,
        weight_like, chunk, out,
    ):  # fmt: skip
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        targets = labels[mask]
        n, n_neg = targets.numel(), neg_rows.numel()
        n_first = int(mask[: mask.shape[0] - n_neg].sum())
        # Index (in `selected`) of the judged token each Misalign token is compared with.
        position = torch.full(labels.shape, -1, dtype=torch.long, device=labels.device)
        position[mask] = torch.arange(n, device=labels.device)
        partner = position[neg_rows][mask[neg_rows]]
        if partner.numel() != n - n_first:
            raise ValueError("a Misalign row and its judged row score different numbers of tokens")
        align_grad = -(0.5 if n_neg else 1.0) / max(n_first, 1)
        misalign_scale = 0.5 / max(n - n_first, 1)

        dtype = torch.promote_types(selected.dtype, torch.float32)
        logp = selected.new_empty(n, dtype=dtype)
        grad_h = selected.new_zeros(selected.shape, dtype=dtype) if need_h else None
        grad_w = torch.zeros_like(upcast(weight)) if need_w else None
        grad_b = torch.zeros_like(upcast(bias)) if need_b else None
        with torch.autocast(selected.device.type, enabled=False):
            for start in range(0, n, chunk):
                h, y = selected[start : start + chunk], targets[start : start + chunk]
                logits = project(h, weight, bias)  # (c, V), as `label_logprobs` computes it
                lse = torch.logsumexp(logits, dim=-1)
                lp = logits.gather(-1, y[:, None]).squeeze(-1) - lse
                logp[start : start + len(y)] = lp
                if not (need_h or need_w or need_b):
                    continue
                g = lp.new_full(lp.shape, align_grad)  # dL/dlog p_t
                k = torch.arange(start, start + len(y), device=lp.device) - n_first
                mis = k >= 0
                if mis.any():
                    plain = lp[mis].detach().requires_grad_()
                    with torch.enable_grad():  # the derivative of l_t, by the formula itself
                        terms, _ = misalign_terms(
                            plain, logp[partner[k[mis]]], threshold, weight_unlike, weight_like
                        )
                        (d,) = torch.autograd.grad(terms.sum(), plain)
                    g[mis] = d * misalign_scale
                # dL/dlogits = g (onehot(y) - softmax), built in place of the logits.
                grad_logits = logits.sub_(lse[:, None]).exp_().mul_(-g[:, None])
                grad_logits[torch.arange(len(y), device=y.device), y] += g
                if need_h:
                    grad_h[start : start + len(y)] = grad_logits @ upcast(weight)
                if need_w:
                    grad_w.addmm_(grad_logits.T, upcast(h))
                if need_b:
                    grad_b += grad_logits.sum(0)
        full = logp.new_zeros(labels.shape).masked_scatter(mask, logp)
        loss, components = cut_loss(full, mask, neg_rows, threshold, weight_unlike, weight_like)
        out.update(components)
        ctx.dtypes = (selected.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        grads = [
            None if g is None else (g * grad_loss).to(dtype)
            for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)
        ]
        return (*grads, None, None, None, None, None, None, None, None)
