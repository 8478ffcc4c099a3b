"""Progress bars for the long stages: count, rate and ETA (rich)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def table_console() -> Console:
    """Where result tables go (stdout). Piped into a file or another program there is no
    terminal width to fit, and rich's default of 80 columns would cut the per-judge columns
    short: a wide page instead."""
    out = Console()
    return out if out.is_terminal else Console(width=240)


class _RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return f"{speed:.2f} {unit}/s" if speed else f"? {unit}/s"


class StageBar:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress = progress
        self._task = task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def update(self, **fields: object) -> None:
        self._progress.update(self._task, **fields)  # type: ignore[arg-type]


@contextmanager
def stage_bar(description: str, total: int, done: int = 0, unit: str = "it") -> Iterator[StageBar]:
    """A bar for one stage; `done` items already finished (resume) start it part-filled."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, completed=done, unit=unit)
        yield StageBar(progress, task)
