"""The generate stage's shards on a resume, with the transformers backend on the tiny model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from cut_loop.data.sources import load_instructions
from cut_loop.generation.base import SamplingParams
from cut_loop.generation.hf import HFGenerator
from cut_loop.generation.prompts import load_template
from cut_loop.rundir import read_jsonl
from cut_loop.stages import generate_stage


class Killed(Exception):
    pass


class Counting:
    """The real transformers generator, recording each call's prompt count; it dies (as a
    killed process would) at call `die_at`."""

    def __init__(self, model_dir: Path, die_at: int | None = None) -> None:
        self.inner = HFGenerator(str(model_dir))
        self.calls: list[int] = []
        self.die_at = die_at

    def generate(self, prompts: Sequence[str], params: SamplingParams, on_batch=None):  # type: ignore[no-untyped-def]
        if len(self.calls) + 1 == self.die_at:
            raise Killed
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, params, on_batch)

    def close(self) -> None:
        self.inner.close()


def _stage(folder: Path, shard_size: int, generator: Counting) -> list[dict]:
    instructions = load_instructions("demo")[:5]
    return generate_stage(
        folder, instructions, SamplingParams(max_new_tokens=2), load_template("alpaca"), None,
        lambda: generator, "round 1", "round-1", shard_size,
    )  # fmt: skip


def test_resume_with_another_shard_size_keeps_the_partition_it_started(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    folder = tmp_path / "round-01"
    first = Counting(tiny_model_dir, die_at=2)
    with pytest.raises(Killed):
        _stage(folder, 2, first)
    assert first.calls == [2]
    kept = (folder / "responses" / "shard-0000.jsonl").read_text()

    resumed = Counting(tiny_model_dir)
    rows = _stage(folder, 4, resumed)  # the user raised generation.shard_size for the resume
    assert resumed.calls == [2, 1]  # shards 1 and 2 of the size-2 partition, nothing else
    ids = [x.id for x in load_instructions("demo")[:5]]
    assert [r["prompt_id"] for r in rows] == ids  # every instruction once, in order
    assert (folder / "responses" / "shard-0000.jsonl").read_text() == kept

    again = Counting(tiny_model_dir)
    assert _stage(folder, 3, again) == rows  # a finished stage reads the same shards
    assert again.calls == []
    assert len(read_jsonl(folder / "responses" / "shard-0002.jsonl")) == 1
