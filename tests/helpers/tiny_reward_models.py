"""Tiny, randomly initialised reward models in the two layouts the `reward-model` judge loads,
made on the spot from the tiny tokenizer of tests/helpers/tiny_model.py.

- `make_classifier_rm`: a LlamaForSequenceClassification with one label, saved by
  save_pretrained (config, safetensors, tokenizer with its chat template).
- `make_starling_rm`: the Starling-RM-7B-alpha file layout, scaled down. Its model card wraps a
  Llama causal LM in `GPTRewardModel` (`model` = the causal LM, `transformer` = its trunk,
  `v_head` = Linear(hidden, 1, bias=False)) and loads the released state dict into it; the
  repository ships config.json (a llama config, architectures ["LLMForSequenceRegression"],
  `_name_or_path` = the base model whose tokenizer it uses) and the weights, no tokenizer.
  We write the same: config.json naming the tiny tokenizer's directory as `_name_or_path`,
  and the weights either as `pytorch_model.bin` holding GPTRewardModel's full state dict (the
  causal LM under `model.`, the trunk again under `transformer.`, and `v_head.weight`), or as
  `model.safetensors` holding `transformer.*` + `v_head.weight` (safetensors cannot hold the
  same tensor twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.tiny_model import make_tiny_model, tiny_llama_shape


def make_classifier_rm(out_dir: Path, num_labels: int = 1, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    out_dir = Path(make_tiny_model(out_dir))
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(num_labels=num_labels, **tiny_llama_shape(tokenizer))
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # random init gives a near-zero head; spread the rewards out
        model.score.weight.normal_(0, 1.0)
    for f in out_dir.glob("model*.safetensors"):
        f.unlink()  # the tiny causal LM that make_tiny_model saved
    model.save_pretrained(out_dir)
    return out_dir


class GPTRewardModel:
    """The model card's wrapper, reduced to what defines the checkpoint's keys."""

    def __init__(self, causal_lm: Any) -> None:
        import torch

        self.module = torch.nn.Module()
        self.module.model = causal_lm
        self.module.transformer = causal_lm.model
        hidden = causal_lm.config.hidden_size
        self.module.v_head = torch.nn.Linear(hidden, 1, bias=False)
        with torch.no_grad():
            self.module.v_head.weight.normal_(0, 1.0)


def make_starling_rm(out_dir: Path, tokenizer_dir: Path, fmt: str = "bin", seed: int = 0) -> Path:
    """A Starling-layout checkpoint in `out_dir`; `fmt` "bin" or "safetensors"."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(tie_word_embeddings=False, **tiny_llama_shape(tokenizer))
    rm = GPTRewardModel(LlamaForCausalLM(config))
    out_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()
    config_dict.update(architectures=["LLMForSequenceRegression"], _name_or_path=str(tokenizer_dir))
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2))
    state = rm.module.state_dict()
    if fmt == "bin":
        torch.save(state, out_dir / "pytorch_model.bin")
    else:
        keep = {k: v.clone() for k, v in state.items() if k.startswith(("transformer.", "v_head"))}
        save_file(keep, out_dir / "model.safetensors")
    return out_dir
