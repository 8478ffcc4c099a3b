"""IFEval-style constraints: every check passes and fails with its exact critique, the
descriptions, the conflict table, deterministic attachment, and Instruction records."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from cut_loop.constraints.attach import WEIGHTS, attach_constraints
from cut_loop.constraints.checks import CHECKS, describe, problem_with, violations
from cut_loop.constraints.conflicts import CONFLICTS, conflicts
from cut_loop.data.records import Instruction, instruction_id


def c(cid: str, **args: Any) -> dict[str, Any]:
    return {"id": cid, "args": args}


WORDS = "length_constraints:number_words"
BULLETS = "detectable_format:number_bullet_lists"
LOWER = "change_case:english_lowercase"
CAPITAL = "change_case:english_capital"
END = "startend:end_checker"
COMMA = "punctuation:no_comma"
KEYWORDS = "keywords:existence"
FORBIDDEN = "keywords:forbidden_words"
PARAGRAPHS = "length_constraints:number_paragraphs"
JSON = "detectable_format:json_format"
TITLE = "detectable_format:title"
QUOTE = "startend:quotation"
PS = "detectable_content:postscript"
HIGHLIGHTS = "detectable_format:number_highlighted_sections"
FAR = "The capital of France is Paris. It is a lovely city to visit in spring."

# (constraint, a response that satisfies it, one that does not, the critique for that one)
CASES = [
    (c(WORDS, num_words=50, relation="less than"), "A short answer.", " ".join(["word"] * 84),
     "The response is 84 words long; the instruction asks for fewer than 50 words."),
    (c(WORDS, num_words=3, relation="less than"), "Two words", "one, two; three!",
     "The response is 3 words long; the instruction asks for fewer than 3 words."),
    (c(WORDS, num_words=5, relation="at least"), "one two three four five", "Too short.",
     "The response is 2 words long; the instruction asks for at least 5 words."),
    (c(BULLETS, num_bullets=3), "Points:\n* a\n* b\n- c", "\n".join(["* point"] * 7),
     "The response has 7 bullet points; the instruction asks for exactly 3."),
    (c(BULLETS, num_bullets=2), "  * a\n  - b", "* only one",
     "The response has 1 bullet point; the instruction asks for exactly 2."),
    (c(BULLETS, num_bullets=2), "- a\n- b", "**Bold** is not a bullet.",
     "The response has no bullet points; the instruction asks for exactly 2."),
    (c(LOWER), "the capital of france is paris.", "the capital of france is Paris.",
     'The response contains capital letters (e.g. "Paris"); the instruction asks for all '
     "lowercase letters."),
    (c(LOWER), "ok 123", "123 456",
     "The response contains no lowercase letters at all; the instruction asks for all "
     "lowercase letters."),
    (c(CAPITAL), "THE CAPITAL IS PARIS.", "THE CAPITAL IS (paris).",
     'The response contains lowercase letters (e.g. "paris"); the instruction asks for all '
     "capital letters."),
    (c(CAPITAL), "OK 123", "", "The response contains no capital letters at all; the "
     "instruction asks for all capital letters."),
    (c(END, end_phrase="Any other questions?"), '"Paris. any other questions?"  ', FAR,
     'The response does not end with the exact phrase "Any other questions?"; it ends with '
     '"...It is a lovely city to visit in spring.".'),
    (c(END, end_phrase="Any other questions?"), "Any other questions?", "  ",
     'The response is empty; the instruction asks it to end with the exact phrase '
     '"Any other questions?".'),
    (c(COMMA), "No commas here.", "a, b, c, d",
     "The response contains 3 commas; the instruction asks for no commas at all."),
    (c(COMMA), "", "Yes, indeed.",
     "The response contains 1 comma; the instruction asks for no commas at all."),
    (c(KEYWORDS, keywords=["energy", "idea"]), "An IDEA about Energy.", "An idea.",
     'The response does not include the keyword "energy"; the instruction asks for "energy" '
     'and "idea".'),
    (c(KEYWORDS, keywords=["energy"]), "Energetic energy.", "Power.",
     'The response does not include the keyword "energy"; the instruction asks to include it.'),
    (c(FORBIDDEN, forbidden_words=["really", "very"]), "Everything is fine.",
     "Very, very good. Really.",
     'The response uses the forbidden words "really" (once) and "very" (twice); the '
     'instruction asks not to include "really" or "very".'),
    (c(FORBIDDEN, forbidden_words=["very"]), "Every veryfine thing.", "Very nice.",
     'The response uses the forbidden word "very" (once); the instruction asks not to include '
     "it."),
    (c(PARAGRAPHS, num_paragraphs=3), "***\na\n***\nb\n***\nc\n***", "a\n\nb\n\nc",
     "The response has 1 paragraph (counted between *** dividers); the instruction asks for "
     "exactly 3."),
    (c(PARAGRAPHS, num_paragraphs=3), "a *** b *** c", "a\n***\n***\nb",
     "The response has an empty paragraph between two *** dividers; the instruction asks for "
     "3 paragraphs separated by ***."),
    (c(JSON), '```json\n{"a": [1, 2]}\n```', "{'a': 1}",
     "The response is not valid JSON (Expecting property name enclosed in double quotes at "
     "line 1 column 2); the instruction asks for the entire output wrapped in JSON format."),
    (c(JSON), ' {"a": 1} ', "Sure! ```json\n{}\n```",
     "The response is not valid JSON (Expecting value at line 1 column 1); the instruction "
     "asks for the entire output wrapped in JSON format."),
    (c(TITLE), "<<Ode to Rain>>\nRain falls.", "Ode to Rain\n<< >>",
     "The response has no title wrapped in double angular brackets; the instruction asks for "
     "one, such as <<poem of joy>>."),
    (c(QUOTE), ' "Hello there." ', "Hello there.",
     "The response neither begins nor ends with a double quotation mark; the instruction asks "
     "for the entire response to be wrapped in double quotation marks."),
    (c(QUOTE), '""', '"Hello there.',
     "The response begins with a double quotation mark but does not end with one; the "
     "instruction asks for the entire response to be wrapped in double quotation marks."),
    (c(QUOTE), '"x"', 'He said "hi"',
     "The response ends with a double quotation mark but does not begin with one; the "
     "instruction asks for the entire response to be wrapped in double quotation marks."),
    (c(QUOTE), '"x"', '"',
     'The response is the single character """; the instruction asks for the entire response '
     "to be wrapped in double quotation marks."),
    (c(PS, postscript_marker="P.S."), "Text.\nP. S. See you.", "Text. PS see you.",
     'The response has no postscript starting with "P.S."; the instruction asks for one at '
     "the end of the response."),
    (c(PS, postscript_marker="P.P.S"), "Text.\np.p.s bye", "Text.\nP.S. bye",
     'The response has no postscript starting with "P.P.S"; the instruction asks for one at '
     "the end of the response."),
    (c(HIGHLIGHTS, num_highlights=2), "*one* and **two**", "*one* only, ** **",
     "The response has 1 highlighted section; the instruction asks for at least 2, marked "
     "with markdown like *highlighted section*."),
    (c(HIGHLIGHTS, num_highlights=1), "*x*", "* bullet\n* bullet",
     "The response has no highlighted sections; the instruction asks for at least 1, marked "
     "with markdown like *highlighted section*."),
]  # fmt: skip


