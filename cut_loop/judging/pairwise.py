"""Pairwise comparison: the prompt an LLM judge gets to name the better of two outputs, and the
reading of its answer (AlpacaEval's format, "Output (a)" / "Output (b)").

A judge that can compare has `compare(pairs) -> list[Judgment]`: one judgment per pair, in
order, whose `score` is 1.0 when the judge prefers `first` and 0.0 when it prefers `second`
(verdict acceptable / unacceptable likewise, so the cache, budget and usage accounting of a
judgment carry over unchanged); failed when no preference could be read, twice.

A pairwise rubric file (judges/pairwise/<name>.yaml, or a path) holds `system`, `user` with
`{instruction}`, `{input}`, `{output_1}` and `{output_2}`, and optionally `reask`, `no_input`
and `description`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import Judgment
from cut_loop.judging.rubric import chat_messages, prompt_fingerprint, read_rubric_file
from cut_loop.templates import shipped_dir

_PLACEHOLDER = re.compile(r"\{(instruction|input|output_1|output_2)\}")
_CHOICE = re.compile(r"output\s*\(?\s*([ab])\s*\)?(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class PairItem:
    """Two outputs for one instruction; `first` is shown as Output (a)."""

    id: str
    instruction: str
    input: str
    first: str
    second: str


@dataclass(frozen=True)
class PairRubric:
    name: str
    system: str
    user: str
    reask: str = 'Reply with only "Output (a)" or "Output (b)".'
    no_input: str = "(none)"

    @property
    def fingerprint(self) -> str:
        """sha256 of the prompt text: a preference cached under one rubric is not reused under
        an edited one."""
        return prompt_fingerprint(self)

    def messages(self, pair: PairItem) -> list[dict[str, str]]:
        values = {
            "instruction": pair.instruction,
            "input": pair.input if pair.input.strip() else self.no_input,
            "output_1": pair.first,
            "output_2": pair.second,
        }
        return chat_messages(self.system, self.user, _PLACEHOLDER, values)


def load_pair_rubric(name: str) -> PairRubric:
    """judges/pairwise/<name>.yaml, or a path (anything with a slash or a .yaml suffix)."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(name).expanduser()
    else:
        path = shipped_dir("judges") / "pairwise" / f"{name}.yaml"
    if not path.is_file():
        raise CutLoopError(f"pairwise rubric {name!r}: {path} does not exist")
    data = read_rubric_file(path, "pairwise rubric", ())
    missing = [p for p in ("{output_1}", "{output_2}") if p not in data["user"]]
    if missing:
        raise CutLoopError(f"pairwise rubric {path}: `user` lacks {' and '.join(missing)}")
    extra = {k: str(data[k]) for k in ("reask", "no_input") if data.get(k) is not None}
    return PairRubric(name=str(path), system=data["system"], user=data["user"], **extra)


def parse_preference(text: str) -> str | None:
    """ "a" or "b" from an answer naming one output ("Output (b)", "output a", "**Output (a)**");
    None when it names neither or both."""
    named = {m.group(1).lower() for m in _CHOICE.finditer(text)}
    return named.pop() if len(named) == 1 else None


def preference_from_answer(id: str, text: str, usage: dict[str, float]) -> Judgment | None:
    """The judgment form of a preference (score 1.0: `first` preferred), or None if unread."""
    choice = parse_preference(text)
    if choice is None:
        return None
    if choice == "a":
        return Judgment.accept(id, 1.0, raw=text, usage=dict(usage))
    return Judgment.reject(id, "the other output is preferred", 0.0, raw=text, usage=dict(usage))
