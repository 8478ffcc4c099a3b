"""The transformers generation backend: batched `generate` with left padding."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut_loop.generation.base import Completion, SamplingParams

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class HFGenerator:
    """Generates with `model.generate` in batches of `batch_size` prompts.

    Prompts are sorted by length before batching (less padding) and answers returned in the
    caller's order. A completion is `finished` when the model emitted an end-of-sequence token
    or a stop string before `max_new_tokens`.
    """

    def __init__(self, model_path: str, dtype: str = "bfloat16", batch_size: int = 16) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=_DTYPES[dtype])
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        if self.tokenizer.eos_token_id is not None:
            eos_ids.append(self.tokenizer.eos_token_id)
        self.eos_ids = sorted({e for e in eos_ids if e is not None})

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        torch.manual_seed(params.seed)  # one seed per call: a resumed shard samples the same
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = [prompts[i] for i in idx]
            for i, completions in zip(idx, self._generate_batch(batch, params), strict=True):
                results[i] = completions
            if on_batch:
                on_batch(len(idx))
        return results

    def _generate_batch(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        # Templates already contain any special tokens the model needs (chat templates add them).
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.device)
        out = self.model.generate(**enc, **self._decoding(params))
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        completions = [self._completion(ids, params.stop) for ids in new_tokens]
        return [completions[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _decoding(self, params: SamplingParams) -> dict[str, Any]:
        """`model.generate` arguments for `params` (one place for batches and streams)."""
        sample = params.temperature > 0
        stops = (
            {"stop_strings": list(params.stop), "tokenizer": self.tokenizer} if params.stop else {}
        )
        return {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sample,
            "temperature": params.temperature if sample else None,
            "top_p": params.top_p if sample else None,
            "top_k": None,
            "num_return_sequences": params.n,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            **stops,
        }

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """One answer to `prompt`, yielded piece by piece as it is decoded (`cutloop chat`),
        the text up to the first stop string (what `generate` returns, before its strip)."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        torch.manual_seed(params.seed)
        enc = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {
            **enc.to(self.device),
            **self._decoding(replace(params, n=1)),
            "streamer": streamer,
        }
        worker = Thread(target=torch.inference_mode()(self.model.generate), kwargs=kwargs)
        worker.start()
        # Held back: the tail that may be the start of a stop string still to come.
        hold = max((len(x) for x in params.stop), default=1) - 1
        text, sent, stopped = "", 0, False
        for piece in streamer:
            text += piece
            if stopped:
                continue  # let generate finish (it stops at the stop string itself)
            end = _first_stop(text, params.stop)
            stopped = end is not None
            end = end if end is not None else max(sent, len(text) - hold)
            if end > sent:
                yield text[sent:end]
                sent = end
        if not stopped and len(text) > sent:
            yield text[sent:]
        worker.join()

    def _completion(self, ids: list[int], stop: tuple[str, ...]) -> Completion:
        end = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        kept = ids if end is None else ids[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        cut = _first_stop(text, stop)
        if cut is not None:  # generate stopped at the stop string; pad tokens may follow it
            return Completion(text[:cut].strip(), True, self._tokens_to_stop(kept, stop))
        return Completion(text=text.strip(), finished=end is not None, num_tokens=len(kept))

    def _tokens_to_stop(self, ids: list[int], stop: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text holds a stop string (binary search: once a
        prefix holds one, every longer prefix does)."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            text = self.tokenizer.decode(ids[:mid], skip_special_tokens=True)
            if _first_stop(text, stop) is None:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def close(self) -> None:
        del self.model
        gc.collect()


def _first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None
