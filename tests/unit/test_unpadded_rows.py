"""Rows of similar length run apart on a CPU (`logprobs.unpadded_states`): the same hidden
states, losses and gradients as the one padded batch, fewer positions computed."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from cut_loop.training.examples import CutExample, collate
from cut_loop.training.fused_cut import fused_cut_loss
from cut_loop.training.logprobs import decoder_states, length_groups, unpadded_states


@pytest.mark.parametrize("seed", range(5))
def test_groups_cover_every_row_once_sorted_by_length(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 400) for _ in range(rng.randint(1, 24))]
    groups = length_groups(lengths)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    flat = [lengths[r] for g in groups for r in g]
    assert flat == sorted(flat)


def test_group_cost_trades_padding_for_fewer_groups():
    lengths = [10, 10, 11, 200, 201, 400]
    assert length_groups(lengths, group_cost=10**6) == [[0, 1, 2, 3, 4, 5]]  # one padded batch
    assert len(length_groups(lengths, group_cost=0)) == 5  # only equal lengths share a group
    # The default splits short from long: far fewer positions than padding all to 400.
    groups = length_groups(lengths)
    computed = sum(len(g) * max(lengths[r] for r in g) for g in groups)
    assert computed < 0.5 * len(lengths) * max(lengths)


def _batch(tokens: int, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(3, tokens, (n,), generator=g)
        mask[r, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_unpadded_states_equal_the_padded_batch(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()
    lengths = [5, 300, 7, 290, 6, 310]
    assert len(length_groups(lengths)) == 2  # the short rows and the long ones
    batch = _batch(model.config.vocab_size, lengths)
    decoder = model.get_decoder()
    padded = decoder(**batch, use_cache=False).last_hidden_state
    grouped = unpadded_states(decoder, batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(grouped[real], padded[real], rtol=1e-9, atol=1e-9)


def test_cut_loss_and_gradients_equal_the_padded_batch(tiny_model_dir):
    """The CUT loss through `decoder_states` on a CPU (grouped rows) against the padded
    batch's, in value and in every parameter's gradient."""
    rng = random.Random(0)
    examples = []
    for i in range(6):
        prompt = [rng.randint(3, 300) for _ in range(rng.randint(2, 30))]
        response = [rng.randint(3, 300) for _ in range(rng.randint(1, 20))]
        ids, labels = prompt + response, [-100] * len(prompt) + response
        if i % 2:
            plain = prompt[-2:] + response
            examples.append(
                CutExample(str(i), ids, labels, plain, [-100, -100, *response], judged=True)
            )
        else:
            examples.append(CutExample(str(i), ids, labels))
    batch = collate(examples, pad_id=0)

    def loss_and_grads(padded: bool) -> tuple[float, list[torch.Tensor]]:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
        if padded:  # the GPU path: one batch, padding computed
            hidden = model.get_decoder()(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                use_cache=False,
            ).last_hidden_state[:, :-1]  # fmt: skip
            labels, head = batch["labels"][:, 1:], model.get_output_embeddings()
        else:
            hidden, labels, head = decoder_states(model, batch)
        loss, _ = fused_cut_loss(hidden, labels, head.weight, None, batch["neg_rows"], 1.2, 1.0)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    want, want_grads = loss_and_grads(padded=True)
    got, got_grads = loss_and_grads(padded=False)
    assert got == pytest.approx(want, rel=1e-10)
    assert len(got_grads) == len(want_grads) > 0
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
