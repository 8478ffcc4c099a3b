"""The RRHF loss against hand-worked numbers (ties, a single candidate, several groups), and
the RRHF objective's grouping, scores and refusal of unscored responses."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import load_template
from cut_loop.training.base import Triplet
from cut_loop.training.examples import IGNORE
from cut_loop.training.rrhf import RrhfObjective, rrhf_loss


def _loss(seq_logp, lengths, scores, groups, weight=1.0, penalty=1.0):
    return rrhf_loss(
        torch.tensor(seq_logp, dtype=torch.float64),
        torch.tensor(lengths),
        torch.tensor(scores, dtype=torch.float64),
        torch.tensor(groups),
        weight,
        penalty,
    )


def test_hand_worked_group_of_three():
    """One query, three responses: sums of log p (-6, -4, -3), lengths (3, 2, 1), scores
    (1, 2, 3); length_penalty 1, rrhf_weight 0.5.
      p = (-6/3, -4/2, -3/1) = (-2, -2, -3)
      pairs with r_i < r_j: (0,1): max(0, -2 - -2) = 0;  (0,2): max(0, -2 - -3) = 1;
                            (1,2): max(0, -2 - -3) = 1                        L_rank = 2
      best = response 2 (score 3): L_ft = -(-3)/1                            L_ft   = 3
      L = 0.5 * 2 + 3 = 4
    """
    loss, parts = _loss([-6, -4, -3], [3, 2, 1], [1, 2, 3], [0, 0, 0], weight=0.5)
    assert loss.item() == pytest.approx(4.0, abs=1e-12)
    assert parts == {"rank_loss": 2.0, "sft_loss": 3.0, "ranked_pairs": 3.0}


def test_ties_contribute_nothing_and_the_first_best_is_trained():
    """Scores (2, 2, 1), sums (-1, -6, -2), lengths (1, 2, 1), rrhf_weight 1:
    p = (-1, -3, -2)
    the tie (0, 1) gives no pair although p_0 != p_1;
    (2,0): max(0, -2 - -1) = 0;  (2,1): max(0, -2 - -3) = 1                 L_rank = 1
    best: responses 0 and 1 tie at 2, the first wins: L_ft = -(-1)/1        L_ft   = 1
    L = 1 + 1 = 2
    """
    loss, parts = _loss([-1, -6, -2], [1, 2, 1], [2, 2, 1], [0, 0, 0])
    assert loss.item() == pytest.approx(2.0, abs=1e-12)
    assert parts["rank_loss"] == 1.0 and parts["ranked_pairs"] == 2.0
    # All tied: no pairs at all, only the SFT term on the first response (-(-1)/1 = 1).
    loss, parts = _loss([-1, -6, -2], [1, 2, 1], [5, 5, 5], [0, 0, 0])
    assert loss.item() == pytest.approx(1.0) and parts["ranked_pairs"] == 0.0


def test_single_candidate_is_sft_on_it():
    """One response, sum -9 over 4 tokens: no pairs, L = L_ft = 9/4 = 2.25 whatever the
    weight; its gradient is the SFT gradient -1/4 on the summed log p."""
    seq_logp = torch.tensor([-9.0], dtype=torch.float64, requires_grad=True)
    loss, parts = rrhf_loss(
        seq_logp, torch.tensor([4]), torch.tensor([3.0]), torch.tensor([0]), 100.0, 1.0
    )
    assert loss.item() == pytest.approx(2.25)
    assert parts == {"rank_loss": 0.0, "sft_loss": 2.25, "ranked_pairs": 0.0}
    (grad,) = torch.autograd.grad(loss, seq_logp)
    assert grad.tolist() == [-0.25]


def test_length_penalty_divides_by_a_power_of_the_length():
    """Sums (-4, -9), lengths (2, 3), scores (1, 2), rrhf_weight 1.
    penalty 0: p = (-4, -9): max(0, -4 - -9) = 5;   L_ft = 9/3 = 3;  L = 8
    penalty 2: p = (-1, -1): max(0, -1 - -1) = 0;   L = 3  (L_ft is never length-penalised)
    """
    assert _loss([-4, -9], [2, 3], [1, 2], [0, 0], penalty=0.0)[0].item() == pytest.approx(8.0)
    assert _loss([-4, -9], [2, 3], [1, 2], [0, 0], penalty=2.0)[0].item() == pytest.approx(3.0)


def test_groups_are_ranked_apart_and_averaged():
    """Group 0: the hand-worked trio above (L_0 = 2 + 3 = 5 with weight 1); group 1: one
    response, sum -2 over 2 tokens (L_1 = 1). A response of group 1 scored above everything
    in group 0 makes no pair across groups. L = (5 + 1) / 2 = 3."""
    loss, parts = _loss([-6, -4, -3, -2], [3, 2, 1, 2], [1, 2, 3, 9], [0, 0, 0, 1])
    assert loss.item() == pytest.approx(3.0)
    assert parts == {"rank_loss": 1.0, "sft_loss": 2.0, "ranked_pairs": 1.5}


def test_gradient_only_through_violated_pairs_and_the_best():
    """Sums (-6, -4, -3), lengths (3, 2, 1), scores (1, 2, 3), weight 1: violated pairs
    (0,2) and (1,2) push p_0, p_1 down and p_2 up; L_ft pulls the best up. So
    dL/ds = (1/3, 1/2, -(1 + 1) - 1) = (1/3, 1/2, -3)."""
    seq_logp = torch.tensor([-6.0, -4.0, -3.0], dtype=torch.float64, requires_grad=True)
    loss, _ = rrhf_loss(
        seq_logp, torch.tensor([3, 2, 1]), torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3).long(),
        1.0, 1.0,
    )  # fmt: skip
    (grad,) = torch.autograd.grad(loss, seq_logp)
    torch.testing.assert_close(grad, torch.tensor([1 / 3, 1 / 2, -3.0], dtype=torch.float64))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _triplet(i: int, prompt: str, score: float | None) -> Triplet:
    return Triplet(
        str(i), f"Name three colors {prompt}.", "", f"Red {i}.", None, score, prompt_id=prompt
    )


def test_objective_groups_by_prompt_and_keeps_scores(tokenizer, tmp_path):
    objective = RrhfObjective(load_template("alpaca"), 64, 1.0, 1.0)
    triplets = [_triplet(0, "a", 1.0), _triplet(1, "b", 5.0), _triplet(2, "a", 3.0)]
    examples = objective.build(triplets, tokenizer, tmp_path, tmp_path)
    assert [(e.id, e.scores) for e in examples] == [("a", [1.0, 3.0]), ("b", [5.0])]
    assert objective.counts(examples) == {"groups": 2, "responses": 3, "ranked_pairs": 1}
    batch = objective.collate(examples, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 3
    assert batch["groups"].tolist() == [0, 0, 1]
    assert batch["scores"].tolist() == [1.0, 3.0, 5.0]
    response = tokenizer("Red 2.", add_special_tokens=False)["input_ids"]
    scored = batch["labels"][1][batch["labels"][1] != IGNORE].tolist()
    assert scored == [*response, tokenizer.eos_token_id]


def test_objective_refuses_responses_without_a_score(tokenizer, tmp_path):
    objective = RrhfObjective(load_template("alpaca"), 64, 1.0, 1.0)
    triplets = [_triplet(0, "a", 1.0), _triplet(1, "a", None)]
    with pytest.raises(CutLoopError, match="loss rrhf needs a judge that returns scores") as e:
        objective.build(triplets, tokenizer, tmp_path, tmp_path)
    assert "\n" not in str(e.value) and "'1'" in str(e.value)