@pytest.mark.parametrize(("constraint", "good", "bad", "critique"), CASES)
def test_each_check_passes_and_fails_with_a_concrete_critique(
    constraint: dict[str, Any], good: str, bad: str, critique: str
) -> None:
    assert problem_with(constraint) is None
    assert violations(good, [constraint]) == []
    assert violations(bad, [constraint]) == [critique]


def test_every_check_is_covered_by_a_case() -> None:
    assert {case[0]["id"] for case in CASES} == set(CHECKS)


def test_violations_keeps_the_order_given() -> None:
    both = [c(COMMA), c(WORDS, num_words=2, relation="less than")]
    assert violations("Yes, indeed.", both) == [
        "The response contains 1 comma; the instruction asks for no commas at all.",
        "The response is 2 words long; the instruction asks for fewer than 2 words.",
    ]
    assert violations("Yes, indeed.", both[::-1])[0].startswith("The response is 2 words")


def test_descriptions_are_ifevals_sentences() -> None:
    assert [describe(x) for x in (
        c(WORDS, num_words=50, relation="less than"), c(WORDS, num_words=80, relation="at least"),
        c(BULLETS, num_bullets=3), c(LOWER), c(CAPITAL), c(END, end_phrase="Any other questions?"),
        c(COMMA), c(KEYWORDS, keywords=["energy"]), c(KEYWORDS, keywords=["energy", "idea"]),
        c(FORBIDDEN, forbidden_words=["very"]), c(FORBIDDEN, forbidden_words=["also", "very"]),
        c(PARAGRAPHS, num_paragraphs=3), c(JSON), c(TITLE), c(QUOTE),
        c(PS, postscript_marker="P.S."), c(PS, postscript_marker="P.P.S"),
        c(HIGHLIGHTS, num_highlights=2),
    )] == [
        "Answer with less than 50 words.",
        "Answer with at least 80 words.",
        "Your answer must contain exactly 3 bullet points. Use the markdown bullet points such "
        "as:\n* This is point 1. \n* This is point 2",
        "Your entire response should be in English, and in all lowercase letters. No capital "
        "letters are allowed.",
        "Your entire response should be in English, and in all capital letters.",
        'Finish your response with this exact phrase "Any other questions?". No other words '
        "should follow this phrase.",
        "In your entire response, refrain from the use of any commas.",
        'Include the keyword "energy" in the response.',
        'Include keywords "energy" and "idea" in the response.',
        'Do not include the keyword "very" in the response.',
        'Do not include keywords "also" or "very" in the response.',
        "There should be 3 paragraphs. Paragraphs are separated with the markdown divider: ***",
        "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```.",
        "Your answer must contain a title, wrapped in double angular brackets, such as "
        "<<poem of joy>>.",
        "Wrap your entire response with double quotation marks.",
        "At the end of your response, please explicitly add a postscript starting with P.S.",
        "At the end of your response, please explicitly add a postscript starting with P.P.S.",
        "Highlight at least 2 sections in your answer with markdown, i.e. *highlighted section*.",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("constraint", "problem"),
    [
        ("no_comma", 'a constraint must be an object {"id": "<IFEval instruction id>", '),
        (c("language:response_language", language="en"), "unknown constraint id "
         "'language:response_language' (known: length_constraints:number_words, "),
        ({"id": WORDS, "args": [50]}, f"constraint '{WORDS}': args must be an object, got list"),
        (c(WORDS, num_words=50), f"constraint '{WORDS}': args num_words, expected num_words, "
         "relation"),
        (c(COMMA, n=1), f"constraint '{COMMA}': args n, expected none"),
        (c(WORDS, num_words=50, relation="more than"),
         f"constraint '{WORDS}': relation must be 'less than' or 'at least', got 'more than'"),
        (c(BULLETS, num_bullets=True), f"constraint '{BULLETS}': num_bullets must be a whole "
         "number >= 0, got True"),
        (c(END, end_phrase=" "), f"constraint '{END}': end_phrase must be a non-empty string"),
        (c(KEYWORDS, keywords=[]), f"constraint '{KEYWORDS}': keywords must be a non-empty list"),
        (c(KEYWORDS, keywords="energy"), f"constraint '{KEYWORDS}': keywords must be a "),
    ],
)  # fmt: skip
def test_problem_with_says_what_is_wrong(constraint: Any, problem: str) -> None:
    found = problem_with(constraint)
    assert found is not None and found.startswith(problem) and "\n" not in found
    assert problem_with({"id": COMMA}) is None  # args may be left out when there are none


