"""Instruction sources: every file format, the CUT rounds, the demo set, and each error message."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from cut_loop.data.records import Instruction
from cut_loop.data.sources import DEMO_PATH, load_instructions
from cut_loop.errors import CutLoopError

ROWS = [
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Sort these numbers.", "input": "3, 1, 2", "output": "1, 2, 3"},
    {"instruction": "Say hello.", "extra": 7},  # no input, no output, an ignored field
]
EXPECTED = [
    Instruction.make("Name a color.", "", "Blue."),
    Instruction.make("Sort these numbers.", "3, 1, 2", "1, 2, 3"),
    Instruction.make("Say hello."),
]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load_error(source: Path | str) -> str:
    """The message of the CutLoopError that loading `source` raises, checked to be one line."""
    with pytest.raises(CutLoopError) as info:
        load_instructions(str(source))
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- formats -------------------------------------------------------------------------------


def test_json_list_loads(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(ROWS, indent=2))
    assert load_instructions(str(path)) == EXPECTED


def test_jsonl_loads_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path.write_text(path.read_text() + "\n   \n")
    assert load_instructions(str(path)) == EXPECTED


def test_csv_loads_with_empty_cells_as_absent(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "rows.csv", ROWS, ["instruction", "input", "output"])
    assert load_instructions(str(path)) == EXPECTED


def test_csv_without_input_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "rows.csv", [{"instruction": "Say hello."}], ["instruction"])
    assert load_instructions(str(path)) == [Instruction.make("Say hello.")]


def test_parquet_loads_with_null_input(tmp_path: Path) -> None:
    rows = [{**row, "input": row.get("input"), "output": row.get("output")} for row in ROWS]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    assert load_instructions(str(path)) == EXPECTED


def test_null_input_and_output_are_absent(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "rows.jsonl", [{"instruction": "Hi.", "input": None, "output": None}]
    )
    assert load_instructions(str(path)) == [Instruction.make("Hi.")]


def test_duplicates_kept_once_first_wins_order_preserved(tmp_path: Path) -> None:
    rows = [
        {"instruction": "B", "output": "first"},
        {"instruction": "A"},
        {"instruction": "B", "output": "second"},
        {"instruction": "B", "input": "x"},  # a different input is a different item
    ]
    loaded = load_instructions(str(write_jsonl(tmp_path / "rows.jsonl", rows)))
    assert [(i.instruction, i.input, i.reference) for i in loaded] == [
        ("B", "", "first"),
        ("A", "", None),
        ("B", "x", None),
    ]


def test_cut_online_rounds_load(cut_online_dir: Path) -> None:
    paths = sorted(cut_online_dir.glob("iter*.json"))
    assert len(paths) == 4
    for path in paths:
        raw = json.loads(path.read_text())
        loaded = load_instructions(str(path))
        assert len(loaded) == 1000
        assert [i.input for i in loaded] == [row["input"] for row in raw]
        assert [i.reference for i in loaded] == [row["output"] or None for row in raw]
        assert sum(1 for i in loaded if i.input) > 300


# --- the demo set --------------------------------------------------------------------------


def test_demo_set() -> None:
    demo = load_instructions("demo")
    lines = [line for line in DEMO_PATH.read_text().splitlines() if line.strip()]
    assert len(demo) == len(lines) >= 300  # nothing dropped as a duplicate
    assert len({i.instruction for i in demo if not i.input}) == sum(1 for i in demo if not i.input)
    with_input = sum(1 for i in demo if i.input)
    assert 0.28 <= with_input / len(demo) <= 0.40
    assert all(i.reference is None for i in demo)


# --- errors --------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in message and "no such file" in message


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("Name a color.\n")
    message = load_error(path)
    assert "rows.txt" in message and "'.txt'" in message


@pytest.mark.parametrize("name", ["empty.json", "empty.jsonl", "empty.csv", "empty.parquet"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("")
    message = load_error(path)
    assert name in message and "empty" in message


@pytest.mark.parametrize(
    ("name", "content"),
    [("rows.json", "[]"), ("rows.jsonl", "\n\n"), ("rows.csv", "instruction,input\n")],
)
def test_zero_rows(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    message = load_error(path)
    assert name in message and "no rows" in message


def test_zero_rows_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"instruction": pa.array([], pa.string())}), path)
    assert "no rows" in load_error(path)


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"instruction": "A"},\n  {"instruction": "B",}\n]\n')
    assert load_error(path).startswith(f"{path}:3: malformed JSON")


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"instruction": "A"}\n\n{"instruction": "B"\n')
    assert load_error(path).startswith(f"{path}:3: malformed JSON")


def test_top_level_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"instruction": "A"}))
    message = load_error(path)
    assert "rows.json" in message and "list" in message and "dict" in message


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    path.write_text("not parquet at all")
    assert "rows.parquet" in load_error(path)


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        ({"input": "x"}, "row has no 'instruction' field"),
        ({"instruction": None}, "row has no 'instruction' field"),
        ({"instruction": ""}, "empty 'instruction'"),
        ({"instruction": "   "}, "empty 'instruction'"),
        ({"instruction": 3}, "'instruction' must be a string"),
        ({"instruction": "A", "input": ["x"]}, "'input' must be a string"),
        ({"instruction": "A", "output": 5}, "'output' must be a string"),
        ("just a string", "expected an object"),
    ],
)
def test_bad_row_jsonl_names_the_line(tmp_path: Path, bad_row: object, problem: str) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "ok"}, bad_row])
    path.write_text("\n" + path.read_text())  # a leading blank line still counts as line 1
    message = load_error(path)
    assert message.startswith(f"{path}:3: ") and problem in message


def test_bad_row_json_list_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"instruction": "ok"}, {"instruction": "ok2"}, {"input": "x"}]))
    assert load_error(path) == f"{path}: row 2: row has no 'instruction' field"


def test_bad_row_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('instruction,input\nName a color.,\n"Two\nlines",x\n,only input\n')
    assert load_error(path) == f"{path}:5: row has an empty 'instruction'"


def test_csv_without_instruction_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("prompt,input\nName a color.,\n")
    assert load_error(path) == f"{path}:1: header has no 'instruction' column"


def test_bad_row_parquet_names_the_row(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", [{"instruction": "ok"}, {"instruction": None}])
    assert load_error(path) == f"{path}: row 1: row has no 'instruction' field"


def test_alpaca_offline_points_to_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `datasets` and `huggingface_hub` read these variables once, at import; another test may have
    # imported them already, so the module constants are patched too. Offline mode makes the Hub
    # client fail at once instead of retrying for ~25 s, and the empty cache means nothing cached
    # on this machine can satisfy the load.
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")

    start = time.monotonic()
    message = load_error("alpaca")
    assert time.monotonic() - start < 10
    assert "tatsu-lab/alpaca" in message and "could not reach" in message
    assert "--instructions path/to/file.jsonl" in message and "--instructions demo" in message


# --- constraints (cut_loop/constraints) ----------------------------------------------------

NO_COMMA = {"id": "punctuation:no_comma", "args": {}}
UNDER_50 = {
    "id": "length_constraints:number_words",
    "args": {"num_words": 50, "relation": "less than"},
}
# Two rows in the format of IFEval's input_data.jsonl (made-up prompts); the second also asks
# for a language, which cut_loop does not check, so that constraint is dropped.
IFEVAL_ROWS = [
    {"key": 1000, "prompt": "Summarize the page without commas, in fewer than 50 words.",
     "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
     "kwargs": [{}, {"relation": "less than", "num_words": 50}]},
    {"key": 1001, "prompt": "Write a haiku in Spanish about snow, with a P.S.",
     "instruction_id_list": ["language:response_language", "detectable_content:postscript"],
     "kwargs": [{"language": "es"}, {"postscript_marker": "P.S."}]},
]  # fmt: skip


def test_rows_with_constraints_load_them(tmp_path: Path) -> None:
    rows = [{"instruction": "Say hi. No commas.", "constraints": [NO_COMMA]},
            {"instruction": "Say bye.", "constraints": [{"id": "punctuation:no_comma"}]},
            {"instruction": "Say hello.", "constraints": []}]  # fmt: skip
    loaded = load_instructions(str(write_jsonl(tmp_path / "rows.jsonl", rows)))
    assert [x.constraints for x in loaded] == [(NO_COMMA,), (NO_COMMA,), ()]
    assert loaded[0] == Instruction.make("Say hi. No commas.", constraints=(NO_COMMA,))


def test_constraints_in_csv_cells_and_parquet_columns(tmp_path: Path) -> None:
    rows = [{"instruction": "A", "constraints": json.dumps([NO_COMMA, UNDER_50])},
            {"instruction": "B", "constraints": ""}]  # fmt: skip
    csv_path = write_csv(tmp_path / "rows.csv", rows, ["instruction", "constraints"])
    assert [x.constraints for x in load_instructions(str(csv_path))] == [(NO_COMMA, UNDER_50), ()]
    # Arrow unites the args of all rows into one struct: absent fields come back as nulls
    rows = [{"instruction": "A", "constraints": [NO_COMMA, UNDER_50]},
            {"instruction": "B", "constraints": [{"id": "detectable_format:number_bullet_lists",
                                                  "args": {"num_bullets": 3}}]}]  # fmt: skip
    loaded = load_instructions(str(write_parquet(tmp_path / "rows.parquet", rows)))
    assert [x.constraints for x in loaded] == [
        (NO_COMMA, UNDER_50),
        ({"id": "detectable_format:number_bullet_lists", "args": {"num_bullets": 3}},),
    ]


def test_ifeval_input_rows_load_with_the_constraints_cut_loop_checks(tmp_path: Path) -> None:
    loaded = load_instructions(str(write_jsonl(tmp_path / "input_data.jsonl", IFEVAL_ROWS)))
    assert loaded == [
        Instruction.make(IFEVAL_ROWS[0]["prompt"], constraints=(NO_COMMA, UNDER_50)),
        Instruction.make(IFEVAL_ROWS[1]["prompt"], constraints=(
            {"id": "detectable_content:postscript", "args": {"postscript_marker": "P.S."}},)),
    ]  # fmt: skip


def test_ifeval_rows_from_the_hub_copy_with_null_kwargs(tmp_path: Path) -> None:
    # google/IFEval on the Hub stores every kwargs field in every row, null where unused
    hub_row = dict(IFEVAL_ROWS[0], kwargs=[{"num_words": None, "relation": None},
                                           {"num_words": 50, "relation": "less than"}])  # fmt: skip
    [loaded] = load_instructions(str(write_parquet(tmp_path / "ifeval.parquet", [hub_row])))
    assert loaded.constraints == (NO_COMMA, UNDER_50)


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        ({"instruction": "A", "constraints": [{"id": "no_such:check", "args": {}}]},
         "unknown constraint id 'no_such:check' (known: length_constraints:number_words, "),
        ({"instruction": "A", "constraints": [{"id": "length_constraints:number_words",
                                               "args": {"num_words": 50}}]},
         "constraint 'length_constraints:number_words': args num_words, expected num_words, "
         "relation"),
        ({"instruction": "A", "constraints": {"id": "punctuation:no_comma"}},
         "'constraints' must be a list of objects with an 'id' and 'args', got dict"),
        ({"instruction": "A", "constraints": ["punctuation:no_comma"]},
         'a constraint must be an object {"id": '),
        ({"prompt": "A", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []},
         "IFEval row needs 'instruction_id_list' and 'kwargs' lists of one length"),
        ({"prompt": "", "instruction_id_list": [], "kwargs": []},
         "IFEval row needs a non-empty string 'prompt'"),
        ({"prompt": "A", "instruction_id_list": ["detectable_format:number_bullet_lists"],
          "kwargs": [{"num_bullets": "3"}]},
         "constraint 'detectable_format:number_bullet_lists': num_bullets must be a whole "
         "number >= 0, got '3'"),
    ],
)  # fmt: skip
def test_bad_constraints_name_the_line_and_the_id(
    tmp_path: Path, bad_row: object, problem: str
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": "ok"}, bad_row])
    message = load_error(path)
    assert message.startswith(f"{path}:2: {problem}")


def test_bad_constraints_in_a_csv_cell(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "rows.csv", [{"instruction": "A", "constraints": "[{"}],
                     ["instruction", "constraints"])  # fmt: skip
    assert load_error(path).startswith(f"{path}:2: 'constraints' is not valid JSON (")
