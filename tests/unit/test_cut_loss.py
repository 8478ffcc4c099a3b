"""The CUT loss against hand-worked numbers, against the reference's full-softmax formulation,
for where its gradients go, and the fused head against the plain chunked path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cut_loop.training.cut_loss import cut_loss
from cut_loop.training.examples import IGNORE, CutExample, collate
from cut_loop.training.fused_cut import fused_cut_loss
from cut_loop.training.logprobs import token_logprobs

LN2 = math.log(2.0)


def _loss_from_logits(logits, labels, neg_rows, threshold=1.1, weight=1.0):
    """Logits/labels in model layout (position t predicts labels[t + 1]), as the trainer does."""
    logp, mask = token_logprobs(logits[:, :-1], labels[:, 1:])
    return cut_loss(logp, mask, neg_rows, threshold, weight)


def test_hand_worked_example():
    """V = 3, T = 2 scored positions per row; rows: 0 = positive (plain), 1 = the negative in
    its judged context, 2 = the same negative in the plain context. Labels are already aligned
    with the positions here (no shift), threshold 1.1, weight_unlike w = 0.5.

    logits [ln2, 0, 0] give softmax [1/2, 1/4, 1/4]; [0, ln2, 0] give [1/4, 1/2, 1/4].
      row 0: position 0 is prompt (masked); position 1, label 0, logits [ln2,0,0]: p = 1/2
      row 1: label 1 with [0,ln2,0]: p_j = 1/2;   label 2 with [0,ln2,0]: p_j = 1/4
      row 2: label 1 with [ln2,0,0]: p_p = 1/4;   label 2 with [ln2,0,0]: p_p = 1/4
    Align (rows 0-1, 3 tokens):  (ln2 + ln2 + ln4) / 3 = 4 ln2 / 3            = 0.924196
    Ratios: r_0 = (1/2)/(1/4) = 2 > 1.1 (flagged), r_1 = (1/4)/(1/4) = 1 (not flagged)
    Misalign: (-0.5 ln(1 - 1/4) + -ln(1/4)) / 2 = (0.5 ln(4/3) + ln4) / 2     = 0.765068
    CUT = (0.924196 + 0.765068) / 2                                            = 0.844632
    Flagged fraction: 1 of 2 tokens = 0.5.
    """
    a = [LN2, 0.0, 0.0]
    b = [0.0, LN2, 0.0]
    logits = torch.tensor([[b, a], [b, b], [a, a]], dtype=torch.float64)
    labels = torch.tensor([[IGNORE, 0], [1, 2], [1, 2]])
    logp, mask = token_logprobs(logits, labels)
    loss, parts = cut_loss(logp, mask, torch.tensor([1]), threshold=1.1, weight_unlike=0.5)

    align = 4 * LN2 / 3
    misalign = (0.5 * math.log(4 / 3) + math.log(4)) / 2
    assert parts["align_loss"] == pytest.approx(align, rel=1e-12)
    assert parts["misalign_loss"] == pytest.approx(misalign, rel=1e-12)
    assert parts["flagged_token_fraction"] == 0.5
    assert loss.item() == pytest.approx((align + misalign) / 2, rel=1e-12)
    assert loss.item() == pytest.approx(0.844632, abs=1e-6)


def test_without_negatives_the_loss_is_the_likelihood():
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 1], [IGNORE, 2, 2, IGNORE, IGNORE]])
    loss, parts = _loss_from_logits(logits, labels, torch.tensor([], dtype=torch.long))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert parts["misalign_loss"] is None and parts["flagged_token_fraction"] is None


def test_one_minus_p_of_zero_is_nudged():
    # p_plain = 1 exactly (log p = 0); with a threshold below 1 the token is flagged and its
    # unlikelihood term is -w log(0 + 1e-5) instead of infinity.
    logp = torch.tensor([[0.0], [0.0]], requires_grad=True)
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss, parts = cut_loss(logp, mask, torch.tensor([0]), threshold=0.5, weight_unlike=2.0)
    assert parts["misalign_loss"] == pytest.approx(-2.0 * math.log(1e-5), rel=1e-6)
    assert parts["flagged_token_fraction"] == 1.0
    assert math.isfinite(loss.item())


def reference_cut(logits, labels, labels_neg, is_negative, threshold, weight):
    """The reference's formulation (wwxu21/CUT, modeling_llama_unlikelihood.py), restated:
    2B rows (first contexts, then every example's plain context, empty for positives), a full
    softmax, NLL over the first half, and the unlikelihood term over the negatives' tokens."""
    probs = torch.softmax(logits, dim=2)
    b = labels.shape[0]
    shift_probs = probs[:, :-1]
    shift_labels, shift_labels_neg = labels[:, 1:], labels_neg[:, 1:]
    vocab = probs.shape[-1]
    loss = F.nll_loss(torch.log(shift_probs[:b]).reshape(-1, vocab), shift_labels.reshape(-1))
    if not is_negative.any():
        return loss, None
    rows, cols = torch.meshgrid(torch.arange(b), torch.arange(shift_labels.shape[1]), indexing="ij")
    p_first = shift_probs[:b][rows, cols, shift_labels.clamp(0, vocab - 1)][is_negative]
    p_plain = shift_probs[b:][rows, cols, shift_labels_neg.clamp(0, vocab - 1)][is_negative]
    p_first = p_first[shift_labels[is_negative] != IGNORE]
    p_plain = p_plain[shift_labels_neg[is_negative] != IGNORE].clone()
    flagged = (p_first / p_plain).detach() > threshold
    p_plain[flagged] = 1 - p_plain[flagged]
    p_plain[p_plain == 0] += 1e-5
    lp = torch.log(p_plain)
    lp[flagged] = weight * lp[flagged]
    return (loss - lp.sum() / lp.numel()) / 2, flagged.float().mean().item()


def _random_batch(gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Four examples (two negatives), prompts of different lengths, same-length response pairs."""

    def ids(n: int) -> list[int]:
        return torch.randint(0, 13, (n,), generator=gen).tolist()

    examples = []
    for i, negative in enumerate([True, False, True, False]):
        prompt, response = ids(3 + i), ids(4 + 2 * i)
        judged = ids(6 + i)
        if negative:
            examples.append(
                CutExample(
                    str(i),
                    judged + response,
                    [IGNORE] * len(judged) + response,
                    prompt + response,
                    [IGNORE] * len(prompt) + response,
                )
            )
        else:
            examples.append(
                CutExample(str(i), prompt + response, [IGNORE] * len(prompt) + response)
            )
    return collate(examples, pad_id=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_reference_full_softmax(dtype):
    gen = torch.Generator().manual_seed(0)
    batch = _random_batch(gen)
    labels, neg_rows = batch["labels"], batch["neg_rows"]
    b = labels.shape[0] - neg_rows.numel()
    logits = 3 * torch.randn(*labels.shape, 13, generator=gen, dtype=dtype)

    # The reference layout: the second half holds row i's plain context at row b + i.
    ref_logits = torch.cat([logits[:b], torch.randn(b, *logits.shape[1:], dtype=dtype)])
    labels_neg = torch.full_like(labels[:b], IGNORE)
    ref_logits[b + neg_rows] = logits[b:]
    labels_neg[neg_rows] = labels[b:]
    is_negative = torch.zeros(b, dtype=torch.bool)
    is_negative[neg_rows] = True

    for threshold in (1.1, 0.8, 2.0):
        ours, parts = _loss_from_logits(logits, labels, neg_rows, threshold, weight=0.7)
        ref, ref_flagged = reference_cut(
            ref_logits, labels[:b], labels_neg, is_negative, threshold, weight=0.7
        )
        assert abs(ours.item() - ref.item()) <= 1e-5 * abs(ref.item())
        assert parts["flagged_token_fraction"] == pytest.approx(ref_flagged)
    assert 0 < parts["flagged_token_fraction"] < 1  # both branches were exercised


def test_chunked_projection_matches_full_logits_in_value_and_gradient():
    gen = torch.Generator().manual_seed(1)
    batch = _random_batch(gen)
    labels, neg_rows = batch["labels"][:, 1:], batch["neg_rows"]
    hidden = torch.randn(*labels.shape, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, generator=gen, dtype=torch.float64, requires_grad=True)

    results = []
    for chunked in (True, False):
        if chunked:  # 3 positions per chunk: several chunks, one of them short
            logp, mask = token_logprobs(hidden, labels, weight, chunk=3)
        else:
            logp, mask = token_logprobs(hidden @ weight.T, labels)
        loss, _ = cut_loss(logp, mask, neg_rows, threshold=1.1, weight_unlike=1.0)
        results.append((loss, *torch.autograd.grad(loss, [hidden, weight])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradients_skip_the_ratio_and_the_prompt():
    """The judged rows of the Misalign pairs get gradient only from the Align-N likelihood (the
    ratio r_t is detached); the plain rows only from the Misalign term; prompt and padding
    positions get none."""
    gen = torch.Generator().manual_seed(2)
    batch = _random_batch(gen)
    labels, neg_rows = batch["labels"], batch["neg_rows"]
    b = labels.shape[0] - neg_rows.numel()
    logits = (
        3 * torch.randn(*labels.shape, 13, generator=gen, dtype=torch.float64)
    ).requires_grad_()

    loss, parts = _loss_from_logits(logits, labels, neg_rows)
    (grad,) = torch.autograd.grad(loss, logits)

    logp, mask = token_logprobs(logits[:, :-1], labels[:, 1:])
    half_align = -logp[:b][mask[:b]].mean() / 2
    (grad_align,) = torch.autograd.grad(half_align, logits)
    torch.testing.assert_close(grad[:b], grad_align[:b], rtol=1e-12, atol=1e-14)
    assert grad_align[b:].abs().sum() == 0

    # Positions whose next token carries no label (prompt, padding, the last one) get nothing.
    unscored = torch.cat([~mask, torch.ones(mask.shape[0], 1, dtype=torch.bool)], dim=1)
    assert grad[unscored].abs().sum() == 0
    assert grad[b:][~unscored[b:]].abs().sum() > 0
    assert 0 < parts["flagged_token_fraction"] < 1


@pytest.mark.parametrize("threshold", [1.1, 0.8, 2.0])
def test_fused_head_gives_the_same_loss_and_gradients(threshold):
    """`fused_cut_loss` (gradients computed inside the chunked forward) against `cut_loss` on
    `token_logprobs` (autograd through checkpointed chunks): identical values and components,
    gradients of the hidden states, the head weight and its bias equal to rounding."""
    gen = torch.Generator().manual_seed(1)
    batch = _random_batch(gen)
    labels, neg_rows = batch["labels"][:, 1:], batch["neg_rows"]
    hidden = torch.randn(*labels.shape, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, generator=gen, dtype=torch.float64, requires_grad=True)

    results = []
    for fused in (True, False):
        if fused:
            loss, parts = fused_cut_loss(hidden, labels, weight, bias, neg_rows, threshold, 0.7, 3)
        else:
            logp, mask = token_logprobs(hidden, labels, weight, bias, chunk=3)
            loss, parts = cut_loss(logp, mask, neg_rows, threshold, weight_unlike=0.7)
        results.append((loss.item(), parts, torch.autograd.grad(loss, [hidden, weight, bias])))
    (loss_f, parts_f, grads_f), (loss_u, parts_u, grads_u) = results
    assert loss_f == loss_u and parts_f == parts_u
    for a, b in zip(grads_f, grads_u, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_head_with_a_frozen_head_and_without_negatives():
    """LoRA freezes the (tied) head: only the hidden states get a gradient. Without negatives
    the loss is the mean NLL, i.e. cross-entropy over the scored tokens."""
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([[IGNORE, 3, 4, 1], [IGNORE, IGNORE, 2, IGNORE]])
    hidden = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, generator=gen, dtype=torch.float64)
    no_neg = torch.tensor([], dtype=torch.long)
    loss, parts = fused_cut_loss(hidden, labels, weight, None, no_neg, 1.1, 1.0, chunk=2)
    logits = hidden @ weight.T
    expected = F.cross_entropy(logits.reshape(-1, 13), labels.reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert parts["misalign_loss"] is None
    (grad,) = torch.autograd.grad(loss, hidden)
    (expected_grad,) = torch.autograd.grad(expected, hidden)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_weight_like_scales_only_the_unflagged_misalign_tokens():
    """The hand-worked batch above with loss.weight_like v: the flagged token keeps its
    unlikelihood, the unflagged one's -ln(1/4) is scaled by v.
    v = 0: Misalign = (0.5 ln(4/3) + 0) / 2 = 0.071921; CUT = (0.924196 + 0.071921) / 2
    = 0.498059. v = 1 is the paper's loss (0.844632)."""
    a, b = [LN2, 0.0, 0.0], [0.0, LN2, 0.0]
    logits = torch.tensor([[b, a], [b, b], [a, a]], dtype=torch.float64)
    labels = torch.tensor([[IGNORE, 0], [1, 2], [1, 2]])
    logp, mask = token_logprobs(logits, labels)
    for v, expected in ((0.0, 0.498059), (1.0, 0.844632)):
        loss, parts = cut_loss(logp, mask, torch.tensor([1]), 1.1, 0.5, weight_like=v)
        assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert parts["flagged_token_fraction"] == 0.5


def test_fused_head_agrees_with_autograd_when_unflagged_tokens_carry_no_loss():
    gen = torch.Generator().manual_seed(2)
    batch = _random_batch(gen)
    labels, neg_rows = batch["labels"][:, 1:], batch["neg_rows"]
    hidden = torch.randn(*labels.shape, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    fused, _ = fused_cut_loss(hidden, labels, weight, None, neg_rows, 1.0, 1.0, 3, weight_like=0.0)
    logp, mask = token_logprobs(hidden, labels, weight, None, chunk=3)
    plain, _ = cut_loss(logp, mask, neg_rows, 1.0, 1.0, weight_like=0.0)
    assert fused.item() == plain.item()
    for a, b in zip(
        torch.autograd.grad(fused, [hidden, weight]),
        torch.autograd.grad(plain, [hidden, weight]),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
