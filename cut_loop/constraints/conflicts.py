"""Which constraints may not be asked for together, from IFEval's `INSTRUCTION_CONFLICTS`.

IFEval's table restricted to the ids in `CHECKS`, made symmetric as its `conflict_make` does,
every id conflicting with itself: lowercase vs capital letters, quotation marks vs a <<title>>,
and JSON output vs everything but the two keyword checks. Nothing is added: IFEval's end-phrase
check strips the quotes around a response first, so it combines with `startend:quotation`, and
the word lists in checks.py are disjoint from each other and from the end phrases.
"""

from __future__ import annotations

from cut_loop.constraints.checks import CHECKS

_KEYWORDS = {"keywords:existence", "keywords:forbidden_words"}
_IFEVAL = {
    "change_case:english_lowercase": {"change_case:english_capital"},
    "startend:quotation": {"detectable_format:title"},
    "detectable_format:json_format": set(CHECKS) - _KEYWORDS,
}


def _symmetric() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {cid: {cid} for cid in CHECKS}
    for a, others in _IFEVAL.items():
        for b in others:
            table[a].add(b)
            table[b].add(a)
    return {cid: frozenset(ids) for cid, ids in table.items()}


CONFLICTS: dict[str, frozenset[str]] = _symmetric()


def conflicts(a: str, b: str) -> bool:
    """True when constraints `a` and `b` (ids in `CHECKS`) may not share an instruction."""
    return b in CONFLICTS[a]
