"""Our verdicts against IFEval's own `check_following` (Google's instructions.py, as vendored by
the if-verifiable package, a dev extra) on many answers, passing and failing, for every check.

IFEval's case checks also require English (langdetect); ours do not detect languages, so its
detector is stubbed to say "en" and only the part both implement is compared. None of the
checks compared needs nltk data (only sentence counts, which cut_loop lacks, need punkt)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from cut_loop.constraints.checks import CHECKS

registry = pytest.importorskip(
    "if_verifiable.ifeval.instructions_registry",
    reason="if-verifiable is not installed (it is in the dev extra, for Python 3.11+)",
)

ARGS: dict[str, list[dict[str, Any]]] = {
    "length_constraints:number_words": [
        {"num_words": n, "relation": r} for n in (1, 3, 8, 20) for r in ("less than", "at least")
    ],
    "detectable_format:number_bullet_lists": [{"num_bullets": n} for n in range(4)],
    "change_case:english_lowercase": [{}],
    "change_case:english_capital": [{}],
    "startend:end_checker": [
        {"end_phrase": "Any other questions?"},
        {"end_phrase": "Is there anything else I can help with?"},
    ],
    "punctuation:no_comma": [{}],
    "keywords:existence": [{"keywords": ["energy"]}, {"keywords": ["energy", "idea"]}],
    "keywords:forbidden_words": [
        {"forbidden_words": ["very"]},
        {"forbidden_words": ["really", "things"]},
    ],
    "length_constraints:number_paragraphs": [{"num_paragraphs": n} for n in (1, 2, 3)],
    "detectable_format:json_format": [{}],
    "detectable_format:title": [{}],
    "startend:quotation": [{}],
    "detectable_content:postscript": [{"postscript_marker": m} for m in ("P.S.", "P.P.S")],
    "detectable_format:number_highlighted_sections": [{"num_highlights": n} for n in (1, 2)],
}
ANSWERS = [
    "", " ", "the capital of france is paris.", "The capital of France is Paris.",
    "THE CAPITAL OF FRANCE IS PARIS.", "123 456", "Sure. Any other questions?",
    '"Paris. any other questions?"', "Any other questions? Yes.",
    "Can I help? Is there anything else I can help with?", "a, b, c", "No commas here",
    "An IDEA about Energy.", "Energetic people", "Very, very good. Really.", "Every veryfine thing",
    "***\na\n***\nb\n***\nc\n***", "a\n\nb\n\nc", "a\n***\n***\nb", "a *** b", "***",
    '```json\n{"a": [1, 2]}\n```', '{"a": 1}', "{'a': 1}", "```\n[1, 2]\n```", "42", "null",
    "Sure! ```json\n{}\n```", "<<Ode to Rain>>\nRain falls.", "<< >>", "<<a\nb>>",
    '"Hello there."', '"Hello', 'Hello"', '"', '""', "Text.\nP.S. See you.", "Text. PS see you",
    "P. S. hi", "p.p.s bye", "P.P.S. bye", "*one* and **two**", "*one* only, ** **", "* a\n* b",
    "- a\n- b\n  - c", "* a\n\n* b\n-", "-5 degrees\n* ok", "**bold** text", "*\nx",
]  # fmt: skip
PIECES = [
    "The quick brown fox.", "the lazy dog", "HELLO WORLD", "energy", "Energetic", "idea", "very",
    "Very", "everything", "really", "things", ",", "* bullet", "- dash", "*hi*", "**bold**",
    "** **", "***", " *** ", "P.S. note", "p. s. note", "P.P.S more", "PS no", "<<Title>>",
    "<< >>", '"', '"quoted"', "Any other questions?", "any other questions?",
    "Is there anything else I can help with?", '{"a": 1}', "```json", "```", "[1, 2]", "123",
    "", "-5 degrees", "Paris", "\t",
]  # fmt: skip


def fuzzed(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seps = [" ", "\n", "", "\n\n"]
    return [
        "".join(rng.choice(PIECES) + rng.choice(seps) for _ in range(rng.randint(1, 8)))
        for _ in range(n)
    ]


def test_every_check_agrees_with_ifeval(monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = pytest.importorskip("if_verifiable.ifeval.instructions")
    monkeypatch.setattr(instructions.langdetect, "detect", lambda text: "en")
    assert set(ARGS) == set(CHECKS) <= set(registry.INSTRUCTION_DICT)
    answers = ANSWERS + fuzzed(600)
    disagreements = []
    for cid, arg_sets in ARGS.items():
        verdicts = set()
        for args in arg_sets:
            theirs = registry.INSTRUCTION_DICT[cid](cid)
            theirs.build_description(**args)
            for answer in answers:
                ours = CHECKS[cid].violation(answer, args) is None
                verdicts.add(ours)
                if ours != theirs.check_following(answer):
                    disagreements.append((cid, args, answer, ours))
        assert verdicts == {True, False}, (
            f"{cid}: the answers never {'fail' if True in verdicts else 'pass'}"
        )
    assert disagreements == []
