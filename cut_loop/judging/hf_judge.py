"""`HFJudge`: a local causal LM as the judge, generating with transformers in-process or with
the vLLM engine (a child process, as the generate stage runs it).

It asks exactly what the `openai` judge asks (the same rubric from judges/<name>.yaml, rendered
with the model's chat template when its tokenizer has one) and reads the answer the same way
(rubric.judgment_from_answer: a score 1-10 and a critique). Generation is greedy and batched,
with left padding. A malformed answer gets one re-ask in the same conversation; a second
malformed answer, or a prompt that does not fit the model's context, is a failed judgment.

The generator starts at the first `judge` call and stops at `release()`, which the judge stage
calls when it ends: one engine start per stage, not per batch, and no judge model holding
memory while the policy trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from cut_loop.config import GenerationConfig
from cut_loop.generation.base import Completion, Generator, SamplingParams
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
    acceptable); `rubric` ("default": a name in judges/ or a YAML path); `backend` ("auto":
    the vLLM engine where it is installed and starts for the model, else transformers; "hf";
    "vllm"); `engine` (other `generation.*` fields for the vLLM engine, e.g.
    {"enforce_eager": true, "cpu_kvcache_gb": 1}).

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
        backend: str = "auto",
        engine: dict[str, Any] | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}")
        if backend not in ("auto", "hf", "vllm"):
            raise ValueError("backend must be auto, hf or vllm")
        try:
            self.engine = GenerationConfig(
                **{**(engine or {}), "backend": backend, "dtype": dtype, "batch_size": batch_size}
            )
        except TypeError as e:
            raise ValueError(f"engine: {e}") from None
        self.rubric = load_rubric(rubric)
        self.acceptable_score = float(acceptable_score)
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0)
        self.model = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model)
        # Not every config names its context length this way (GPT-2 says n_positions); without
        # it, an over-long prompt is left to the model to handle.
        self.context: int | None = getattr(
            AutoConfig.from_pretrained(self.model), "max_position_embeddings", None
        )
        self.generator: Generator | None = None  # started by the first judge() of a stage
        self.starts = 0  # generator starts so far (one per judge stage)
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

    def release(self) -> None:
        """Stop the generator (the judge stage ends); the next `judge` call starts it again."""
        if self.generator is not None:
            self.generator.close()
            self.generator = None

    def close(self) -> None:
        """Free the model's memory."""
        self.release()

    def _generate(self, prompts: list[str]) -> list[list[Completion]]:
        if self.generator is None:
            from cut_loop.generation.factory import make_generator

            self.generator = make_generator(self.engine, self.model)
            self.starts += 1
        return self.generator.generate(prompts, self.params)

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
        completions = self._generate([prompts[i] for i in fits]) if fits else []
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
