"""Fresh sampling: the held-out eval set, and each round's sample of never-used instructions.

Both are pure functions of (pool, seed, round, what was used before), so a re-run reproduces
them; the loop persists what they return before anything is spent on it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from cut_loop.data.records import Instruction
from cut_loop.errors import CutLoopError


def _rng(seed: int, *salt: object) -> random.Random:
    # random.Random seeds str deterministically (sha512), unlike hash(), across processes.
    return random.Random("/".join(map(str, (seed, *salt))))


def choose_eval_set(pool: Sequence[Instruction], size: int, seed: int) -> list[Instruction]:
    """The fixed held-out set; it is reserved, so no round ever trains on it."""
    if size > len(pool):
        raise CutLoopError(
            f"eval.size={size} but the instruction source has only {len(pool)} instructions"
        )
    return _rng(seed, "eval").sample(list(pool), size)


def unused(pool: Sequence[Instruction], used_ids: Collection[str]) -> list[Instruction]:
    return [x for x in pool if x.id not in used_ids]


def sample_round(
    pool: Sequence[Instruction], used_ids: Collection[str], size: int, seed: int, round: int
) -> list[Instruction]:
    """`size` instructions never used before (not by earlier rounds, not by the eval set)."""
    fresh = unused(pool, used_ids)
    if len(fresh) < size:
        raise CutLoopError(
            f"data.instructions: only {len(fresh)} unused instructions left for round {round},"
            f" which needs data.per_round={size}"
        )
    return _rng(seed, "round", round).sample(fresh, size)