def test_a_keyword_that_is_not_a_regex_is_matched_literally() -> None:
    assert violations("Plot f(x for x > 0.", [c(KEYWORDS, keywords=["f(x"])]) == []
    assert violations("Plot fx for x > 0.", [c(KEYWORDS, keywords=["f(x"])]) != []


def test_json_nested_too_deep_is_a_violation_not_a_crash() -> None:
    [critique] = violations("[" * 100_000, [c(JSON)])
    assert critique.startswith("The response is not valid JSON (")


# --- conflicts -----------------------------------------------------------------------------


def test_conflict_table_is_ifevals_made_symmetric() -> None:
    for a, b in itertools.product(CHECKS, repeat=2):
        assert conflicts(a, b) == conflicts(b, a)
    assert all(conflicts(a, a) for a in CHECKS)
    assert conflicts(LOWER, CAPITAL) and conflicts(QUOTE, TITLE)
    assert CONFLICTS[JSON] == set(CHECKS) - {KEYWORDS, FORBIDDEN}
    # IFEval's end checker strips the quotes around a response, so these combine
    assert not conflicts(QUOTE, END) and not conflicts(LOWER, END)
    pairs = {frozenset((a, b)) for a in CHECKS for b in CONFLICTS[a] if a != b}
    assert len(pairs) == 2 + len(CHECKS) - 3  # lower/capital, quote/title, JSON with 11 others


