"""The IFEval checks cut_loop implements, each able to say what it measured.

A constraint is a plain, JSON-able dict `{"id": <IFEval instruction id>, "args": {...}}` (it is
stored in run files); the arg names are IFEval's kwargs names. Each check in `CHECKS` has
`describe(args)` (the sentence appended to an instruction, worded as IFEval's description),
`violation(response, args)` (None when satisfied, else ONE CUT-style critique sentence naming
what was measured and what was asked) and `sample_args(rng)` (arguments drawn like IFEval draws
them, in ranges a 135M chat model can sometimes meet).

Verdicts follow IFEval's `check_following` (google-research instruction_following_eval, as
vendored by the if-verifiable package) to the regex, with two deliberate differences: the case
checks run no language detection (IFEval's "in English" half, langdetect), and a keyword that
is not a valid regex is matched literally where IFEval would raise. In descriptions, word lists
read '"a" and "b"' instead of IFEval's Python list repr, and the end phrase is quoted. Not
implemented: sentence counts (IFEval needs nltk's punkt data) and language detection.
"""

from __future__ import annotations

import json
import random
import re
import string
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

Args = Mapping[str, Any]
RELATIONS = ("less than", "at least")
END_PHRASES = ("Any other questions?", "Is there anything else I can help with?")
POSTSCRIPT_MARKERS = ("P.S.", "P.P.S")
# IFEval draws keywords from a long list of random nouns; these are words an answer on almost
# any topic can work in. Forbidden words are ones small chat models use all the time (a random
# noun would be avoided by accident); none of them occurs in an END_PHRASE or KEYWORDS, so no
# two drawn constraints contradict each other.
KEYWORDS = ("example", "simple", "future", "reason", "people", "history", "nature", "balance",
            "energy", "journey", "idea", "challenge", "change", "world", "friend",
            "practice")  # fmt: skip
FORBIDDEN = ("very", "really", "important", "also", "many", "however", "great", "different",
             "good", "things", "like", "just")  # fmt: skip

_WORD = re.compile(r"\w+")  # nltk's RegexpTokenizer(r"\w+"), IFEval's count_words
_STAR_BULLET = re.compile(r"^\s*\*[^\*].*$", re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)
_DIVIDER = re.compile(r"\s?\*\*\*\s?")
_TITLE = re.compile(r"<<[^\n]+>>")
_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n\*]*\*\*")
_PUNCT = string.punctuation + "“”‘’«»"


class Check(Protocol):
    @property
    def id(self) -> str:
        """The IFEval instruction id, e.g. "punctuation:no_comma"."""

    @property
    def params(self) -> Mapping[str, Any]:
        """Arg name -> int (a count >= 0), str (non-empty), list (of non-empty strings), or a
        tuple of the allowed values; `problem_with` checks constraints against it."""

    def describe(self, args: Args) -> str: ...

    def violation(self, response: str, args: Args) -> str | None: ...

    def sample_args(self, rng: random.Random) -> dict[str, Any]: ...


