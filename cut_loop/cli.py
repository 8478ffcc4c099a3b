"""The `cutloop` command line: parse, resolve the config, dispatch. Nothing else lives here."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from cut_loop.errors import CutLoopError, environment_fault

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Online alignment with judgments: sample → generate → judge → train (CUT) → repeat.",
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


class _Terminated(Exception):
    """SIGTERM, raised where the main thread is, like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextmanager
def _user_facing(resumable: bool = True) -> Iterator[None]:
    """Bad input, environment faults and stop signals end the command with one line on stderr.

    Ctrl-C (SIGINT) and SIGTERM stop the current unit: an append or an atomic write is either
    whole or absent, a stage without its DONE marker is resumed, a vLLM or DeepSpeed worker is
    shut down by the code that started it. Exit 130 / 143, the shell's codes for the two."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except CutLoopError as e:
        if os.environ.get("CUT_LOOP_TRACEBACK"):
            raise
        _fail(str(e))
    except (KeyboardInterrupt, _Terminated) as e:
        name, code = ("SIGINT", 130) if isinstance(e, KeyboardInterrupt) else ("SIGTERM", 143)
        again = shlex.join(["cutloop", *sys.argv[1:]])
        hint = f"; finished work is kept, resume with: {again}" if resumable else ""
        typer.echo(f"stopped by {name}{hint}", err=True)
        raise typer.Exit(code) from None
    except Exception as e:
        if (message := environment_fault(e)) is None:
            raise
        _fail(message)
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="YAML run config (CLI options win).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Rounds to have finished.")] = None,
    run_dir: Annotated[
        str | None, typer.Option(help="Run directory (resumes if it exists).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="smollm2-135m, a local HF dir or a Hub id.")
    ] = None,
    instructions: Annotated[
        str | None, typer.Option(help="alpaca, demo, or a JSON/JSONL/parquet/CSV file.")
    ] = None,
    per_round: Annotated[int | None, typer.Option(help="Fresh instructions per round.")] = None,
    eval_size: Annotated[int | None, typer.Option(help="Held-out eval instructions.")] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="openai, hf, reward-model, rules, all/chain/vote, rubric.yaml,"
            " module:Name or file.py:Name."
        ),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="Training loss: cut, sft, rrhf, dpo.")] = None,
    generator: Annotated[str | None, typer.Option(help="auto, hf or vllm.")] = None,
    trainer: Annotated[str | None, typer.Option(help="auto, torch or deepspeed.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for sampling, generation, training.")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Token limit per response.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other config field: --set train.learning_rate=1e-5."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Continue a run although a run-defining field changed.")
    ] = False,
) -> None:
    """Run (or resume, or extend) the loop."""
    overrides: dict[str, Any] = {
        "iterations": iterations,
        "run_dir": run_dir,
        "model": model,
        "data.instructions": instructions,
        "data.per_round": per_round,
        "eval.size": eval_size,
        "judge.name": judge,
        "loss.name": loss,
        "generation.backend": generator,
        "train.backend": trainer,
        "seed": seed,
        "generation.max_new_tokens": max_new_tokens,
    }
    with _user_facing():
        _quiet_libraries()
        from cut_loop.config import resolve_run_config
        from cut_loop.loop import Loop

        cfg = resolve_run_config(config, overrides, set_ or [])
        Loop(cfg, force=force).run()


@app.command()
def train(
    data: Annotated[
        Path,
        typer.Option(help="CUT-format JSON list: instruction, input, output, judgment[, score]."),
    ],
    output: Annotated[
        Path, typer.Option(help="Output directory (config, checkpoints, model/); resumes.")
    ],
    model: Annotated[
        str | None, typer.Option(help="smollm2-135m, a local HF dir or a Hub id.")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="cut (default), sft, rrhf or dpo.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (CLI options win).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for down-sampling and training.")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many optimizer steps (train.max_steps).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any other config field: --set train.learning_rate=1e-5."),
    ] = None,
) -> None:
    """Train once on a file of judged responses (offline alignment), then print the
    flagged-token fraction, the loss per component and the throughput."""
    overrides: dict[str, Any] = {
        "run_dir": str(output),
        "model": model,
        "loss.name": loss,
        "seed": seed,
        "train.max_steps": max_steps,
    }
    with _user_facing():
        _quiet_libraries()
        from cut_loop.config import resolve_run_config
        from cut_loop.offline import format_summary, train_offline

        cfg = resolve_run_config(config, overrides, set_ or [])
        typer.echo(format_summary(train_offline(data, cfg, output)))


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    judge: Annotated[
        str, typer.Option(help="The judge to score with: a name, rubric.yaml or module:Name.")
    ],
    generate: Annotated[
        bool,
        typer.Option(help="Answer the held-out set again with every round's policy first."),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A judge option (--set model=gpt-4o), or with --generate a decoding field"
            " (--set eval.temperature=0.7).",
        ),
    ] = None,
    pairwise: Annotated[
        str | None,
        typer.Option(
            help="Win rate against a reference answer instead: 'start' (round 0's) or"
            " 'output' (the source's own); each pair asked in both orders.",
        ),
    ] = None,
) -> None:
    """Score a run's held-out answers (every round) with another judge, beside the training
    record in RUN/evals/<judge>/; cached, so a re-run is free."""
    with _user_facing():
        _quiet_libraries()
        from cut_loop.evaluation.rescore import rescore
        from cut_loop.metrics import pairwise_table, summary_table
        from cut_loop.progress import table_console

        out, rows = rescore(run_dir, judge, set_ or [], generate=generate, pairwise=pairwise)
        table = pairwise_table if pairwise else summary_table
        table_console().print(table(rows, title=str(out)))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    round_: Annotated[int, typer.Option("--round", help="The round (0: the starting model).")],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="alpaca-eval (model outputs for alpaca_eval), cut (the round's judged"
            " responses as the CUT release's JSON) or jsonl (the same, one per line).",
        ),
    ] = "alpaca-eval",
    instructions: Annotated[
        Path | None,
        typer.Option(help="alpaca-eval: answer this file's instructions with the round first."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Where to write (default RUN/exports/...).")
    ] = None,
) -> None:
    """Write a round's answers or judged responses in a format other tools read."""
    with _user_facing():
        _quiet_libraries()
        from cut_loop.export import export as write_export

        path, n = write_export(run_dir, round_, format_, instructions, output)
        typer.echo(f"{path}: {n} rows")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    output: Annotated[
        Path | None, typer.Option(help="Where to write (default RUN/report.html).")
    ] = None,
) -> None:
    """One self-contained HTML page: acceptance with intervals, losses, lengths, times, cost,
    critiques, and every round's answers side by side."""
    with _user_facing(resumable=False):
        from cut_loop.report import write_report

        typer.echo(str(write_report(run_dir, output)))


@app.command()
def chat(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    round_: Annotated[
        int | None, typer.Option("--round", help="The round to talk to (default: the last).")
    ] = None,
    compare: Annotated[
        int | None, typer.Option(help="Also answer with this round, side by side.")
    ] = None,
) -> None:
    """Type instructions to a round's model (the run's template and eval decoding); each
    line is one instruction, Ctrl-D ends. Reads a pipe as well."""
    with _user_facing(resumable=False):
        _quiet_libraries()
        from cut_loop.chat import chat as talk

        talk(run_dir, round_, compare)


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; the libraries' per-file loading bars and
    advice warnings would bury them."""

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if not torch.cuda.is_available():
        # transformers imports DeepSpeed (when installed) on every model load; without a GPU
        # DeepSpeed then prints an "accelerator set to CPU" warning to stdout. Say it first.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # The Hub client warns once per failed request; our one error line says what failed.
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """What a run has done, what is left, and its per-round metrics."""
    from cut_loop.progress import table_console
    from cut_loop.status import status_view

    with _user_facing(resumable=False):
        table_console().print(status_view(run_dir))


def main() -> None:  # pragma: no cover - `python -m cut_loop`
    sys.exit(app())
