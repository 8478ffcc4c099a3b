"""`cutloop chat RUN [--round K] [--compare J]`: talk to a round's policy, the quick look.

Each line read is one instruction, rendered with the run's template and answered with the
run's eval decoding (greedy by default, its token limit and stop strings), so what you see is
what the held-out evaluation saw. One round: the answer streams as it is decoded. `--compare
J`: rounds K and J answer the same line, shown side by side. Reads until end of input (Ctrl-D),
so a file or a pipe works as well as a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from cut_loop.config import config_from_dict, load_yaml
from cut_loop.errors import CutLoopError
from cut_loop.generation.base import SamplingParams
from cut_loop.rundir import RunDir


def round_model(rd: RunDir, model: str, k: int | None) -> tuple[int, str]:
    """(round, model path) for `k` (None: the last round with a saved model; 0: the start)."""
    from cut_loop.models import resolve_model

    saved = [n for n in rd.iter_round_numbers() if (rd.model_dir(n) / "config.json").exists()]
    if k is None:
        k = max(saved, default=0)
    if k == 0:
        return 0, resolve_model(model)
    if k not in saved:
        raise CutLoopError(f"{rd.model_dir(k)}: round {k} has no saved model")
    return k, str(rd.model_dir(k))


def chat(
    run_dir: Path,
    k: int | None = None,
    compare: int | None = None,
    lines: TextIO = sys.stdin,
    out: Console | None = None,
) -> int:
    """Answer every line of `lines`; returns how many were answered."""
    from cut_loop.generation.hf import HFGenerator
    from cut_loop.generation.prompts import load_template

    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise CutLoopError(f"{run_dir}: not a cut_loop run directory (no config.yaml)")
    cfg = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    out = out or Console()
    rounds = [round_model(rd, cfg.model, k)]
    if compare is not None:
        rounds.append(round_model(rd, cfg.model, compare))
    template = load_template(cfg.generation.template)
    generators = [HFGenerator(path, "float32") for _, path in rounds]
    ev, gen = cfg.eval, cfg.generation
    params = SamplingParams(
        max_new_tokens=ev.max_new_tokens or gen.max_new_tokens, temperature=ev.temperature,
        top_p=ev.top_p, seed=cfg.seed, stop=tuple(gen.stop),
    )  # fmt: skip
    interactive = lines.isatty()
    names = " and ".join(f"round {n}" for n, _ in rounds)
    if interactive:
        out.print(f"[bold]{names}[/] of {run_dir}: type an instruction, Ctrl-D to quit")
    answered = 0
    try:
        while True:
            if interactive:
                out.print("> ", end="")
            line = lines.readline()
            if not line:
                break
            instruction = line.strip()
            if not instruction:
                continue
            prompts = [template.render(instruction, "", g.tokenizer) for g in generators]
            if len(generators) == 1:
                for piece in generators[0].stream(prompts[0], params):
                    out.print(piece, end="", soft_wrap=True, markup=False, highlight=False)
                out.print()
            else:
                table = Table(show_lines=True)
                answers = []
                for (n, _), g, prompt in zip(rounds, generators, prompts, strict=True):
                    table.add_column(f"round {n}", overflow="fold")
                    answers.append(g.generate([prompt], params)[0][0].text)
                table.add_row(*answers)
                out.print(table)
            answered += 1
    finally:
        for g in generators:
            g.close()
    return answered
