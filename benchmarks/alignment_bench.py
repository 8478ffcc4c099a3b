"""The losses side by side, in the loop: same seed, instructions, judge and budget per arm.

Runs `cutloop run` once per loss (each in its own run directory under --out), from one config
(default: the CPU demo), then prints per arm and eval judge: round 0 and final held-out
acceptance with 95% Wilson intervals, the paired difference from round 0 and, paired on the
same held-out instructions, from the control arm's final round (`--loss none`: no training),
each with its 95% bootstrap interval; and beside them the final answers' mean length and
finished share, the number that would expose a length hack. Finished arms are read back, so a
re-run only prints (and an interrupted one resumes).

    python benchmarks/alignment_bench.py                      # none, sft, dpo, cut on the demo
    python benchmarks/alignment_bench.py --losses none,cut --iterations 2
    python benchmarks/alignment_bench.py --set loss.truncated=keep --out runs/bench-keep

DPO ranks two samples of each instruction (generation.samples_per_instruction=2), RRHF two
samples by the judge's score; the other arms sample one answer per instruction.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cut_loop.evaluation.heldout import start_verdicts
from cut_loop.evaluation.stats import paired_delta, wilson_interval
from cut_loop.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
PER_LOSS = {
    "dpo": ["--set", "generation.samples_per_instruction=2"],
    "rrhf": ["--set", "generation.samples_per_instruction=2"],
}


def run_arm(config: Path, out: Path, loss: str, iterations: int | None, sets: list[str]) -> Path:
    run_dir = out / loss
    cmd = [sys.executable, "-m", "cut_loop", "run", "--config", str(config),
           "--run-dir", str(run_dir), "--loss", loss, *PER_LOSS.get(loss, [])]  # fmt: skip
    if iterations:
        cmd += ["--iterations", str(iterations)]
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return run_dir


def last_round(run_dir: Path) -> int:
    rounds = [
        int(p.name.split("-")[1])
        for p in (run_dir / "eval").glob("round-[0-9][0-9]")
        if RunDir.is_done(p, "eval")
    ]
    return max(rounds)


def verdicts_of(run_dir: Path, k: int, label: str) -> dict[str, int]:
    folder = run_dir / "eval" / f"round-{k:02d}"
    return start_verdicts(folder, folder / f"judge-{label}")


def fmt_rate(v: dict[str, int]) -> str:
    k, n = sum(v.values()), len(v)
    lo, hi = wilson_interval(k, n) or (0.0, 0.0)
    return f"{k / n:.3f} ({lo:.2f}-{hi:.2f})" if n else "-"


def fmt_delta(a: dict[str, int], b: dict[str, int], seed: int = 0) -> str:
    """mean(b - a) over the instructions both have a verdict for."""
    keys = sorted(set(a) & set(b))
    got = paired_delta([a[i] for i in keys], [b[i] for i in keys], seed)
    if got is None:
        return "-"
    d, (lo, hi) = got
    return f"{d:+.3f} ({lo:+.2f}, {hi:+.2f})"


def final_row(run_dir: Path, k: int, label: str) -> dict:
    info = RunDir.done_info(run_dir / "eval" / f"round-{k:02d}", "eval") or {}
    return next((j for j in info.get("judges", []) if j["judge"] == label), {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-demo.yaml")
    ap.add_argument("--losses", default="none,sft,dpo,cut")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "alignment-bench")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    losses = args.losses.split(",")
    runs = {
        loss: run_arm(args.config, args.out, loss, args.iterations, args.sets) for loss in losses
    }

    control = runs.get("none")
    first = next(iter(runs.values()))
    labels = [
        j["judge"] for j in (RunDir.done_info(first / "eval" / "round-00", "eval") or {})["judges"]
    ]
    for label in labels:
        print(f"\neval judge {label} (95% intervals; paired differences on the same instructions)")
        head = (
            f"{'loss':<6}{'round 0':>20}{'final':>20}{'final - round 0':>24}{'final - control':>24}"
        )
        print(head + f"{'tokens 0 -> final':>20}{'finished 0 -> final':>22}")
        for loss, run_dir in runs.items():
            k = last_round(run_dir)
            v0, vk = verdicts_of(run_dir, 0, label), verdicts_of(run_dir, k, label)
            vs_control = "-"
            if control is not None and loss != "none":
                vs_control = fmt_delta(verdicts_of(control, last_round(control), label), vk)
            r0, rk = final_row(run_dir, 0, label), final_row(run_dir, k, label)
            t0, tk = r0.get("mean_response_tokens", 0), rk.get("mean_response_tokens", 0)
            tokens = f"{t0:.1f} -> {tk:.1f}"
            finished = (
                f"{r0.get('finished_fraction', 0):.2f} -> {rk.get('finished_fraction', 0):.2f}"
            )
            print(f"{loss:<6}{fmt_rate(v0):>20}{fmt_rate(vk):>20}{fmt_delta(v0, vk):>24}"
                  f"{vs_control:>24}{tokens:>20}{finished:>22}")  # fmt: skip
    rounds = ", ".join(f"{loss} {last_round(r)}" for loss, r in runs.items())
    print(f"\nrounds: {rounds}; runs in {args.out}")


if __name__ == "__main__":
    main()
