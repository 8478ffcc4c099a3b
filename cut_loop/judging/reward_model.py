"""`RewardModelJudge`: a scalar reward model as the judge (ALGORITHMS.md section 4).

Two checkpoint layouts (reward_model_loading.py): an `AutoModelForSequenceClassification` with a
single label (score = its logit), and the Starling-RM-7B-alpha layout (a decoder trunk plus a
bias-free `v_head` hidden -> 1; reward = v_head at the last token). A reward at or above
`threshold` is acceptable; below it, unacceptable with a critique that states the score. The
reward is recorded as the judgment's score either way (ranking losses use it).
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from cut_loop.judging.base import JudgeItem, Judgment
from cut_loop.judging.reward_model_loading import (
    DTYPES,
    LoadedRewardModel,
    load_reward_model,
)

STARLING_TEMPLATE = "[INST] {prompt} </s> [/INST] {response}</s>"
FORMATS = ("starling", "chat", "pair")
_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")


def prompt_of(item: JudgeItem) -> str:
    """The instruction with its input folded in, as the CUT reference does."""
    return f"{item.instruction}\n{item.input}" if item.input.strip() else item.instruction


def fill(template: str, prompt: str, response: str) -> str:
    """`template` with {prompt} and {response} substituted in one pass (a response that
    contains "{prompt}" stays as written)."""
    values = {"prompt": prompt, "response": response}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class RewardModelJudge:
    """Judge with a scalar reward model.

    Options: `model` (a local directory or a Hub id); `threshold` (required: rewards have no
    common scale, so there is no sensible default); `layout` ("auto", "sequence-classification"
    or "starling"; auto reads config.json's architectures); `format` (how prompt and response
    become one input: "starling" = STARLING_TEMPLATE, "chat" = the tokenizer's chat template
    with a user and an assistant turn, "pair" = a tokenizer text pair (cross-encoders such as
    DeBERTa reward models), or any string with {prompt} and {response}; default: "starling" for
    that layout, else "chat" when the tokenizer has a template, else "pair"); `tokenizer`
    (default: the model's own; the Starling checkpoint ships none and names its base model);
    `batch_size` (8); `max_length` (2048 tokens: longer inputs lose their beginning, so the
    reward is still read at the response's end, as Starling's own code does); `dtype` ("auto":
    bfloat16 on a GPU, float32 on CPU).

    Usage per judgment: {"prompt_tokens": input tokens}; `stats` counts items and truncated.
    """

    def __init__(
        self,
        *,
        model: str,
        threshold: float,
        layout: str = "auto",
        format: str | None = None,
        tokenizer: str | None = None,
        batch_size: int = 8,
        max_length: int = 2048,
        dtype: str = "auto",
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        if format is not None and format not in FORMATS and "{response}" not in format:
            raise ValueError(f"format must be one of {', '.join(FORMATS)} or contain {{response}}")
        self.threshold = float(threshold)
        self.batch_size = batch_size
        self.max_length = max_length
        self.rm: LoadedRewardModel = load_reward_model(model, layout, tokenizer, dtype)
        self.tokenizer = self.rm.tokenizer
        self.tokenizer.truncation_side = "left"  # keep the response's end: the reward is read there
        self.tokenizer.padding_side = "right"
        if format is None:
            if self.rm.layout == "starling":
                format = "starling"
            else:
                format = "chat" if self.tokenizer.chat_template else "pair"
        self.format = format
        self.stats = {"items": 0, "truncated": 0}

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One judgment per item, in order; a non-finite reward is a failed judgment."""
        order = sorted(range(len(items)), key=lambda i: len(items[i].response))  # less padding
        rewards: dict[int, tuple[float, int]] = {}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, reward in zip(idx, self.rewards([items[i] for i in idx]), strict=True):
                rewards[i] = reward
        out = []
        for i, item in enumerate(items):
            reward, tokens = rewards[i]
            usage: dict[str, float] = {"prompt_tokens": tokens}
            raw = f"reward {reward!r}"
            if not math.isfinite(reward):
                out.append(Judgment.fail(item.id, f"the reward is {reward}", raw=raw, usage=usage))
            elif reward >= self.threshold:
                out.append(Judgment.accept(item.id, reward, raw=raw, usage=usage))
            else:
                critique = (
                    f"The reward model scores this response {reward:.2f}, below the threshold "
                    f"{self.threshold}."
                )
                out.append(Judgment.reject(item.id, critique, reward, raw=raw, usage=usage))
        self.stats["items"] += len(items)
        return out

    @torch.inference_mode()
    def rewards(self, items: Sequence[JudgeItem]) -> list[tuple[float, int]]:
        """(reward, input tokens) per item, in one forward pass."""
        enc = self.encode(items)
        mask = enc["attention_mask"]
        self.stats["truncated"] += int((mask.sum(1) >= self.max_length).sum())
        scores = self.rm.score(enc.to(self.rm.device))
        return [(float(s), int(n)) for s, n in zip(scores.float().cpu(), mask.sum(1), strict=True)]

    def encode(self, items: Sequence[JudgeItem]) -> Any:
        """The tokenized batch (right-padded, left-truncated to max_length)."""
        kw = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        prompts = [prompt_of(item) for item in items]
        responses = [item.response for item in items]
        if self.format == "pair":
            return self.tokenizer(prompts, responses, **kw)
        if self.format == "chat":
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                    tokenize=False,
                )
                for p, r in zip(prompts, responses, strict=True)
            ]
            return self.tokenizer(texts, add_special_tokens=False, **kw)  # the template has them
        template = STARLING_TEMPLATE if self.format == "starling" else self.format
        texts = [fill(template, p, r) for p, r in zip(prompts, responses, strict=True)]
        return self.tokenizer(texts, **kw)  # with the tokenizer's BOS, as Starling's card does

    def close(self) -> None:
        """Free the model's memory."""
        del self.rm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
