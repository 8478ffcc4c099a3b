"""The CUT loss (Contrastive Unlikelihood Training), and the objective that trains with it.

Xu et al., "Reasons to Reject? Aligning Language Models with Judgments", arXiv 2312.14591;
ALGORITHMS.md section 2. The reference materialises float32 probabilities for every vocabulary
entry of 2B sequences; only the label tokens' probabilities are needed (`logprobs.py`), and in
training the LM head, the loss and its gradient are computed in one chunked pass
(`fused_cut.py`), which reports exactly the numbers `cut_loss` gives; `cut.py` trains with it.
"""

from __future__ import annotations

import torch


def misalign_terms(
    plain: torch.Tensor,
    judged: torch.Tensor,
    threshold: float,
    weight_unlike: float,
    weight_like: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token Misalign loss l_t and the flags r_t > threshold, for (n,) log-probabilities
    of the same response tokens under the plain and the judged context (see `cut_loss`)."""
    # r_t only picks the branch (a comparison carries no gradient; detach makes that explicit).
    flagged = torch.exp(judged - plain).detach() > threshold
    # -expm1(log p) is 1 - p without the cancellation of 1 - exp(log p) when p is close to 1;
    # the clamp only catches a log p rounded a hair above 0, i.e. p = 1.
    one_minus_p = (-torch.expm1(plain)).clamp(min=0)
    one_minus_p = torch.where(one_minus_p == 0, one_minus_p + 1e-5, one_minus_p)
    unlike = -weight_unlike * torch.log(one_minus_p)
    return torch.where(flagged, unlike, -weight_like * plain), flagged


def cut_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    neg_rows: torch.Tensor,
    threshold: float,
    weight_unlike: float,
    weight_like: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """The CUT loss of one batch laid out as `examples.collate` makes it.

    logp, mask: (R, T) from `token_logprobs`; rows [0, B) are first contexts (judged for the
      N negatives, plain for positives), rows [B, R) (R = B + N) the negatives' plain contexts.
    neg_rows: (N,) long, the first-context row paired with Misalign row B + k. Each pair scores
      the same response tokens, so their masked positions align in order.

    With F the scored tokens of rows [0, B) and U those of rows [B, R):
      L_align    = (1/|F|) sum_F -log p(y_t | ctx)                       (Align-P and Align-N)
      r_t        = p(y_t | judged) / p(y_t | plain)                      (no gradient)
      l_t        = -w log(1 - p(y_t | plain))  if r_t > threshold         (unlikelihood)
                   -v log p(y_t | plain)       otherwise  (v = weight_like: 1 in the paper)
      L_misalign = (1/|U|) sum_U l_t
      L          = (L_align + L_misalign) / 2  if N > 0, else L_align
    A 1 - p of exactly 0 is nudged to 1e-5 before the log, as in the reference.

    Returns (loss, components): align_loss, misalign_loss and flagged_token_fraction (the share
    of U with r_t > threshold) as floats; the last two are None without negatives.
    """
    n_neg = neg_rows.numel()
    first = slice(0, logp.shape[0] - n_neg)
    align = mean(-logp[first][mask[first]])
    components: dict[str, float | None] = {
        "align_loss": align.item(),
        "misalign_loss": None,
        "flagged_token_fraction": None,
    }
    if n_neg == 0:
        return align, components

    plain = logp[first.stop :][mask[first.stop :]]
    judged = logp[neg_rows][mask[neg_rows]]
    if plain.shape != judged.shape:
        raise ValueError("a Misalign row and its judged row score different numbers of tokens")
    per_token, flagged = misalign_terms(plain, judged, threshold, weight_unlike, weight_like)
    misalign = mean(per_token)
    components["misalign_loss"] = misalign.item()
    components["flagged_token_fraction"] = mean(flagged.float()).item()
    return (align + misalign) / 2, components


def mean(x: torch.Tensor) -> torch.Tensor:
    # A batch whose responses are all empty (cut off before their first token) has nothing to
    # score: a loss of 0 without gradient, not a NaN that would poison the weights.
    return x.sum() / max(x.numel(), 1)
