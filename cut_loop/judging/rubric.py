"""Judge rubrics: the prompt an LLM judge gets (YAML in judges/ or anywhere on disk), and the
reading of the answer it asks for.

A rubric file holds:
- `system`: the system prompt;
- `user`: the user message template, with `{instruction}`, `{input}` and `{response}`
  placeholders (only these three are substituted, in one pass, so braces elsewhere, e.g. a JSON
  example, need no escaping, and a response that contains "{input}" stays as written);
- `reask` (optional): the follow-up sent once when the judge's answer cannot be parsed;
- `no_input` (optional): what `{input}` becomes when the item has no input (default "(none)").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import JudgeItem, Judgment
from cut_loop.templates import shipped_dir

_PLACEHOLDER = re.compile(r"\{(instruction|input|response)\}")
_DEFAULT_REASK = (
    'Your answer could not be read. Reply with only a JSON object: {"score": <integer from 1 '
    'to 10>, "critique": "<what is wrong, concretely, or \\"acceptable\\">"}.'
)


@dataclass(frozen=True)
class Rubric:
    name: str
    system: str
    user: str
    reask: str = _DEFAULT_REASK
    no_input: str = "(none)"

    @property
    def fingerprint(self) -> str:
        """sha256 of the prompt text: a judgment cached under one rubric is not reused under
        an edited one."""
        return prompt_fingerprint(self)

    def messages(self, item: JudgeItem) -> list[dict[str, str]]:
        """The chat messages asking for a judgment of `item`."""
        values = {
            "instruction": item.instruction,
            "input": item.input if item.input.strip() else self.no_input,
            "response": item.response,
        }
        return chat_messages(self.system, self.user, _PLACEHOLDER, values)


def rubric_path(name: str) -> Path:
    """A path as given (anything with a slash or a .yaml/.yml suffix), else judges/<name>.yaml."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        return Path(name).expanduser()
    return shipped_dir("judges") / f"{name}.yaml"


def load_rubric(name: str) -> Rubric:
    """Load a rubric by name (judges/<name>.yaml) or path; one-line CutLoopError when the file
    is missing, is not YAML, or lacks `system` / `user` / the `{response}` placeholder."""
    path = rubric_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in shipped_dir("judges").glob("*.yaml"))
        raise CutLoopError(
            f"rubric {name!r}: {path} does not exist (shipped rubrics: {', '.join(known)})"
        )
    data = read_rubric_file(path, "rubric", ("{response}",))
    extra = {k: str(data[k]) for k in ("reask", "no_input") if data.get(k) is not None}
    return Rubric(name=str(path), system=data["system"], user=data["user"], **extra)


def read_rubric_file(path: Path, kind: str, placeholders: tuple[str, ...]) -> dict[str, Any]:
    """A rubric file's mapping, checked: YAML, `system` and `user` text, no unknown key, and
    every one of `placeholders` in `user`; else one line starting with `{kind} {path}:`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CutLoopError(f"{kind} {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise CutLoopError(f"{kind} {path}: expected a mapping with `system` and `user` keys")
    missing = [k for k in ("system", "user") if not isinstance(data.get(k), str)]
    if missing:
        raise CutLoopError(f"{kind} {path}: missing or non-text key(s): {', '.join(missing)}")
    unknown = sorted(set(data) - {"system", "user", "reask", "no_input", "description"})
    if unknown:
        raise CutLoopError(f"{kind} {path}: unknown key(s): {', '.join(unknown)}")
    absent = [p for p in placeholders if p not in data["user"]]
    if absent:
        raise CutLoopError(
            f"{kind} {path}: the `user` template has no {' and no '.join(absent)} placeholder"
        )
    return data


def prompt_fingerprint(rubric: Any) -> str:
    """sha256 of a rubric dataclass's prompt text (every field but `name`): an answer cached
    under one rubric is not reused under an edited one."""
    fields = {k: v for k, v in asdict(rubric).items() if k != "name"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def chat_messages(
    system: str, user: str, placeholder: re.Pattern[str], values: dict[str, str]
) -> list[dict[str, str]]:
    """The system message and `user` with each placeholder replaced in one pass (so a value
    that itself contains "{input}" stays as written)."""
    text = placeholder.sub(lambda m: values[m.group(1)], user)
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


# --- reading the judge's answer --------------------------------------------------------------
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
_NUMBER = r"(\d+(?:\.\d+)?)"
_SCORE_PATTERNS = [
    re.compile(
        r"\b(?:score|rating|grade)\b[\s\"'*:=]*(?:is|of)?\s*"
        + _NUMBER
        + r"(?:\s*(?:/|out of)\s*10)?",
        re.I,
    ),
    re.compile(r"\b" + _NUMBER + r"\s*(?:/|out of)\s*10\b", re.I),
]
_CRITIQUE = re.compile(r"\b(?:critique|judgment|judgement|feedback)\b\s*[\"'*]*\s*[:=]\s*", re.I)
_CRITIQUE_KEYS = ("critique", "judgment", "judgement", "feedback", "explanation")


def parse_answer(text: str) -> tuple[float, str | None] | None:
    """(score, critique) from a judge's answer, or None when it has no score in 1..10.

    Reads a JSON object ({"score": 8, "critique": "..."}, also inside ``` fences or prose),
    else "Score: 8" / "Rating: 3/10" / "8/10" / "3 out of 10" with the critique after a
    "Critique:" label or, failing that, the rest of the text. A critique of "acceptable" (or
    an empty one) comes back as None.
    """
    text = _FENCE.sub("", text.strip())
    score: Any = None
    critique: Any = None
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            score = obj.get("score", obj.get("rating"))
            critique = next((obj[k] for k in _CRITIQUE_KEYS if obj.get(k) is not None), None)
    if score is None:
        for pattern in _SCORE_PATTERNS:
            m = pattern.search(text)
            if m:
                score = m.group(1)
                label = _CRITIQUE.search(text)
                if label:
                    critique = text[label.end() :]
                else:  # the prose around the score is the critique
                    rest = text[: m.start()] + " " + text[m.end() :]
                    critique = re.sub(r"^[\s.:;,*#-]+|[\s:;,*#-]+$", "", rest)
                break
    try:
        value = float(str(score).split("/")[0])
    except ValueError:
        return None
    if not 1 <= value <= 10:
        return None
    critique = " ".join(str(critique).split()).strip("\"' ") if critique is not None else ""
    if critique.lower().rstrip(".!") in {"", "acceptable", "none", "n/a"}:
        return value, None
    return value, critique


def judgment_from_answer(
    id: str, text: str, acceptable_score: float, usage: dict[str, float]
) -> Judgment | None:
    """The judgment an LLM judge's answer states: acceptable when its score is at least
    `acceptable_score`, else unacceptable with its critique. None when it states none (no score
    in 1..10, or a failing score without a critique: CUT cannot train on an unexplained
    rejection); the caller then re-asks once, then fails the item."""
    parsed = parse_answer(text)
    if parsed is None:
        return None
    score, critique = parsed
    if score >= acceptable_score:
        return Judgment.accept(id, score, raw=text, usage=dict(usage))
    if not critique:
        return None
    return Judgment.reject(id, critique, score, raw=text, usage=dict(usage))
