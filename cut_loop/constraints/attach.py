"""`attach_constraints`: give each instruction IFEval-style constraints, deterministically.

Which checks are drawn is weighted (`WEIGHTS`) so that a demo's 64 instructions show a good mix:
word counts weigh most (IFEval's commonest family, and every critique carries a measured
number); all capitals, quotation marks and *** paragraphs weigh least (a 135M model almost
never manages them, so they mostly teach the same lesson); JSON weighs least too, because it
conflicts with everything but the keyword checks and would crowd the other checks out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from cut_loop.constraints.checks import CHECKS, describe
from cut_loop.constraints.conflicts import conflicts
from cut_loop.data.records import Instruction, instruction_id

WEIGHTS: dict[str, float] = {
    "length_constraints:number_words": 3,
    "punctuation:no_comma": 2,
    "change_case:english_lowercase": 2,
    "change_case:english_capital": 1,
    "keywords:existence": 2,
    "keywords:forbidden_words": 2,
    "detectable_format:title": 2,
    "startend:quotation": 1,
    "detectable_format:json_format": 1,
    "detectable_format:number_highlighted_sections": 2,
    "detectable_content:postscript": 2,
    "startend:end_checker": 2,
    "length_constraints:number_paragraphs": 1,
    "detectable_format:number_bullet_lists": 2,
}
assert set(WEIGHTS) == set(CHECKS), "every check needs a weight"


def attach_constraints(
    instructions: Sequence[Instruction], seed: int, max_per_instruction: int
) -> list[Instruction]:
    """Each instruction with 1..`max_per_instruction` non-conflicting constraints attached.

    Pure and deterministic: an instruction's draw depends only on its id and `seed`, never on
    its position, so it gets the same constraints in any pool order. The returned instruction's
    text is the original (trailing whitespace dropped) + " " + the constraints' descriptions
    (in `CHECKS` order), its `constraints` hold the dicts, its id is the content id of the new
    text and the same input, and it keeps the source's `reference` (which need not satisfy the
    constraints). Fewer than the number drawn are attached only when conflicts leave no check
    to add (JSON allows just the two keyword checks beside it). An instruction that already has
    constraints (e.g. an IFEval row) is returned as it is, and so is everything when
    `max_per_instruction` is 0.
    """
    if max_per_instruction < 0:
        raise ValueError(f"max_per_instruction must be >= 0, got {max_per_instruction}")
    if max_per_instruction == 0:
        return list(instructions)
    return [
        x if x.constraints else _constrained(x, seed, max_per_instruction) for x in instructions
    ]


def _constrained(item: Instruction, seed: int, most: int) -> Instruction:
    # A str seed is hashed with sha512 by random.Random: the same in every process (hash() is not).
    rng = random.Random(f"{seed}/constraints/{item.id}")
    chosen: list[str] = []
    for _ in range(rng.randint(1, most)):
        open_ids = [c for c in WEIGHTS if not any(conflicts(c, other) for other in chosen)]
        if not open_ids:
            break
        chosen += rng.choices(open_ids, weights=[WEIGHTS[c] for c in open_ids])
    order = list(CHECKS)
    constraints = tuple(
        {"id": cid, "args": CHECKS[cid].sample_args(rng)} for cid in sorted(chosen, key=order.index)
    )
    text = " ".join([item.instruction.rstrip(), *map(describe, constraints)])
    return replace(
        item, id=instruction_id(text, item.input), instruction=text, constraints=constraints
    )
