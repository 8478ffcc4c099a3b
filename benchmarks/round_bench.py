"""Where a round's wall time goes, from the loop's own stage timings (the DONE markers).

    python benchmarks/round_bench.py RUN [RUN ...]    # finished runs (e.g. the README demo's)
    python benchmarks/round_bench.py --tiny           # makes a 2-round tiny-model run first

Per round k (from the end of round k-1, or of the starting model's evaluation, to the end of
round k): the wall time, and the seconds of the real work in it: judging round k's sample,
round k's optimizer steps (the sum of the step log's own times), the held-out evaluation's
generation and judges, and the generation of round k+1's sample, which shares that engine.
Everything else is overhead: model saves, loading the policy for the log-p drift, metrics,
tracking, process start for a new engine or trainer. Printed: each part's share and the
overhead ratio (wall - real work) / wall; the target is <= 5% of a demo round. Engine starts
and model loads are inside the generate stage that needed them, so they count as real work
here: the `generation: loading` lines of log.txt say how many there were.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cut_loop.offline import step_rows  # noqa: E402
from cut_loop.rundir import RunDir  # noqa: E402


def _stamp(folder: Path, stage: str) -> float | None:
    info = RunDir.done_info(folder, stage)
    return datetime.fromisoformat(info["finished"]).timestamp() if info else None


def _seconds(folder: Path, stage: str) -> float:
    return float((RunDir.done_info(folder, stage) or {}).get("seconds") or 0.0)


def round_parts(rd: RunDir, k: int) -> dict[str, float] | None:
    """Wall seconds of round k and of the real work in it; None when it is not timed."""
    start = _stamp(rd.eval_dir(0), "eval") if k == 1 else _stamp(rd.round_dir(k - 1), "round")
    end = _stamp(rd.round_dir(k), "round")
    if start is None or end is None or not RunDir.done_info(rd.round_dir(k), "judge"):
        return None
    if "seconds" not in RunDir.done_info(rd.round_dir(k), "judge"):
        return None  # a run from before stage timings
    ev = rd.eval_dir(k)
    steps = step_rows(rd.round_dir(k) / "train" / "log.jsonl")
    return {
        "wall": end - start,
        "judge": _seconds(rd.round_dir(k), "judge"),
        "train steps": sum(r.get("seconds", 0.0) for r in steps),
        "eval generate": _seconds(ev, "generate"),
        "eval judges": sum(_seconds(j, "judge") for j in ev.glob("judge-*")),
        "next generate": _seconds(rd.round_dir(k + 1), "generate"),
    }


def report(run_dir: Path) -> None:
    rd = RunDir(run_dir)
    loads = sum("generation: loading" in x for x in (rd.log_path.read_text().splitlines()))
    print(f"\n{run_dir}  ({loads} model loads / engine starts in log.txt)")
    names = ["judge", "train steps", "eval generate", "eval judges", "next generate"]
    print(f"{'round':>5} {'wall s':>8} " + " ".join(f"{n:>14}" for n in names) + "   overhead")
    for k in rd.iter_round_numbers():
        parts = round_parts(rd, k)
        if parts is None:
            continue
        wall = parts["wall"]
        real = sum(parts[n] for n in names)
        shares = " ".join(f"{parts[n]:7.1f} ({parts[n] / wall:4.0%})" for n in names)
        print(f"{k:>5} {wall:8.1f} {shares}   {(wall - real) / wall:6.1%}")
    if RunDir.is_done(rd.eval_dir(0), "generate"):
        gen0 = _seconds(rd.eval_dir(0), "generate")
        print(f"round 0 (the starting model's eval): generate {gen0:.1f} s, incl. its first load")


def tiny_run(out: Path) -> Path:
    from tests.helpers.tiny_model import make_tiny_model

    model = make_tiny_model(out / "model")
    run_dir = out / "run"
    subprocess.run(
        [sys.executable, "-m", "cut_loop", "run", "--run-dir", str(run_dir), "--model",
         str(model), "--instructions", "demo", "--per-round", "32", "--eval-size", "16",
         "--max-new-tokens", "32", "--iterations", "2", "--judge", "rules",
         "--set", "generation.template=alpaca", "--set", "train.warmup_steps=1"],
        cwd=ROOT, check=True, env={**os.environ, "CUT_LOOP_VLLM_PYTHON": "none"},
    )  # fmt: skip
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--tiny", action="store_true", help="make and time a tiny 2-round run")
    args = ap.parse_args()
    runs = list(args.runs)
    if args.tiny:
        runs.append(tiny_run(Path(tempfile.mkdtemp(prefix="round-bench-"))))
    if not runs:
        ap.error("give run directories, or --tiny")
    for run in runs:
        report(run)


if __name__ == "__main__":
    main()
