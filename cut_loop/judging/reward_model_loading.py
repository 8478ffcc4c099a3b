"""Loading a scalar reward model: its layout, weights and tokenizer, ready to score a batch.

Layouts:
- "sequence-classification": any `AutoModelForSequenceClassification` checkpoint with one
  label; the reward is that logit (the model's own pooling: last token for decoders, CLS for
  encoders).
- "starling": the Starling-RM-7B-alpha layout. Its model card defines `GPTRewardModel`: a
  Llama-2-7b-chat causal LM (`model`, with its trunk also registered as `transformer`) plus
  `v_head = nn.Linear(hidden, 1, bias=False)`, and loads the released state dict into it with
  `strict=False`. So the checkpoint (a `.pt` / `*model.bin` pickle, or safetensors) holds
  `v_head.weight` beside the trunk's weights under one of the prefixes `transformer.`,
  `model.model.` or `model.` (or none); its config.json is a plain llama config whose
  architectures name a class transformers does not have ("LLMForSequenceRegression"). We load
  the trunk with the Auto base-model class for that config and the head from `v_head.weight`;
  the reward is the head at the last non-padding token (right padding), as in the card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from cut_loop.errors import CutLoopError
from cut_loop.models import resolve_model

DTYPES = ("auto", "bfloat16", "float16", "float32")
_TRUNK_PREFIXES = ("transformer.", "model.model.", "model.", "")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class LoadedRewardModel(Protocol):
    layout: str
    tokenizer: Any
    device: torch.device

    def score(self, batch: Any) -> torch.Tensor:
        """Rewards, shape (batch,), for a tokenized, right-padded batch on `device`."""
        ...


class SequenceClassificationRM:
    layout = "sequence-classification"

    def __init__(self, path: str, tokenizer: Any, dtype: torch.dtype, device: torch.device):
        from transformers import AutoModelForSequenceClassification

        self.tokenizer, self.device = tokenizer, device
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        if self.model.config.num_labels != 1:
            raise CutLoopError(
                f"judge 'reward-model': {path} has {self.model.config.num_labels} labels; a "
                "reward model has exactly one (its logit is the reward)"
            )
        # Decoder classifiers find each row's last token through pad_token_id.
        self.model.config.pad_token_id = tokenizer.pad_token_id
        self.model.to(device).eval()

    def score(self, batch: Any) -> torch.Tensor:
        return self.model(**batch).logits[:, 0]


class StarlingRM:
    layout = "starling"

    def __init__(self, path: Path, tokenizer: Any, dtype: torch.dtype, device: torch.device):
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        self.tokenizer, self.device = tokenizer, device
        state = read_state_dict(path)
        head = state.pop("v_head.weight", None)
        if head is None:
            raise CutLoopError(
                f"judge 'reward-model': {path} has no v_head.weight tensor, so it is not a "
                "Starling-layout reward model (set judge.layout=sequence-classification?)"
            )
        prefix = next((p for p in _TRUNK_PREFIXES if f"{p}embed_tokens.weight" in state), None)
        if prefix is None:
            raise CutLoopError(f"judge 'reward-model': {path} holds no trunk weights")
        trunk_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        config = AutoConfig.from_pretrained(path)
        trunk_class = MODEL_MAPPING[type(config)]
        self.trunk, info = trunk_class.from_pretrained(
            None, config=config, state_dict=trunk_state, dtype=dtype, output_loading_info=True
        )
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise CutLoopError(
                f"judge 'reward-model': {path} lacks {len(missing)} trunk weights "
                f"(first: {missing[0]})"
            )
        self.trunk.to(device).eval()
        self.head = torch.nn.Linear(head.shape[1], 1, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            self.head.weight.copy_(head)

    def score(self, batch: Any) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden = self.trunk(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        last = mask.sum(1) - 1  # right padding: the last real token of each row
        return self.head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])[:, 0]


def load_reward_model(
    model: str, layout: str, tokenizer: str | None, dtype: str
) -> LoadedRewardModel:
    """The reward model at `model` (a directory or a Hub id) in `layout` ("auto" decides from
    config.json: a *ForSequenceClassification architecture, else Starling)."""
    from transformers import AutoTokenizer

    path = _local_dir(resolve_model(model))
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if layout == "auto":
        archs = config.get("architectures") or []
        is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
        layout = "sequence-classification" if is_classifier else "starling"
    if layout not in ("sequence-classification", "starling"):
        raise CutLoopError(
            f"judge 'reward-model': layout={layout!r} is not auto, sequence-classification or "
            "starling"
        )
    source = tokenizer or _tokenizer_source(path, config)
    tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token is None:  # Starling pads with unk; any id works under the attention mask
        tok.pad_token = tok.unk_token or tok.eos_token
    torch_dtype = _torch_dtype(dtype)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if layout == "starling":
        return StarlingRM(path, tok, torch_dtype, device)
    return SequenceClassificationRM(str(path), tok, torch_dtype, device)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory: its *.safetensors files, else its `.pt` /
    `*model*.bin` pickles (read with weights_only=True: tensors, no code)."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if files:
        return {k: v for f in files for k, v in load_file(f).items()}
    pickles = sorted(
        f for f in path.iterdir() if f.suffix == ".pt" or (f.suffix == ".bin" and "model" in f.name)
    )
    if not pickles:
        raise CutLoopError(f"judge 'reward-model': {path} has no .safetensors, .pt or .bin file")
    state: dict[str, torch.Tensor] = {}
    for f in pickles:
        state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
    return state


def _local_dir(name: str) -> Path:
    """A directory with the checkpoint's files (a Hub id is downloaded into the HF cache)."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name))


def _tokenizer_source(path: Path, config: dict[str, Any]) -> str:
    """The checkpoint's own tokenizer, else the base model its config.json names (Starling's
    says meta-llama/Llama-2-7b-chat-hf, the tokenizer its model card loads)."""
    if any((path / f).exists() for f in _TOKENIZER_FILES):
        return str(path)
    base = config.get("_name_or_path")
    if not base:
        raise CutLoopError(
            f"judge 'reward-model': {path} ships no tokenizer; set judge.tokenizer to one"
        )
    return str(base)


def _torch_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
