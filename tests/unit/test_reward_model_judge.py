"""RewardModelJudge on tiny random reward models built on the spot, in both layouts: rewards
must equal the model's own output computed one item at a time, unpadded, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, LlamaModel

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import JudgeItem, Verdict
from cut_loop.judging.registry import load_judge
from cut_loop.judging.reward_model import RewardModelJudge, fill
from cut_loop.judging.reward_model_loading import read_state_dict
from tests.helpers.tiny_reward_models import make_classifier_rm, make_starling_rm

ITEMS = [
    JudgeItem("a", "Name a primary colour.", "", "Red."),
    JudgeItem("b", "Summarise the text.", "The sea is wide.", "It says the sea is wide."),
    JudgeItem("c", "Write a short poem about the sea.", "", "Waves roll in.\nWaves roll out.\n"),
]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier_rm(tmp_path_factory.mktemp("classifier-rm"))


@pytest.fixture(scope="module")
def starling_dirs(tmp_path_factory: pytest.TempPathFactory, classifier_dir: Path):
    """Starling-layout checkpoints (same weights) as a .bin pickle and as safetensors; their
    config.json names the tiny tokenizer's directory as its base, like the real one."""
    root = tmp_path_factory.mktemp("starling-rm")
    return {
        fmt: make_starling_rm(root / fmt, tokenizer_dir=classifier_dir, fmt=fmt)
        for fmt in ("bin", "safetensors")
    }


@torch.no_grad()
def starling_by_hand(path: Path, text: str) -> float:
    """The model card's computation for one unpadded sample: v_head at the last token."""
    state = read_state_dict(path)
    base = json.loads((path / "config.json").read_text())["_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    trunk = LlamaModel(LlamaConfig.from_pretrained(path)).eval()
    prefix = "transformer."
    trunk.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    ids = tokenizer(text, return_tensors="pt").input_ids
    hidden = trunk(ids).last_hidden_state[0, -1]
    return float(state["v_head.weight"][0] @ hidden)


def test_classifier_rewards_match_the_model_one_item_at_a_time(classifier_dir):
    judge = RewardModelJudge(model=str(classifier_dir), threshold=0.0, batch_size=3)
    assert judge.format == "chat" and judge.rm.layout == "sequence-classification"
    out = judge.judge(ITEMS)
    model = LlamaForSequenceClassification.from_pretrained(classifier_dir).eval()
    tokenizer = judge.tokenizer
    for item, j in zip(ITEMS, out, strict=True):
        prompt = f"{item.instruction}\n{item.input}" if item.input else item.instruction
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": item.response}],
            tokenize=False,
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = float(model(ids).logits[0, 0])
        assert j.score == pytest.approx(expected, abs=1e-4)
        assert j.usage == {"prompt_tokens": ids.shape[1]}
    assert len({j.score for j in out}) == 3  # padding did not flatten anything


def test_threshold_decides_and_the_critique_states_the_score(classifier_dir):
    plain = RewardModelJudge(model=str(classifier_dir), threshold=0).judge(ITEMS)
    scores = sorted(j.score for j in plain)
    threshold = (scores[0] + scores[1]) / 2
    out = RewardModelJudge(model=str(classifier_dir), threshold=threshold).judge(ITEMS)
    low = [j for j in out if j.score == scores[0]]
    assert len(low) == 1 and low[0].verdict is Verdict.UNACCEPTABLE
    assert low[0].critique == (
        f"The reward model scores this response {scores[0]:.2f}, below the threshold {threshold}."
    )
    assert sum(j.acceptable for j in out) == 2
    assert all(j.critique is None for j in out if j.acceptable)


def test_a_classifier_with_two_labels_is_refused(tmp_path):
    path = make_classifier_rm(tmp_path / "two", num_labels=2)
    with pytest.raises(CutLoopError, match="has 2 labels; a reward model has exactly one"):
        load_judge("reward-model", {"model": str(path), "threshold": 0})


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_starling_layout_reward_is_the_head_at_the_last_token(starling_dirs, fmt):
    path = starling_dirs[fmt]
    judge = load_judge("reward-model", {"model": str(path), "threshold": 0.0, "batch_size": 3})
    assert isinstance(judge, RewardModelJudge)
    assert judge.rm.layout == "starling" and judge.format == "starling"
    out = judge.judge(ITEMS)
    for item, j in zip(ITEMS, out, strict=True):
        prompt = f"{item.instruction}\n{item.input}" if item.input else item.instruction
        text = f"[INST] {prompt} </s> [/INST] {item.response}</s>"
        assert j.score == pytest.approx(starling_by_hand(path, text), abs=1e-4)
    other = starling_dirs["safetensors" if fmt == "bin" else "bin"]
    again = load_judge("reward-model", {"model": str(other), "threshold": 0.0}).judge(ITEMS)
    assert [j.score for j in again] == pytest.approx([j.score for j in out], abs=1e-5)


def test_starling_prompt_format_is_exact(starling_dirs):
    judge = RewardModelJudge(model=str(starling_dirs["bin"]), threshold=0)
    enc = judge.encode(ITEMS[1:2])
    assert judge.tokenizer.decode(enc["input_ids"][0]) == (
        "[INST] Summarise the text.\nThe sea is wide. </s> [/INST] It says the sea is wide.</s>"
    )
    assert fill("{prompt}|{response}", "say {response}", "ok") == "say {response}|ok"


def test_long_inputs_lose_their_beginning_not_their_end(classifier_dir):
    judge = RewardModelJudge(model=str(classifier_dir), threshold=0, max_length=16)
    enc = judge.encode([JudgeItem("x", "word " * 50, "", "THE END")])
    assert enc["input_ids"].shape[1] == 16
    assert judge.tokenizer.decode(enc["input_ids"][0]).endswith("THE END<|im_end|>\n")
    [j] = judge.judge([JudgeItem("x", "word " * 50, "", "THE END")])
    assert j.usage == {"prompt_tokens": 16} and judge.stats["truncated"] == 1


def test_a_checkpoint_without_v_head_is_not_starling(tmp_path, starling_dirs):
    state = read_state_dict(starling_dirs["safetensors"])
    del state["v_head.weight"]
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((starling_dirs["safetensors"] / "config.json").read_text())
    save_file(state, broken / "model.safetensors")
    with pytest.raises(CutLoopError, match=r"no v_head\.weight tensor"):
        load_judge("reward-model", {"model": str(broken), "threshold": 0})


def test_options_are_checked():
    with pytest.raises(CutLoopError, match=r"missing required option.*threshold"):
        load_judge("reward-model", {"model": "x"})
    with pytest.raises(CutLoopError, match="format must be one of"):
        load_judge("reward-model", {"model": "x", "threshold": 1, "format": "fancy"})
