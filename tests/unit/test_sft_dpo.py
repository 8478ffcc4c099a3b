"""SFT (likelihood of acceptable responses) and DPO (pairs from judgments, a frozen reference):
hand-worked numbers, pair building, and both objectives on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import load_template
from cut_loop.training.base import Triplet
from cut_loop.training.dpo import DpoObjective, dpo_loss, preference_pairs
from cut_loop.training.sft import SftObjective

ALPACA = load_template("alpaca")


def _t(i, prompt="p", judgment=None, score=None, response=None) -> Triplet:
    return Triplet(
        str(i), f"Write a short poem about the sea {prompt}.", "",
        response or f"The sea is blue {i}.", judgment, score, prompt_id=prompt,
    )  # fmt: skip


def test_dpo_loss_hand_worked():
    """beta = 0.5, two pairs (policy and reference summed log p of chosen c, rejected r):
    pair 1: pi_c = -10, pi_r = -12, ref_c = -11, ref_r = -11
            rewards 0.5 * (1) = 0.5 and 0.5 * (-1) = -0.5; margin 1
            -log sigmoid(1)    = log(1 + e^-1)  = 0.3132617
    pair 2: pi_c = -5, pi_r = -4, ref_c = -5, ref_r = -5
            rewards 0 and 0.5; margin -0.5
            -log sigmoid(-0.5) = log(1 + e^0.5) = 0.9740770
    L = (0.3132617 + 0.9740770) / 2 = 0.6436693
    chosen_reward mean 0.25, rejected_reward mean 0, reward_margin mean 0.25,
    reward_accuracy 1/2.
    """

    def t(*v):
        return torch.tensor(v, dtype=torch.float64)

    loss, parts = dpo_loss(t(-10, -5), t(-12, -4), t(-11, -5), t(-11, -5), beta=0.5)
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(0.6436693, abs=1e-7)
    assert parts == pytest.approx(
        {"chosen_reward": 0.25, "rejected_reward": 0.0, "reward_margin": 0.25,
         "reward_accuracy": 0.5}
    )  # fmt: skip


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    """dL/dpi_c = -beta * sigmoid(-beta * margin) (one pair, margin 0 at the start: -beta/2)."""
    chosen = torch.tensor([-3.0], requires_grad=True)
    rejected = torch.tensor([-3.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    gc, gr = torch.autograd.grad(loss, [chosen, rejected])
    assert gc.item() == pytest.approx(-0.05) and gr.item() == pytest.approx(0.05)


def test_pairs_from_verdicts_within_each_group():
    triplets = [
        _t(0, "a"), _t(1, "a", "Wrong."), _t(2, "a"), _t(3, "a", "Too long."),
        _t(4, "b"), _t(5, "c", "Wrong."), _t(6, "c", "Also wrong."),
    ]  # fmt: skip
    pairs = [(c.id, r.id) for c, r in preference_pairs(triplets)]
    assert pairs == [("0", "1"), ("0", "3"), ("2", "1"), ("2", "3")]  # b: alone; c: no contrast


def test_pairs_by_score_skip_ties_and_need_every_score():
    scored = [_t(0, "a", score=3.0), _t(1, "a", score=8.0), _t(2, "a", score=3.0)]
    assert [(c.id, r.id) for c, r in preference_pairs(scored)] == [("1", "0"), ("1", "2")]
    # One response without a score: the group falls back to the verdicts.
    mixed = [_t(0, "a", score=9.0), _t(1, "a", "Wrong.", score=None)]
    assert [(c.id, r.id) for c, r in preference_pairs(mixed)] == [("0", "1")]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _dpo(**kw) -> DpoObjective:
    return DpoObjective(ALPACA, 64, 0.1, device=torch.device("cpu"), bf16=False, batch_size=2, **kw)


def test_dpo_refuses_one_response_per_instruction(tiny_model_dir, tokenizer, tmp_path):
    singles = [_t(0, "a"), _t(1, "b", "Wrong.")]
    with pytest.raises(CutLoopError, match=r"samples_per_instruction >= 2") as e:
        _dpo().build(singles, tokenizer, tiny_model_dir, tmp_path)
    assert "\n" not in str(e.value)
    # Several per instruction but nothing to prefer: nothing to train (no model is loaded).
    alike = [_t(0, "a"), _t(1, "a")]
    assert _dpo().build(alike, tokenizer, tiny_model_dir, tmp_path) == []


def test_dpo_reference_is_the_starting_policy_and_is_computed_once(
    tiny_model_dir, tokenizer, tmp_path
):
    """At step 0 the policy is the reference: every implicit reward is 0 and L = ln 2."""
    triplets = [_t(0, "a"), _t(1, "a", "Wrong.", response="Sea sea sea."), _t(2, "a", "No.")]
    pairs = _dpo().build(triplets, tokenizer, tiny_model_dir, tmp_path)
    assert [p.id for p in pairs] == ["0>1", "0>2"]
    assert all(p.ref_chosen < 0 and p.ref_rejected < 0 for p in pairs)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loss, parts = _dpo().loss(model, _dpo().collate(pairs, tokenizer.pad_token_id))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert abs(parts["reward_margin"]) < 1e-5

    # A second build reads the stored reference back instead of loading the model again.
    cache = tmp_path / "reference_logps.json"
    stored = json.loads(cache.read_text())
    stored["logps"] = [[-1.0, -2.0], [-3.0, -4.0]]
    cache.write_text(json.dumps(stored))
    again = _dpo().build(triplets, tokenizer, tiny_model_dir, tmp_path)
    assert [(p.ref_chosen, p.ref_rejected) for p in again] == [(-1.0, -2.0), (-3.0, -4.0)]


def test_sft_trains_on_acceptable_responses_only(tiny_model_dir, tokenizer, tmp_path):
    """The SFT loss is the mean next-token NLL over the acceptable responses' tokens: the
    same number transformers' own loss gives for the batch."""
    triplets = [_t(0), _t(1, judgment="Wrong."), _t(2, prompt="q")]
    objective = SftObjective(ALPACA, 64)
    examples = objective.build(triplets, tokenizer, tiny_model_dir, tmp_path)
    assert [e.id for e in examples] == ["0", "2"] and not any(e.negative for e in examples)
    assert objective.counts(examples) == {"positives": 2}

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = objective.collate(examples, tokenizer.pad_token_id)
    loss, parts = objective.loss(model, batch)
    expected = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        labels=batch["labels"],
    ).loss  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts == {}
    loss.backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
