"""Reading CUT-format files for `cutloop train`: the released rounds, scores, groups, and
one-line errors for bad files; the training log summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.offline import format_summary, load_cut_file, summarise_log


def _write(tmp_path: Path, rows) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    return path


def _row(**kw):
    return {"instruction": "Name a color.", "input": "", "output": "Red.", "judgment": None, **kw}


def test_reads_the_released_round(cut_online_dir):
    triplets = load_cut_file(cut_online_dir / "iter1.json")
    assert len(triplets) == 1000
    assert sum(t.judgment is not None for t in triplets) == 287  # as ALGORITHMS.md says
    assert triplets[0].id == "0" and triplets[0].input == "" and triplets[0].score is None
    assert len({t.id for t in triplets}) == 1000


def test_scores_inputs_and_groups(tmp_path):
    rows = [
        _row(id="a", judgment="Wrong color.", score=7),  # >= 7: acceptable, as the reference
        _row(id="b", judgment="Wrong color.", score=6.5),
        _row(id="c", input=None),
        _row(id="d", input="Answer in French."),
        _row(id="e", prompt_id="mine"),
    ]
    a, b, c, d, e = load_cut_file(_write(tmp_path, rows))
    assert (a.judgment, a.score) == (None, 7.0)
    assert (b.judgment, b.score) == ("Wrong color.", 6.5)
    assert c.input == "" and d.input == "Answer in French."
    assert a.group == b.group == c.group != d.group  # same instruction and input: one group
    assert e.group == "mine"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "data file not found"),
        ('[{"instruction": "x",', ":1:22: invalid JSON"),
        ('{"instruction": "x"}', "expected a non-empty JSON list"),
        ("[]", "expected a non-empty JSON list"),
        (json.dumps([_row(), {"instruction": "x"}]), "row 1: missing 'output'"),
        (json.dumps([_row(judgment="")]), "row 0: 'judgment' must be the critique text"),
        (json.dumps([_row(score="high")]), "row 0: 'score' must be a number or null"),
        (json.dumps([_row(id=1), _row(id=1)]), "row 1: duplicate id 1"),
        (json.dumps([_row(instruction=" ")]), "row 0: 'instruction' must be a non-empty"),
        (json.dumps(["x"] * 5), "row 0: not an object; row 1: not an object; row 2: not an "),
    ],
)
def test_bad_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "data.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CutLoopError, match=message) as e:
        load_cut_file(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(path))
    if content == json.dumps(["x"] * 5):
        assert str(e.value).endswith("(and 2 more bad rows)")


def test_log_summary_keeps_the_last_row_per_step_and_skips_a_cut_line(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [
        {"step": 1, "loss": 9.0, "align_loss": 9.0, "flagged_token_fraction": None,
         "tokens": 100, "seconds": 1.0, "lr": 0.0},
        {"step": 1, "loss": 3.0, "align_loss": 2.0, "flagged_token_fraction": 0.5,
         "tokens": 100, "seconds": 1.0, "lr": 0.0},  # re-logged after a resume: wins
        {"step": 2, "loss": 1.0, "align_loss": 1.0, "flagged_token_fraction": 0.25,
         "tokens": 300, "seconds": 1.0, "lr": 0.1},
    ]  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
    s = summarise_log(log, window=1)
    assert s["components"]["loss"] == {"mean": 2.0, "first": 3.0, "last": 1.0}
    assert s["components"]["flagged_token_fraction"]["mean"] == 0.375
    assert "lr" not in s["components"]
    assert (s["tokens"], s["train_seconds"], s["tokens_per_s"]) == (400, 2.0, 200.0)
    text = format_summary(
        {"data": "d.json", "rows": 4, "loss_name": "cut", "steps": 2, "examples": 3,
         "counts": {"negatives": 2, "positives": 1}, "model": "out/model", **s}
    )  # fmt: skip
    assert "flagged-token fraction on Misalign examples: 0.3750" in text
    assert "throughput: 200.0 tokens/s" in text
