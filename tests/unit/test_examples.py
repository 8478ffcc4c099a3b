"""Building tokenized CUT examples: masking, EOS, truncation, down-sampling, pairing, collate."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import load_template
from cut_loop.training.base import Triplet
from cut_loop.training.examples import (
    IGNORE,
    build_examples,
    collate,
    downsample_positives,
    encode_prompt,
    join_and_truncate,
)

ALPACA = load_template("alpaca")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _triplet(i: int, judgment: str | None, **kw) -> Triplet:
    return Triplet(
        id=str(i),
        instruction=f"Name three colors {i}.",
        input=kw.pop("input", ""),
        response=kw.pop("response", "Red, green and blue."),
        judgment=judgment,
        **kw,
    )


def _response_ids(example_ids, labels):
    return [t for t, lab in zip(example_ids, labels, strict=True) if lab != IGNORE]


def test_positive_is_plain_prompt_then_response_with_eos(tokenizer):
    t = _triplet(0, None, input="Answer briefly.")
    # With one negative beside it and downsample 1.0, int(1.0 * 1) = 1 positive is kept.
    ex, _ = build_examples([t, _triplet(1, "Wrong.")], ALPACA, tokenizer, 512, 1.0, seed=0)
    prompt = encode_prompt(tokenizer, ALPACA.render(t.instruction, t.input))
    response = tokenizer(t.response, add_special_tokens=False)["input_ids"]
    assert not ex.negative
    assert ex.input_ids == prompt + response + [tokenizer.eos_token_id]
    assert ex.labels == [IGNORE] * len(prompt) + response + [tokenizer.eos_token_id]


def test_truncated_response_gets_no_eos(tokenizer):
    triplets = [_triplet(0, None, truncated=True), _triplet(1, "Wrong.", truncated=True)]
    for ex in build_examples(triplets, ALPACA, tokenizer, 512, 1.0, 0):
        assert ex.input_ids[-1] != tokenizer.eos_token_id
        assert ex.labels[-1] == ex.input_ids[-1]
    (ex,) = build_examples([_triplet(1, "Wrong.")], ALPACA, tokenizer, 512, 1.0, 0)
    assert ex.input_ids[-1] == ex.plain_input_ids[-1] == tokenizer.eos_token_id


def test_negative_pairs_judged_and_plain_contexts_with_identical_response_tokens(tokenizer):
    t = _triplet(0, "The response is incorrect.")
    (ex,) = build_examples([t], ALPACA, tokenizer, 512, downsample=0.0, seed=0)
    judged = encode_prompt(tokenizer, ALPACA.render_judged(t.instruction, "", t.judgment))
    plain = encode_prompt(tokenizer, ALPACA.render(t.instruction, ""))
    assert ex.negative
    assert ex.input_ids[: len(judged)] == judged
    assert ex.plain_input_ids[: len(plain)] == plain
    assert ex.labels.count(IGNORE) == len(judged)
    assert ex.plain_labels.count(IGNORE) == len(plain)
    response = _response_ids(ex.input_ids, ex.labels)
    assert response == _response_ids(ex.plain_input_ids, ex.plain_labels)
    assert response[-1] == tokenizer.eos_token_id


def test_chat_template_renders_through_the_tokenizer(tokenizer):
    chat = load_template("chat")
    (ex,) = build_examples([_triplet(0, "Too short.")], chat, tokenizer, 512, 0.0, 0)
    text = tokenizer.decode(ex.input_ids)
    assert text.startswith("<|im_start|>system") and "Too short." in text
    assert tokenizer.decode(ex.plain_input_ids).startswith("<|im_start|>user")


def test_truncation_cuts_the_prompt_from_the_left():
    prompt, response = list(range(100, 110)), [1, 2, 3]
    ids, labels = join_and_truncate(prompt, response, max_length=7)
    assert ids == [106, 107, 108, 109, 1, 2, 3]
    assert labels == [IGNORE] * 4 + [1, 2, 3]
    assert join_and_truncate(prompt, response, 50) == (prompt + response, [IGNORE] * 10 + response)


def test_a_response_longer_than_max_length_keeps_its_head_after_one_prompt_token():
    ids, labels = join_and_truncate([100, 101], list(range(10)), max_length=5)
    assert ids == [101, 0, 1, 2, 3]
    assert labels == [IGNORE, 0, 1, 2, 3]
    with pytest.raises(CutLoopError):
        join_and_truncate([100], [1], max_length=1)


def test_truncated_pair_still_scores_the_same_tokens(tokenizer):
    t = _triplet(0, "The response is incorrect.", response="Red, green and blue. " * 4)
    (ex,) = build_examples([t], ALPACA, tokenizer, 24, downsample=0.0, seed=0)
    assert len(ex.input_ids) == len(ex.plain_input_ids) == 24
    assert _response_ids(ex.input_ids, ex.labels) == _response_ids(
        ex.plain_input_ids, ex.plain_labels
    )


def test_downsampling_keeps_int_ratio_times_negatives_deterministically():
    triplets = [_triplet(i, None if i % 5 else "Wrong.") for i in range(40)]  # 8 neg, 32 pos
    kept = downsample_positives(triplets, 0.25, seed=3)
    positives = [t for t in kept if t.judgment is None]
    assert len(positives) == 2  # int(0.25 * 8)
    assert sum(t.judgment is not None for t in kept) == 8
    assert kept == downsample_positives(triplets, 0.25, seed=3)
    assert [t.id for t in kept] == sorted((t.id for t in kept), key=int)  # original order
    choices = {tuple(t.id for t in downsample_positives(triplets, 0.25, s)) for s in range(5)}
    assert len(choices) > 1  # the seed picks which
    assert len(downsample_positives(triplets, 0.3, 0)) == 8 + 2  # int(2.4): floor
    assert downsample_positives(triplets, 10.0, 0) == triplets  # more allowed than there are


def test_no_negatives_keeps_no_positives():
    # The reference's rule: int(downsample * 0) = 0 positives; nothing is left to train on.
    assert downsample_positives([_triplet(i, None) for i in range(5)], 0.25, 0) == []


def test_collate_stacks_plain_contexts_of_negatives_after_the_first_contexts(tokenizer):
    triplets = [_triplet(0, None), _triplet(1, "Wrong."), _triplet(2, "Also wrong.")]
    examples = build_examples(triplets, ALPACA, tokenizer, 512, downsample=1.0, seed=0)
    batch = collate(examples, pad_id=tokenizer.pad_token_id)
    width = max(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == batch["labels"].shape == (5, width)
    assert batch["neg_rows"].tolist() == [1, 2]
    rows = [e.input_ids for e in examples] + [e.plain_input_ids for e in examples[1:]]
    for row, ids in enumerate(rows):
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["attention_mask"][row].sum() == len(ids)
        assert (batch["labels"][row, len(ids) :] == IGNORE).all()
        assert (batch["input_ids"][row, len(ids) :] == tokenizer.pad_token_id).all()


def test_loss_truncated_decides_how_cut_off_responses_train(tokenizer):
    """`keep` trains cut-off answers like any other; `judged` keeps a criticised one as an
    Align-N example alone (judged context, no Misalign partner) and drops an accepted one;
    `drop` leaves both out. Finished answers are untouched by the choice."""
    triplets = [
        _triplet(0, None, truncated=True),
        _triplet(1, "Cut off.", truncated=True),
        _triplet(2, None),
        _triplet(3, "Wrong."),
    ]

    def kinds(policy: str) -> dict[str, tuple[bool, bool]]:
        built = build_examples(triplets, ALPACA, tokenizer, 512, 1.0, 0, truncated=policy)
        return {e.id: (e.judged, e.negative) for e in built}

    assert kinds("keep") == {
        "0": (False, False), "1": (True, True), "2": (False, False), "3": (True, True),
    }  # fmt: skip
    assert kinds("judged") == {"1": (True, False), "2": (False, False), "3": (True, True)}
    assert kinds("drop") == {"2": (False, False), "3": (True, True)}
    (align_n,) = [
        e for e in build_examples(triplets, ALPACA, tokenizer, 512, 1.0, 0, truncated="judged")
        if e.id == "1"
    ]  # fmt: skip
    judged = ALPACA.render_judged(triplets[1].instruction, "", "Cut off.")
    assert align_n.input_ids[: len(encode_prompt(tokenizer, judged))] == encode_prompt(
        tokenizer, judged
    )
    batch = collate([align_n], tokenizer.eos_token_id)
    assert batch["input_ids"].shape[0] == 1 and batch["neg_rows"].numel() == 0
