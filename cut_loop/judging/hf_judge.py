"""`HFJudge`: a local causal LM as the judge, in-process via transformers.

It asks exactly what the `openai` judge asks (the same rubric from judges/<name>.yaml, rendered
with the model's chat template when its tokenizer has one) and reads the answer the same way
(rubric.judgment_from_answer: a score 1-10 and a critique). Generation is greedy and batched,
with left padding (cut_loop.generation.hf.HFGenerator). A malformed answer gets one re-ask in
the same conversation; a second malformed answer, or a prompt that does not fit the model's
context, is a failed judgment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from cut_loop.generation.base import SamplingParams
from cut_loop.generation.hf import HFGenerator
from cut_loop.judging.base import JudgeItem, Judgment
from cut_loop.judging.rubric import judgment_from_answer, load_rubric
from cut_loop.models import resolve_model

Messages = list[dict[str, str]]
_DTYPES = ("bfloat16", "float16", "float32")


class HFJudge:
    """Judge with a local Hugging Face causal LM.

    Options: `model` ("smollm2-135m": that alias, a local HF directory or a Hub id);
    `max_new_tokens` (256 per answer); `batch_size` (8 prompts per generate call); `dtype`
    ("bfloat16", "float16" or "float32"); `acceptable_score` (7: scores at or above it are
    acceptable); `rubric` ("default": a name in judges/ or a YAML path).

    Usage per judgment: requests (generations: 1, or 2 after a re-ask), prompt_tokens,
    completion_tokens. `stats` sums them, with reasks and failed, since construction.
    """

    def __init__(
        self,
        *,
        model: str = "smollm2-135m",
        max_new_tokens: int = 256,
        batch_size: int = 8,
        dtype: str = "bfloat16",
        acceptable_score: float = 7,
        rubric: str = "default",
    ) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}")
        self.rubric = load_rubric(rubric)
        self.acceptable_score = float(acceptable_score)
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0)
        self.generator = HFGenerator(resolve_model(model), dtype=dtype, batch_size=batch_size)
        self.tokenizer = self.generator.tokenizer
        # Not every config names its context length this way (GPT-2 says n_positions); without
        # it, an over-long prompt is left to the model to handle.
        self.context: int | None = getattr(
            self.generator.model.config, "max_position_embeddings", None
        )
        self.stats = dict.fromkeys(
            ("requests", "reasks", "failed", "prompt_tokens", "completion_tokens"), 0
        )

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One judgment per item, in order; never raises for a single bad item."""
        conversations = [self.rubric.messages(item) for item in items]
        usages: list[dict[str, float]] = [
            {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0} for _ in items
        ]
        out: dict[int, Judgment] = {}
        first_answers: dict[int, str] = {}
        pending = list(range(len(items)))
        for reasking in (False, True):
            if not pending:
                break
            answers = self._answer(
                [conversations[i] for i in pending], [usages[i] for i in pending]
            )
            malformed = []
            for i, (text, error) in zip(pending, answers, strict=True):
                id, usage = items[i].id, usages[i]
                if text is None:
                    why = f"re-ask: {error}" if reasking else str(error)
                    out[i] = Judgment.fail(id, why, raw=first_answers.get(i), usage=usage)
                elif judged := judgment_from_answer(id, text, self.acceptable_score, usage):
                    out[i] = judged
                elif reasking:
                    why = "the judge's answer has no score 1-10 (twice)"
                    out[i] = Judgment.fail(id, why, raw=text, usage=usage)
                else:  # one re-ask, in the same conversation
                    malformed.append(i)
                    first_answers[i] = text
                    conversations[i] = [*conversations[i], {"role": "assistant", "content": text},
                                        {"role": "user", "content": self.rubric.reask}]  # fmt: skip
            if not reasking:
                self.stats["reasks"] += len(malformed)
            pending = malformed
        judgments = [out[i] for i in range(len(items))]
        self.stats["failed"] += sum(j.failed for j in judgments)
        return judgments

    def close(self) -> None:
        """Free the model's memory."""
        self.generator.close()

    # --- generation -------------------------------------------------------------------------------
    def _answer(
        self, conversations: list[Messages], usages: list[dict[str, float]]
    ) -> list[tuple[str | None, str | None]]:
        """(answer text, None) or (None, why) per conversation; adds each generation's tokens
        to its `usages` entry and to `stats`."""
        prompts = [self.render(c) for c in conversations]
        lengths = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        results: list[tuple[str | None, str | None]] = [(None, None)] * len(prompts)
        fits = []
        for i, n in enumerate(lengths):
            if self.context is not None and n + self.params.max_new_tokens > self.context:
                results[i] = (None, f"the judge prompt is {n} tokens: with max_new_tokens="
                              f"{self.params.max_new_tokens} it exceeds the model's context "
                              f"of {self.context}")  # fmt: skip
            else:
                fits.append(i)
        completions = self.generator.generate([prompts[i] for i in fits], self.params)
        for i, [completion] in zip(fits, completions, strict=True):
            usage = usages[i]
            usage["requests"] += 1
            usage["prompt_tokens"] += lengths[i]
            usage["completion_tokens"] += completion.num_tokens
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += lengths[i]
            self.stats["completion_tokens"] += completion.num_tokens
            results[i] = (completion.text, None)  # empty is malformed: re-asked like garbage
        return results

    def render(self, messages: Messages) -> str:
        """The prompt text for a conversation: the tokenizer's chat template (with the
        assistant's turn opened) when it has one, else plain labelled turns."""
        if self.tokenizer.chat_template:
            try:
                return self._template(messages)
            except TemplateError:
                # Some templates (Gemma, older Mistral) reject a system turn: fold it into the
                # first user turn, as their own docs suggest.
                system, user, *rest = messages
                merged = {"role": "user", "content": f"{system['content']}\n\n{user['content']}"}
                return self._template([merged, *rest])
        turns = [
            m["content"] if m["role"] != "assistant" else f"Answer: {m['content']}"
            for m in messages
        ]
        return "\n\n".join(turns) + "\n\nAnswer:"

    def _template(self, messages: Messages) -> Any:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
