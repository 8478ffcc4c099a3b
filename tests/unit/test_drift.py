"""The held-out drift measure: log p of round 0's answers under a policy (evaluation/drift.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from cut_loop.evaluation.drift import mean_token_logprob
from cut_loop.generation.prompts import load_template

ANSWERS = [
    {"id": "a", "instruction": "Name a color.", "input": "", "response": "Red is a color.",
     "finished": True},
    {"id": "b", "instruction": "Count to three.", "input": "", "response": "One two three",
     "finished": False},
    {"id": "c", "instruction": "Say nothing.", "input": "", "response": "", "finished": False},
]  # fmt: skip


def test_same_weights_same_number_and_a_moved_policy_moves_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    template = load_template("alpaca")
    start = mean_token_logprob(str(tiny_model_dir), ANSWERS, template, 256)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert start is not None and start < 0
    assert mean_token_logprob(str(copy), ANSWERS, template, 256) == start
    model = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3.0)  # sharper: other probabilities
    model.save_pretrained(copy)
    assert mean_token_logprob(str(copy), ANSWERS, template, 256) != start
    assert mean_token_logprob(str(copy), ANSWERS[2:], template, 256) is None  # no token
