"""The transformers generator on a tiny model with a known answer: end-of-sequence, the token
limit, and stop strings (the vLLM backend must agree: tests/engines/test_vllm.py)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from cut_loop.generation.base import Completion, SamplingParams
from cut_loop.generation.hf import HFGenerator
from tests.helpers.scripted_model import make_scripted_model

ANSWER = "The response is incorrect."  # 8 tokens in the tiny BPE: The| response| is| in|co|...


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[HFGenerator, str]:
    model = make_scripted_model(tmp_path_factory.mktemp("scripted"), ANSWER)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Judge this."}], tokenize=False, add_generation_prompt=True
    )
    return HFGenerator(str(model)), prompt


def greedy(max_new_tokens: int = 20, stop: tuple[str, ...] = ()) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop)


def test_end_of_sequence_and_token_limit(scripted: tuple[HFGenerator, str]) -> None:
    generator, prompt = scripted
    assert generator.generate([prompt], greedy()) == [[Completion(ANSWER, True, 8)]]
    assert generator.generate([prompt], greedy(3)) == [[Completion("The response is", False, 3)]]


def test_stop_strings_end_the_answer_before_them(scripted: tuple[HFGenerator, str]) -> None:
    generator, prompt = scripted
    # The earliest of several; the count includes the tokens that made the stop string.
    out = generator.generate([prompt, prompt], greedy(stop=(".", " is")))
    assert out == [[Completion("The response", True, 3)]] * 2
    # A stop string across a token boundary (" in" + "co")
    assert generator.generate([prompt], greedy(stop=(" inco",))) == [
        [Completion("The response is", True, 5)]
    ]


@pytest.mark.parametrize("stop", [(), (".", " is"), (" inco",)])
def test_a_stream_yields_pieces_that_join_to_the_generated_answer(
    scripted: tuple[HFGenerator, str], stop: tuple[str, ...]
) -> None:
    """`cutloop chat` streams: the pieces come one token-ish at a time, none past a stop string
    (even one spread over two tokens), and joined they are `generate`'s answer."""
    generator, prompt = scripted
    pieces = list(generator.stream(prompt, greedy(stop=stop)))
    [[full]] = generator.generate([prompt], greedy(stop=stop))
    assert "".join(pieces).strip() == full.text
    assert len(pieces) >= 2
