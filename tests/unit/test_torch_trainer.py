"""TorchTrainer on the tiny model: it learns (with every loss), resumes exactly, merges LoRA,
saves HF dirs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut_loop.config import LoraConfig, LossConfig, TrainConfig, config_from_dict
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import load_template
from cut_loop.training.base import Triplet
from cut_loop.training.examples import IGNORE, build_examples, collate
from cut_loop.training.factory import make_trainer
from cut_loop.training.logprobs import batch_logprobs
from cut_loop.training.torch_trainer import TorchTrainer

TRIPLETS = [
    Triplet(
        id=str(i),
        instruction=["Name three colors.", "Write a short poem about the sea."][i % 2],
        input="",
        response=["Red, green and blue.", "The sea is blue. The sea is blue."][i % 2],
        judgment=None if i < 4 else "The response repeats the sentence.",
    )
    for i in range(8)
]  # 4 positives, 4 negatives: with downsample 1.0 all 8 are trained on


def _config(**kw) -> TrainConfig:
    base = TrainConfig(
        learning_rate=1e-2, warmup_steps=1, epochs=3, micro_batch_size=2, grad_accum=2,
        max_length=64, save_every=2,
    )  # fmt: skip
    return replace(base, **kw)


def _trainer(config: TrainConfig, seed: int = 0) -> TorchTrainer:
    return TorchTrainer(config, LossConfig(downsample=1.0), load_template("alpaca"), seed=seed)


def _losses(work_dir: Path) -> dict[int, float]:
    """Loss per step; a resumed run re-logs the steps after its checkpoint: the last row wins."""
    rows = [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def test_training_lowers_the_loss_and_saves_a_loadable_model(tiny_model_dir, tmp_path):
    config = _config(epochs=5, micro_batch_size=4, grad_accum=1)  # 2 steps an epoch
    result = _trainer(config).train(TRIPLETS, tiny_model_dir, tmp_path / "w", tmp_path / "out")

    assert (result.steps, result.examples) == (10, 8)
    assert result.metrics["negatives"] == result.metrics["positives"] == 4
    losses = _losses(tmp_path / "w")
    assert sorted(losses) == list(range(1, 11))
    assert (losses[9] + losses[10]) / 2 < 0.8 * (losses[1] + losses[2]) / 2
    rows = (tmp_path / "w" / "log.jsonl").read_text().splitlines()
    assert {"align_loss", "misalign_loss", "flagged_token_fraction", "lr", "tokens_per_s"} <= set(
        json.loads(rows[0])
    )

    before, after = _weights(tiny_model_dir), _weights(tmp_path / "out")
    assert before.keys() == after.keys()
    assert not torch.equal(
        before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]
    )
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    AutoTokenizer.from_pretrained(tmp_path / "out")
    assert not list(tmp_path.glob(".*"))  # no temporary directory left behind


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(
    tiny_model_dir, tmp_path, lora
):
    config = _config(lora=LoraConfig(enabled=lora, r=4, alpha=8))  # 2 steps/epoch, 6 in all
    whole = _trainer(config).train(TRIPLETS, tiny_model_dir, tmp_path / "a", tmp_path / "a-out")
    assert whole.steps == 6

    killed = _trainer(config).train(
        TRIPLETS, tiny_model_dir, tmp_path / "b", tmp_path / "b-out", stop_after_steps=3
    )
    assert killed.steps == 3 and not (tmp_path / "b-out").exists()
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-2"]
    resumed = _trainer(config).train(TRIPLETS, tiny_model_dir, tmp_path / "b", tmp_path / "b-out")
    assert resumed.steps == 6 and resumed.metrics["resumed_from"] == 2
    logged = [
        json.loads(r)["step"] for r in (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    ]
    assert logged == [1, 2, 3, 3, 4, 5, 6]  # step 3 was lost with the "kill" and redone

    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7)
    wa, wb = _weights(tmp_path / "a-out"), _weights(tmp_path / "b-out")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-6, atol=1e-7)

    kept = sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*"))
    assert kept == ["checkpoint-4", "checkpoint-6"]  # the newest two
    saved = load_file(tmp_path / "b" / "checkpoint-6" / "trainable.safetensors")
    assert all("lora_" in k for k in saved) == lora  # LoRA checkpoints hold only the adapter

    with pytest.raises(CutLoopError, match="other training data or settings"):
        _trainer(config, seed=1).train(TRIPLETS, tiny_model_dir, tmp_path / "b", tmp_path / "c")


def test_lora_is_merged_into_a_plain_hf_directory(tiny_model_dir, tmp_path):
    config = _config(epochs=1, lora=LoraConfig(enabled=True, r=4, alpha=8))
    _trainer(config).train(TRIPLETS, tiny_model_dir, tmp_path / "w", tmp_path / "out")

    before, after = _weights(tiny_model_dir), _weights(tmp_path / "out")
    assert before.keys() == after.keys()  # no adapter keys, no "base_layer" renames
    assert not list(tmp_path.glob("out/adapter*"))
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == any(m in name for m in ("gate_proj", "up_proj", "down_proj")), name
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_nothing_to_train_passes_the_start_model_through(tiny_model_dir, tmp_path):
    accepted = [replace(t, judgment=None) for t in TRIPLETS]  # no negatives: no positives kept
    result = _trainer(_config()).train(accepted, tiny_model_dir, tmp_path / "w", tmp_path / "out")
    assert (result.steps, result.examples) == (0, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in Path(tiny_model_dir).iterdir()
    )
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        Path(tiny_model_dir) / "model.safetensors"
    ).read_bytes()


def test_chunked_head_matches_the_models_own_logits(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = build_examples(TRIPLETS, load_template("alpaca"), tokenizer, 64, 1.0, seed=0)
    batch = collate(examples[:4], tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)

    logp, mask = batch_logprobs(model, batch, chunk=7)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    full = torch.log_softmax(logits[:, :-1], -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(logp[mask], full[mask], rtol=1e-5, atol=1e-5)
    assert mask.equal(labels != IGNORE)


def test_gradient_checkpointing_changes_memory_not_results(tiny_model_dir, tmp_path):
    for gc in (False, True):
        config = _config(epochs=1, bf16=False, gradient_checkpointing=gc)
        _trainer(config).train(TRIPLETS, tiny_model_dir, tmp_path / f"w{gc}", tmp_path / f"o{gc}")
    a, b = _losses(tmp_path / "wFalse"), _losses(tmp_path / "wTrue")
    assert a == pytest.approx(b, rel=1e-6)
    for name, tensor in _weights(tmp_path / "oFalse").items():
        torch.testing.assert_close(_weights(tmp_path / "oTrue")[name], tensor)


# Two instructions, four judged responses each (two of them different from the other two),
# scored: what RRHF and DPO rank.
SCORED = [
    replace(
        t, response=t.response if i < 4 else t.response[::-1], score=float(i % 3),
        prompt_id=f"p{i % 2}",
    )
    for i, t in enumerate(TRIPLETS)
]  # fmt: skip


@pytest.mark.parametrize(
    ("loss", "components", "steps"),
    [
        ("sft", set(), 12),  # 4 acceptable responses, 2 a step
        ("rrhf", {"rank_loss", "sft_loss", "ranked_pairs"}, 6),  # 2 groups, 2 a step
        ("dpo", {"reward_margin", "reward_accuracy"}, 30),  # 10 pairs by score, 2 a step
    ],
)
def test_other_losses_train_through_the_same_trainer(
    tiny_model_dir, tmp_path, loss, components, steps
):
    config = _config(epochs=6, micro_batch_size=2, grad_accum=1, bf16=False)
    trainer = TorchTrainer(config, LossConfig(name=loss), load_template("alpaca"), seed=0)
    result = trainer.train(SCORED, tiny_model_dir, tmp_path / "w", tmp_path / "out")

    assert result.steps == steps
    losses = _losses(tmp_path / "w")
    assert (losses[steps - 1] + losses[steps]) / 2 < (losses[1] + losses[2]) / 2
    first = json.loads((tmp_path / "w" / "log.jsonl").read_text().splitlines()[0])
    assert components <= set(first)
    if loss == "dpo":  # the reference is the starting policy: the first step's loss is ln 2
        assert losses[1] == pytest.approx(math.log(2), abs=1e-4)
        assert result.metrics["pairs"] == 10
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_dpo_resumes_exactly_with_its_stored_reference(tiny_model_dir, tmp_path):
    config = _config(epochs=1, micro_batch_size=2, grad_accum=1, bf16=False)  # 5 steps

    def trainer() -> TorchTrainer:
        return TorchTrainer(config, LossConfig(name="dpo"), load_template("alpaca"), seed=0)

    trainer().train(SCORED, tiny_model_dir, tmp_path / "a", tmp_path / "a-out")
    trainer().train(SCORED, tiny_model_dir, tmp_path / "b", tmp_path / "b-out", stop_after_steps=3)
    resumed = trainer().train(SCORED, tiny_model_dir, tmp_path / "b", tmp_path / "b-out")
    assert resumed.metrics["resumed_from"] == 2
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert b == pytest.approx(a, rel=1e-6)


def test_dpo_without_several_responses_per_instruction_is_refused(tiny_model_dir, tmp_path):
    trainer = TorchTrainer(_config(), LossConfig(name="dpo"), load_template("alpaca"), seed=0)
    with pytest.raises(CutLoopError, match="samples_per_instruction >= 2"):
        trainer.train(TRIPLETS, tiny_model_dir, tmp_path / "w", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    cfg = config_from_dict({"loss": {"name": "dpo"}})
    with pytest.raises(CutLoopError, match="samples_per_instruction >= 2"):
        make_trainer(cfg, load_template("alpaca"))
    make_trainer(config_from_dict({"loss": {"name": "dpo"}, "generation": {
        "samples_per_instruction": 2}}), load_template("alpaca"))  # fmt: skip


def test_max_steps_shortens_the_run_and_its_schedule(tiny_model_dir, tmp_path):
    config = _config(epochs=5, max_steps=3, warmup_steps=1)  # 10 steps without the cap
    result = _trainer(config).train(TRIPLETS, tiny_model_dir, tmp_path / "w", tmp_path / "out")
    assert result.steps == 3 and (tmp_path / "out" / "model.safetensors").exists()
    rows = [json.loads(r) for r in (tmp_path / "w" / "log.jsonl").read_text().splitlines()]
    # Warm-up 1 step, then the cosine over the 2 left: half-way at the third step (over 10
    # steps it would still be at 0.97 of the peak).
    assert rows[-1]["lr"] == pytest.approx(0.5 * config.learning_rate)
    assert all(r["tokens"] > 0 and r["seconds"] > 0 for r in rows)