def _count(n: int, noun: str) -> str:
    return f"no {noun}s" if n == 0 else f"{n} {noun}" + ("" if n == 1 else "s")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _listed(words: Sequence[str], conjunction: str) -> str:
    quoted = [f'"{w}"' for w in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


def _tail(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-limit:].lstrip()


def _titlecase(c: str) -> bool:
    # A letter like "ǅ" is neither upper nor lower case, and fails both case checks.
    return unicodedata.category(c) == "Lt"


def _word_with(text: str, bad: Callable[[str], bool]) -> str | None:
    """The first whitespace-separated word holding a character `bad` flags, for an example."""
    for word in text.split():
        if any(bad(c) for c in word):
            return (word.strip(_PUNCT) or word)[:30]
    return None


def _search(pattern: str, text: str) -> list[str]:
    # IFEval uses keywords as regexes; one that does not compile would raise there, here it is
    # matched literally.
    try:
        return re.findall(pattern, text, flags=re.IGNORECASE)
    except re.error:
        return re.findall(re.escape(pattern), text, flags=re.IGNORECASE)


class NumberOfWords:
    id = "length_constraints:number_words"
    params: ClassVar[Mapping[str, Any]] = {"num_words": int, "relation": RELATIONS}

    def describe(self, args: Args) -> str:
        return f"Answer with {args['relation']} {args['num_words']} words."

    def violation(self, response: str, args: Args) -> str | None:
        n, limit = len(_WORD.findall(response)), args["num_words"]
        if args["relation"] == "less than":
            if n < limit:
                return None
            asked = f"fewer than {limit} words"
        else:
            if n >= limit:
                return None
            asked = f"at least {limit} words"
        words = f"{n} word" + ("" if n == 1 else "s")
        return f"The response is {words} long; the instruction asks for {asked}."

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        # IFEval draws 100-500 words; a 135M model writes about 30-150.
        if rng.random() < 0.5:
            return {"num_words": rng.randrange(30, 151, 10), "relation": "less than"}
        return {"num_words": rng.randrange(20, 121, 10), "relation": "at least"}


class NoComma:
    id = "punctuation:no_comma"
    params: ClassVar[Mapping[str, Any]] = {}

    def describe(self, args: Args) -> str:
        return "In your entire response, refrain from the use of any commas."

    def violation(self, response: str, args: Args) -> str | None:
        n = response.count(",")
        if n == 0:
            return None
        commas = _count(n, "comma")
        return f"The response contains {commas}; the instruction asks for no commas at all."

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {}


class EnglishLowercase:
    id = "change_case:english_lowercase"
    params: ClassVar[Mapping[str, Any]] = {}

    def describe(self, args: Args) -> str:
        return (
            "Your entire response should be in English, and in all lowercase letters. "
            "No capital letters are allowed."
        )

    def violation(self, response: str, args: Args) -> str | None:
        if response.islower():
            return None
        example = _word_with(response, lambda c: c.isupper() or _titlecase(c))
        if example is None:  # no cased letter at all (str.islower needs one)
            return (
                "The response contains no lowercase letters at all; the instruction asks for "
                "all lowercase letters."
            )
        return (
            f'The response contains capital letters (e.g. "{example}"); the instruction asks '
            "for all lowercase letters."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {}


class EnglishCapital:
    id = "change_case:english_capital"
    params: ClassVar[Mapping[str, Any]] = {}

    def describe(self, args: Args) -> str:
        return "Your entire response should be in English, and in all capital letters."

    def violation(self, response: str, args: Args) -> str | None:
        if response.isupper():
            return None
        example = _word_with(response, lambda c: c.islower() or _titlecase(c))
        if example is None:
            return (
                "The response contains no capital letters at all; the instruction asks for all "
                "capital letters."
            )
        return (
            f'The response contains lowercase letters (e.g. "{example}"); the instruction asks '
            "for all capital letters."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {}


class KeywordsExist:
    id = "keywords:existence"
    params: ClassVar[Mapping[str, Any]] = {"keywords": list}

    def describe(self, args: Args) -> str:
        words = args["keywords"]
        noun = "the keyword" if len(words) == 1 else "keywords"
        return f"Include {noun} {_listed(words, 'and')} in the response."

    def violation(self, response: str, args: Args) -> str | None:
        wanted = args["keywords"]
        missing = [k for k in wanted if not _search(k, response)]
        if not missing:
            return None
        if len(missing) < len(wanted):
            asked = f"the instruction asks for {_listed(wanted, 'and')}"
        else:
            asked = f"the instruction asks to include {'it' if len(wanted) == 1 else 'them'}"
        noun = "keyword" if len(missing) == 1 else "keywords"
        return f"The response does not include the {noun} {_listed(missing, 'and')}; {asked}."

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"keywords": sorted(rng.sample(KEYWORDS, rng.randint(1, 2)))}


class ForbiddenWords:
    id = "keywords:forbidden_words"
    params: ClassVar[Mapping[str, Any]] = {"forbidden_words": list}

    def describe(self, args: Args) -> str:
        words = args["forbidden_words"]
        noun = "the keyword" if len(words) == 1 else "keywords"
        return f"Do not include {noun} {_listed(words, 'or')} in the response."

    def violation(self, response: str, args: Args) -> str | None:
        words = args["forbidden_words"]
        used = [(w, len(_search(rf"\b{w}\b", response))) for w in words]
        found = [f'"{w}" ({_times(n)})' for w, n in used if n]
        if not found:
            return None
        joined = found[0] if len(found) == 1 else f"{', '.join(found[:-1])} and {found[-1]}"
        noun = "word" if len(found) == 1 else "words"
        banned = "it" if len(words) == 1 else _listed(words, "or")
        return (
            f"The response uses the forbidden {noun} {joined}; the instruction asks not to "
            f"include {banned}."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"forbidden_words": sorted(rng.sample(FORBIDDEN, rng.randint(1, 2)))}


class Title:
    id = "detectable_format:title"
    params: ClassVar[Mapping[str, Any]] = {}

    def describe(self, args: Args) -> str:
        return (
            "Your answer must contain a title, wrapped in double angular brackets, such as "
            "<<poem of joy>>."
        )

    def violation(self, response: str, args: Args) -> str | None:
        if any(t.lstrip("<").rstrip(">").strip() for t in _TITLE.findall(response)):
            return None
        return (
            "The response has no title wrapped in double angular brackets; the instruction "
            "asks for one, such as <<poem of joy>>."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {}


class Quotation:
    id = "startend:quotation"
    params: ClassVar[Mapping[str, Any]] = {}

    def describe(self, args: Args) -> str:
        return "Wrap your entire response with double quotation marks."

    def violation(self, response: str, args: Args) -> str | None:
        text = response.strip()
        starts, ends = text.startswith('"'), text.endswith('"')
        if len(text) > 1 and starts and ends:
            return None
        if len(text) <= 1:
            found = "is empty" if not text else f'is the single character "{text}"'
        elif starts:
            found = "begins with a double quotation mark but does not end with one"
        elif ends:
            found = "ends with a double quotation mark but does not begin with one"
        else:
            found = "neither begins nor ends with a double quotation mark"
        return (
            f"The response {found}; the instruction asks for the entire response to be "
            "wrapped in double quotation marks."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {}


class JsonFormat:
    id = "detectable_format:json_format"
    params: ClassVar[Mapping[str, Any]] = {}

    def describe(self, args: Args) -> str:
        return (
            "Entire output should be wrapped in JSON format. You can use markdown ticks such "
            "as ```."
        )

    def violation(self, response: str, args: Args) -> str | None:
        text = response.strip()
        for fence in ("```json", "```Json", "```JSON", "```"):  # IFEval's chain of removals
            text = text.removeprefix(fence)
        text = text.removesuffix("```").strip()
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            why = f"{e.msg} at line {e.lineno} column {e.colno}"
        except (ValueError, RecursionError) as e:  # e.g. nesting too deep for the parser
            why = " ".join(str(e).split()) or type(e).__name__
        else:
            return None
        return (
            f"The response is not valid JSON ({why}); the instruction asks for the entire "
            "output wrapped in JSON format."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {}


class HighlightedSections:
    id = "detectable_format:number_highlighted_sections"
    params: ClassVar[Mapping[str, Any]] = {"num_highlights": int}

    def describe(self, args: Args) -> str:
        return (
            f"Highlight at least {args['num_highlights']} sections in your answer with "
            "markdown, i.e. *highlighted section*."
        )

    def violation(self, response: str, args: Args) -> str | None:
        single = [h for h in _HIGHLIGHT.findall(response) if h.strip("*").strip()]
        double = [
            h for h in _DOUBLE_HIGHLIGHT.findall(response)
            if h.removeprefix("**").removesuffix("**").strip()
        ]  # fmt: skip
        n, k = len(single) + len(double), args["num_highlights"]
        if n >= k:
            return None
        return (
            f"The response has {_count(n, 'highlighted section')}; the instruction asks for at "
            f"least {k}, marked with markdown like *highlighted section*."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"num_highlights": rng.randint(1, 3)}  # IFEval: 1-4


class Postscript:
    id = "detectable_content:postscript"
    params: ClassVar[Mapping[str, Any]] = {"postscript_marker": str}

    def describe(self, args: Args) -> str:
        marker = args["postscript_marker"].strip()
        end = "" if marker.endswith(".") else "."  # IFEval leaves "...with P.P.S" unfinished
        return (
            "At the end of your response, please explicitly add a postscript starting with "
            f"{marker}{end}"
        )

    def violation(self, response: str, args: Args) -> str | None:
        marker = args["postscript_marker"].strip()
        if marker == "P.P.S":
            pattern = r"\s*p\.\s?p\.\s?s.*$"
        elif marker == "P.S.":
            pattern = r"\s*p\.\s?s\..*$"
        else:
            pattern = r"\s*" + marker.lower() + r".*$"
        try:
            found = re.search(pattern, response.lower(), flags=re.MULTILINE)
        except re.error:
            found = re.search(re.escape(marker.lower()), response.lower())
        if found:
            return None
        return (
            f'The response has no postscript starting with "{marker}"; the instruction asks '
            "for one at the end of the response."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"postscript_marker": rng.choice(POSTSCRIPT_MARKERS)}


class EndPhrase:
    id = "startend:end_checker"
    params: ClassVar[Mapping[str, Any]] = {"end_phrase": str}

    def describe(self, args: Args) -> str:
        return (
            f'Finish your response with this exact phrase "{args["end_phrase"].strip()}". '
            "No other words should follow this phrase."
        )

    def violation(self, response: str, args: Args) -> str | None:
        phrase = args["end_phrase"].strip()
        # IFEval strips surrounding quotes first, so this combines with startend:quotation.
        if response.strip().strip('"').lower().endswith(phrase.lower()):
            return None
        if not response.strip():
            return (
                "The response is empty; the instruction asks it to end with the exact phrase "
                f'"{phrase}".'
            )
        return (
            f'The response does not end with the exact phrase "{phrase}"; it ends with '
            f'"{_tail(response)}".'
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"end_phrase": rng.choice(END_PHRASES)}


class NumberOfParagraphs:
    id = "length_constraints:number_paragraphs"
    params: ClassVar[Mapping[str, Any]] = {"num_paragraphs": int}

    def describe(self, args: Args) -> str:
        return (
            f"There should be {args['num_paragraphs']} paragraphs. Paragraphs are separated "
            "with the markdown divider: ***"
        )

    def violation(self, response: str, args: Args) -> str | None:
        parts, k = _DIVIDER.split(response), args["num_paragraphs"]
        if any(not p.strip() for p in parts[1:-1]):  # IFEval fails these outright
            return (
                "The response has an empty paragraph between two *** dividers; the instruction "
                f"asks for {k} paragraphs separated by ***."
            )
        n = len(parts) - (not parts[0].strip()) - (len(parts) > 1 and not parts[-1].strip())
        if n == k:
            return None
        return (
            f"The response has {_count(n, 'paragraph')} (counted between *** dividers); the "
            f"instruction asks for exactly {k}."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"num_paragraphs": rng.randint(2, 4)}  # IFEval: 1-5


class BulletPoints:
    id = "detectable_format:number_bullet_lists"
    params: ClassVar[Mapping[str, Any]] = {"num_bullets": int}

    def describe(self, args: Args) -> str:
        return (
            f"Your answer must contain exactly {args['num_bullets']} bullet points. Use the "
            "markdown bullet points such as:\n* This is point 1. \n* This is point 2"
        )

    def violation(self, response: str, args: Args) -> str | None:
        n = len(_STAR_BULLET.findall(response)) + len(_DASH_BULLET.findall(response))
        k = args["num_bullets"]
        if n == k:
            return None
        return (
            f"The response has {_count(n, 'bullet point')}; the instruction asks for exactly {k}."
        )

    def sample_args(self, rng: random.Random) -> dict[str, Any]:
        return {"num_bullets": rng.randint(2, 5)}  # IFEval: 1-5


# Registry order is the order descriptions are appended in: the paragraph and bullet
# descriptions end in markdown (a divider, an example list) and read best last.
CHECKS: dict[str, Check] = {
    c.id: c
    for c in (
        NumberOfWords(), NoComma(), EnglishLowercase(), EnglishCapital(), KeywordsExist(),
        ForbiddenWords(), Title(), Quotation(), JsonFormat(), HighlightedSections(),
        Postscript(), EndPhrase(), NumberOfParagraphs(), BulletPoints(),
    )
}  # fmt: skip


def describe(constraint: Mapping[str, Any]) -> str:
    """The sentence that asks for `constraint` (a valid constraint dict)."""
    return CHECKS[constraint["id"]].describe(constraint.get("args") or {})


def violations(response: str, constraints: Sequence[Mapping[str, Any]]) -> list[str]:
    """One critique sentence per constraint `response` violates, in the order given; empty
    when it satisfies them all. The constraints must be valid (see `problem_with`)."""
    found = (CHECKS[c["id"]].violation(response, c.get("args") or {}) for c in constraints)
    return [v for v in found if v is not None]


def problem_with(constraint: Any) -> str | None:
    """Why `constraint` is not a valid constraint dict (one line), or None when it is: a known
    id, and `args` with exactly that check's parameters, of the right kinds."""
    if not isinstance(constraint, Mapping) or not isinstance(constraint.get("id"), str):
        return 'a constraint must be an object {"id": "<IFEval instruction id>", "args": {...}}'
    cid, args = constraint["id"], constraint.get("args") or {}
    if cid not in CHECKS:
        return f"unknown constraint id {cid!r} (known: {', '.join(CHECKS)})"
    if not isinstance(args, Mapping):
        return f"constraint {cid!r}: args must be an object, got {type(args).__name__}"
    params = CHECKS[cid].params
    if set(args) != set(params):
        expected = ", ".join(params) or "none"
        return f"constraint {cid!r}: args {', '.join(args) or 'none'}, expected {expected}"
    for name, kind in params.items():
        value = args[name]
        if isinstance(kind, tuple):
            ok, what = value in kind, " or ".join(repr(k) for k in kind)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            what = "a whole number >= 0"
        elif kind is str:
            ok, what = isinstance(value, str) and bool(value.strip()), "a non-empty string"
        else:
            ok = isinstance(value, list) and bool(value)
            ok = ok and all(isinstance(w, str) and w.strip() for w in value)
            what = "a non-empty list of non-empty strings"
        if not ok:
            return f"constraint {cid!r}: {name} must be {what}, got {value!r}"
    return None
