"""Instruction sources: Stanford Alpaca on the Hub, the packaged demo set, or a local file.

`load_instructions(source)` is the only entry point. Every problem a user can fix (no network, a
missing or malformed file, a row without an instruction) is raised as a one-line `CutLoopError`
that names the file and, where there is one, the line or row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cut_loop.constraints.checks import CHECKS, problem_with
from cut_loop.data.records import Instruction
from cut_loop.errors import CutLoopError

ALPACA = "alpaca"
ALPACA_HUB_ID = "tatsu-lab/alpaca"
DEMO = "demo"
DEMO_PATH = Path(__file__).with_name("demo_instructions.jsonl")
SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")
OFFLINE_HINT = (
    "pass a local file instead: --instructions path/to/file.jsonl, or --instructions demo"
)

# A row is yielded with where it came from ("data.jsonl:12", "data.json: row 3"), so that every
# error about it can point the user at the exact place to fix.
Located = tuple[str, Any]


def load_instructions(source: str) -> list[Instruction]:
    """Load instructions from `source`: "alpaca", "demo", or a .json/.jsonl/.parquet/.csv path.

    Rows need a non-empty string `instruction`; `input` (string or null) is optional, `output`
    becomes `Instruction.reference`, `constraints` (a list of {"id", "args"} with ids from
    cut_loop/constraints/checks.py; JSON text in a CSV cell) becomes `Instruction.constraints`
    (the instruction text should ask for them: it is used as written), other fields are ignored.
    Rows of IFEval's input_data.jsonl (`prompt`, `instruction_id_list`, `kwargs`, no
    `instruction`) become the prompt with the constraints among its instruction ids that
    cut_loop checks (the others, e.g. sentence counts and languages, are dropped: the prompt
    still asks for them, but no judge here verifies them). Rows with the same content id are
    kept once (the first wins) and the order of the source is preserved. Raises `CutLoopError`
    (one line, naming the file and line/row) for anything wrong with the source.
    """
    if source == ALPACA:
        rows = _alpaca_rows()
    elif source == DEMO:
        rows = _jsonl_rows(DEMO_PATH)
    else:
        rows = _file_rows(Path(source))
    return _dedupe(_to_instruction(where, row) for where, row in rows)


def _alpaca_rows() -> Iterator[Located]:
    # Imported here, not at the top: `datasets` takes about a second to import, which the demo and
    # local-file paths (and their tests) should not pay.
    import datasets

    try:
        dataset = datasets.load_dataset(ALPACA_HUB_ID, split="train")
    except Exception as exc:  # network failures arrive as many unrelated types
        cause = _one_line(f"{type(exc).__name__}: {exc}")
        raise CutLoopError(
            f"{ALPACA_HUB_ID}: could not reach the Hugging Face Hub ({cause}); {OFFLINE_HINT}"
        ) from exc
    for index, row in enumerate(dataset):
        yield f"{ALPACA_HUB_ID}: row {index}", row


def _file_rows(path: Path) -> Iterator[Located]:
    """Check the file as a whole (exists, known kind, not empty), then hand it to its reader."""
    if not path.exists():
        raise CutLoopError(
            f"{path}: no such file (use '{ALPACA}', '{DEMO}', or a path ending in "
            f"{', '.join(SUFFIXES)})"
        )
    if path.is_dir():
        raise CutLoopError(f"{path}: is a directory, expected a {', '.join(SUFFIXES)} file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CutLoopError(
            f"{path}: unknown extension '{path.suffix}' (expected {', '.join(SUFFIXES)})"
        )
    if path.stat().st_size == 0:
        raise CutLoopError(f"{path}: file is empty")
    reader = {
        ".json": _json_rows,
        ".jsonl": _jsonl_rows,
        ".parquet": _parquet_rows,
        ".csv": _csv_rows,
    }[suffix]
    rows = list(reader(path))
    if not rows:
        raise CutLoopError(f"{path}: file has no rows")
    return iter(rows)


def _read_text(path: Path) -> str:
    # utf-8-sig: files saved by Excel and some Windows editors start with a byte-order mark.
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CutLoopError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def _json_rows(path: Path) -> Iterator[Located]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise CutLoopError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg}, column {exc.colno})"
        ) from exc
    if not isinstance(data, list):
        raise CutLoopError(f"{path}: top level must be a JSON list of rows, got {_type_name(data)}")
    for index, row in enumerate(data):
        yield f"{path}: row {index}", row


def _jsonl_rows(path: Path) -> Iterator[Located]:
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (often a trailing one) are not rows
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CutLoopError(
                f"{path}:{lineno}: malformed JSON ({exc.msg}, column {exc.colno})"
            ) from exc
        yield f"{path}:{lineno}", row


def _csv_rows(path: Path) -> Iterator[Located]:
    reader = csv.DictReader(_read_text(path).splitlines(keepends=True))
    if reader.fieldnames is None or "instruction" not in reader.fieldnames:
        raise CutLoopError(f"{path}:1: header has no 'instruction' column")
    for row in reader:
        # An empty cell reads as "", which `_to_instruction` treats as an absent input/reference.
        # line_num is the line the row ends on (the same line unless a quoted cell spans lines).
        yield f"{path}:{reader.line_num}", row


def _parquet_rows(path: Path) -> Iterator[Located]:
    import pyarrow.parquet as pq  # only parquet sources need pyarrow

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for bad files
        raise CutLoopError(f"{path}: not a readable parquet file ({_one_line(str(exc))})") from exc
    for index, row in enumerate(table.to_pylist()):
        yield f"{path}: row {index}", row


def _to_instruction(where: str, row: Any) -> Instruction:
    """Validate one row; `where` names its file and line/row for the error message."""
    if not isinstance(row, dict):
        raise CutLoopError(
            f"{where}: expected an object with an 'instruction', got {_type_name(row)}"
        )
    if "instruction" not in row and "instruction_id_list" in row:
        return _ifeval_instruction(where, row)
    if "instruction" not in row or row["instruction"] is None:
        raise CutLoopError(f"{where}: row has no 'instruction' field")
    instruction = row["instruction"]
    if not isinstance(instruction, str):
        raise CutLoopError(
            f"{where}: 'instruction' must be a string, got {_type_name(instruction)}"
        )
    if not instruction.strip():
        raise CutLoopError(f"{where}: row has an empty 'instruction'")
    input_text = row.get("input")
    if input_text is not None and not isinstance(input_text, str):
        raise CutLoopError(
            f"{where}: 'input' must be a string or null, got {_type_name(input_text)}"
        )
    reference = row.get("output")
    if reference is not None and not isinstance(reference, str):
        raise CutLoopError(
            f"{where}: 'output' must be a string or null, got {_type_name(reference)}"
        )
    constraints = _constraints(where, row.get("constraints"))
    # The text is kept exactly as written: the content id hashes it, so stripping here would give
    # the same instruction a different id than another file holding it.
    return Instruction.make(instruction, input_text or "", reference or None, constraints)


def _ifeval_instruction(where: str, row: dict[str, Any]) -> Instruction:
    """A row of IFEval's input_data.jsonl: `prompt`, with `kwargs[i]` the args of
    `instruction_id_list[i]` (IFEval's kwargs names are ours)."""
    prompt, ids, kwargs = row.get("prompt"), row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(prompt, str) or not prompt.strip():
        raise CutLoopError(f"{where}: IFEval row needs a non-empty string 'prompt'")
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise CutLoopError(
            f"{where}: IFEval row needs 'instruction_id_list' and 'kwargs' lists of one length"
        )
    known = [{"id": i, "args": k} for i, k in zip(ids, kwargs, strict=True) if i in CHECKS]
    return Instruction.make(prompt, "", None, _constraints(where, known))


def _constraints(where: str, value: Any) -> tuple[dict[str, Any], ...]:
    """A row's constraints, each checked by `problem_with` and normalized to {"id", "args"}."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):  # a CSV cell
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CutLoopError(f"{where}: 'constraints' is not valid JSON ({exc.msg})") from exc
    if not isinstance(value, list):
        raise CutLoopError(
            f"{where}: 'constraints' must be a list of objects with an 'id' and 'args', "
            f"got {_type_name(value)}"
        )
    out = []
    for constraint in value:
        if isinstance(constraint, dict):
            args = constraint.get("args") or {}
            if isinstance(args, dict):
                # Parquet gives every row's args each field seen in the column (null where
                # absent), and so does the Hub copy of IFEval's kwargs.
                args = {k: v for k, v in args.items() if v is not None}
            constraint = {"id": constraint.get("id"), "args": args}
        problem = problem_with(constraint)
        if problem:
            raise CutLoopError(f"{where}: {problem}")
        out.append(constraint)
    return tuple(out)


def _dedupe(instructions: Iterable[Instruction]) -> list[Instruction]:
    """Keep the first row of each content id, in source order (a source may repeat rows)."""
    seen: dict[str, Instruction] = {}
    for item in instructions:
        seen.setdefault(item.id, item)
    return list(seen.values())


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _one_line(text: str, limit: int = 200) -> str:
    """Squash a third-party message (often multi-line) so the CLI can print it as one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
