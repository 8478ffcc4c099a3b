"""The instruction record every stage passes along."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


def instruction_id(instruction: str, input: str) -> str:
    """Content id: the same instruction text (with the same input) is the same item, whichever
    file or row it came from, so "never reuse an instruction" holds across duplicate rows."""
    digest = hashlib.sha256(f"{instruction}\x00{input}".encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class Instruction:
    id: str
    instruction: str
    input: str = ""
    reference: str | None = None  # the source's own answer, if it has one (RRHF can rank it)
    # IFEval-style constraints the response must meet, {"id": ..., "args": {...}} each (see
    # cut_loop/constraints); the text already asks for them. Left out of the hash: dicts are
    # unhashable, and the id (a hash of the text) already tells constrained instructions apart.
    constraints: tuple[dict[str, Any], ...] = field(default=(), hash=False)

    @classmethod
    def make(
        cls,
        instruction: str,
        input: str = "",
        reference: str | None = None,
        constraints: tuple[dict[str, Any], ...] = (),
    ) -> Instruction:
        return cls(instruction_id(instruction, input), instruction, input, reference, constraints)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["constraints"] = list(d["constraints"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instruction:
        """Read what `to_dict` wrote; files of runs older than constraints have no such key."""
        constraints = tuple(dict(c) for c in d.get("constraints") or ())
        return cls(d["id"], d["instruction"], d.get("input", ""), d.get("reference"), constraints)
