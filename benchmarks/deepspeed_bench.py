"""The torch trainer (1 process) against the DeepSpeed trainer (ZeRO-2, 2 processes x 1 OpenMP
thread) on the same 20 CUT steps of SmolLM2-135M, in one run.

    python3 benchmarks/deepspeed_bench.py                  # 20 steps, batch 8 x 256 tokens
    python3 benchmarks/deepspeed_bench.py --steps 5        # a quicker look

What is measured: the CUT authors' released round-1 triplets (../shared/data/cut_online,
all positives kept) trained with the CUT loss for `--steps` optimizer steps of 8 examples
(micro-batch 4 x 2 accumulated; the DeepSpeed ranks take one micro-batch each), cut at 256
tokens, bf16 (autocast in the torch trainer, DeepSpeed's bf16 mode), from
`resolve_model("smollm2-135m")`. Both trainers take the same examples in the same order.
Tokens/s = the tokens of all steps (non-padding, as log.jsonl counts them) / the steps'
seconds (model loading and launching not counted; printed apart as wall time). Peak memory:
the highest sum of resident memory over the trainer's process tree (the controller, the
launcher and the ranks for DeepSpeed), sampled every 0.1 s, plus the highest single rank.
Each trainer runs in a fresh child process, one after the other. On this 2-core machine the
DeepSpeed path buys memory per rank, not speed; on GPUs it is what trains 7B-70B models.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "cut_online" / "iter1.json"


def child(backend: str, steps: int, work: Path) -> None:
    """Train in this process (the torch trainer) or from it (the DeepSpeed ranks)."""
    from cut_loop.config import DeepSpeedConfig, LossConfig, TrainConfig
    from cut_loop.generation.prompts import load_template
    from cut_loop.models import resolve_model
    from cut_loop.training.base import Triplet
    from cut_loop.training.deepspeed_trainer import DeepSpeedTrainer
    from cut_loop.training.torch_trainer import TorchTrainer

    rows = json.loads(DATA.read_text())[: 8 * steps]
    triplets = [
        Triplet(str(r["id"]), r["instruction"], r["input"], r["output"], r["judgment"])
        for r in rows
    ]
    config = TrainConfig(
        learning_rate=1e-5, warmup_steps=2, micro_batch_size=4, grad_accum=2, max_length=256,
        bf16=True, save_every=10**6, max_steps=steps,
        deepspeed=DeepSpeedConfig(num_procs=2, omp_threads=1, zero_stage=2),
    )  # fmt: skip
    cls = TorchTrainer if backend == "torch" else DeepSpeedTrainer
    trainer = cls(config, LossConfig(downsample=1.0), load_template("alpaca"), seed=0)
    start = resolve_model("smollm2-135m")
    result = trainer.train(triplets, Path(start), work / "train", work / "out")
    print(json.dumps(asdict(result)))


def _tree_rss(root: int) -> tuple[int, int]:
    """(total, largest single process) resident bytes of `root` and its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(proc.name)] = int(fields[1])
            rss[int(proc.name)] = int((proc / "statm").read_text().split()[1]) * page
        except (OSError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(kids)
        frontier += kids
    sizes = [rss.get(p, 0) for p in tree]
    return sum(sizes), max(sizes)


def measure(backend: str, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        # The torch trainer uses every core; the DeepSpeed trainer sets 1 thread per rank itself.
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        cmd = [sys.executable, __file__, "--child", backend, "--steps", str(steps), "--work", tmp]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        peak = largest = 0
        while proc.poll() is None:
            total, single = _tree_rss(proc.pid)
            peak, largest = max(peak, total), max(largest, single)
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"{backend}: training failed (exit {proc.returncode})")
        rows = [json.loads(x) for x in (Path(tmp) / "train" / "log.jsonl").read_text().splitlines()]
    tokens, seconds = sum(r["tokens"] for r in rows), sum(r["seconds"] for r in rows)
    return {
        "steps": len(rows), "tokens_per_s": tokens / seconds, "s_per_step": seconds / len(rows),
        "wall_s": wall, "peak_gb": peak / 1e9, "largest_process_gb": largest / 1e9,
        "final_loss": rows[-1]["loss"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", choices=["torch", "deepspeed"])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.work)
        return
    results = {name: measure(name, args.steps) for name in ("torch", "deepspeed")}
    print(
        f"SmolLM2-135M, CUT, {args.steps} steps of 8 x <=256 tokens, bf16, {os.cpu_count()} cores"
    )
    for name, label in (("torch", "torch, 1 process"), ("deepspeed", "DeepSpeed ZeRO-2, 2 x 1")):
        r = results[name]
        print(
            f"  {label:<24} {r['tokens_per_s']:8.1f} tokens/s  {r['s_per_step']:6.2f} s/step"
            f"  peak {r['peak_gb']:5.2f} GB (largest process {r['largest_process_gb']:.2f} GB)"
            f"  wall {r['wall_s']:5.0f} s  final loss {r['final_loss']:.4f}"
        )
    ratio = results["deepspeed"]["tokens_per_s"] / results["torch"]["tokens_per_s"]
    print(f"  DeepSpeed / torch tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