# --- attach_constraints --------------------------------------------------------------------

POOL = [Instruction.make(f"Write about topic {i}.", "", f"Reference {i}.") for i in range(2000)]


def test_attach_is_deterministic_per_seed_and_independent_of_pool_order() -> None:
    a = attach_constraints(POOL[:300], seed=0, max_per_instruction=3)
    assert a == attach_constraints(POOL[:300], seed=0, max_per_instruction=3)
    other = attach_constraints(POOL[:300], seed=1, max_per_instruction=3)
    assert sum(x.constraints != y.constraints for x, y in zip(a, other, strict=True)) > 200
    shuffled = POOL[:300]
    random.Random(5).shuffle(shuffled)
    by_id = {x.id: x for x in attach_constraints(shuffled, seed=0, max_per_instruction=3)}
    assert [by_id[x.id] for x in a] == a  # the same instruction, the same constraints


def test_attach_zero_is_the_identity_and_negative_is_an_error() -> None:
    assert attach_constraints(POOL[:10], seed=0, max_per_instruction=0) == POOL[:10]
    with pytest.raises(ValueError, match="max_per_instruction must be >= 0"):
        attach_constraints(POOL[:10], seed=0, max_per_instruction=-1)


def test_attached_instructions_read_and_hash_as_documented() -> None:
    out = attach_constraints(POOL, seed=3, max_per_instruction=4)
    counts = set()
    for old, new in zip(POOL, out, strict=True):
        assert 1 <= len(new.constraints) <= 4
        counts.add(len(new.constraints))
        assert all(problem_with(x) is None for x in new.constraints)
        ids = [x["id"] for x in new.constraints]
        assert ids == sorted(ids, key=list(CHECKS).index)  # descriptions in CHECKS order
        assert new.instruction == " ".join([old.instruction, *map(describe, new.constraints)])
        assert new.id == instruction_id(new.instruction, old.input) != old.id
        assert (new.input, new.reference) == (old.input, old.reference)
        assert json.loads(json.dumps(new.to_dict())) == new.to_dict()  # JSON-able
    assert counts == {1, 2, 3, 4}


def test_conflicting_constraints_are_never_drawn_together() -> None:
    out = attach_constraints(POOL, seed=0, max_per_instruction=5)
    drawn = [x["id"] for item in out for x in item.constraints]
    for item in out:
        for a, b in itertools.combinations([x["id"] for x in item.constraints], 2):
            assert not conflicts(a, b), (a, b)
    assert set(drawn) == set(CHECKS)  # every check turns up
    assert drawn.count(WORDS) > drawn.count(CAPITAL)  # weighted
    assert set(WEIGHTS) == set(CHECKS)


def test_an_instruction_with_constraints_keeps_its_own() -> None:
    own = Instruction.make("Say hi, no commas.", constraints=(c(COMMA),))
    assert attach_constraints([own], seed=0, max_per_instruction=3) == [own]


# --- records -------------------------------------------------------------------------------


def test_instruction_records_round_trip_with_and_without_constraints() -> None:
    plain = Instruction.make("Name a color.", "", "Blue.")
    constrained = Instruction.make("Name a color.", "", None, (c(WORDS, num_words=5,
                                   relation="less than"), c(COMMA)))  # fmt: skip
    for x in (plain, constrained):
        d = json.loads(json.dumps(x.to_dict()))
        assert Instruction.from_dict(d) == x
        hash(x)  # constraints hold dicts, but instructions stay hashable
    assert plain.to_dict()["constraints"] == []
    assert constrained.to_dict()["constraints"][0] == c(WORDS, num_words=5, relation="less than")
    old = {"id": plain.id, "instruction": "Name a color.", "input": "", "reference": "Blue."}
    assert Instruction.from_dict(old) == plain  # runs from before constraints still load
