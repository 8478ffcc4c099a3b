"""Training step throughput against this CPU's matmul roofline, on one round's real examples.

    python benchmarks/train_bench.py RUN [--round K] [--steps N] [--reps R]

Builds round K's training examples of a finished run (the README demo's: runs/demo) exactly as
its trainer did, loads the round's start model with the run's LoRA settings, and times the same
N optimizer steps (forward, backward, clip; no optimizer update, so every repetition starts
from the same weights) with the decoder on the one padded batch and on rows grouped by length
(`training/logprobs.py`, the CPU default), alternating R times in one process. Prints tokens/s
of each (real tokens, padding not counted), their ratio, the step's loss under both (the same
to rounding), the padding share, and the achieved GEMM rate as a share of a measured square
fp32 matmul (~4 x parameters FLOPs per token with LoRA's frozen base, plus the LM head on the
scored tokens).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cut_loop.config import config_from_dict, load_yaml  # noqa: E402
from cut_loop.generation.prompts import load_template  # noqa: E402
from cut_loop.loop import build_triplets  # noqa: E402
from cut_loop.rundir import RunDir, read_jsonl  # noqa: E402
from cut_loop.stages import read_judgments  # noqa: E402
from cut_loop.training import logprobs  # noqa: E402
from cut_loop.training.examples import pad_token_id  # noqa: E402
from cut_loop.training.torch_trainer import TorchTrainer  # noqa: E402


def gemm_rate(n: int = 2048, reps: int = 8) -> float:
    """FLOP/s of an n x n fp32 matmul on this machine (the roofline the step is held to)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n**3 / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    rd = RunDir(args.run)
    cfg = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    template = load_template(cfg.generation.template)
    folder = rd.round_dir(args.round)
    from cut_loop.models import checked_model

    start = Path(checked_model(cfg.model) if args.round == 1 else rd.model_dir(args.round - 1))
    responses = [
        r for p in sorted((folder / "responses").glob("shard-*.jsonl")) for r in read_jsonl(p)
    ]
    triplets = build_triplets(responses, read_judgments(folder / "judgments.jsonl"))
    trainer = TorchTrainer(cfg.train, cfg.loss, template, cfg.seed)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start)
    examples = trainer.objective.build(triplets, tokenizer, start, Path("/nonexistent"))
    torch.manual_seed(cfg.seed)
    model = trainer._load_model(start)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    pad = pad_token_id(tokenizer)
    mb, acc = cfg.train.micro_batch_size, cfg.train.grad_accum
    per_step = mb * acc
    steps = [
        [examples[s + m * mb : s + (m + 1) * mb] for m in range(acc)]
        for s in range(0, min(len(examples), args.steps * per_step), per_step)
    ]
    real = padded = 0
    for group in steps:
        for micro in group:
            mask = trainer.objective.collate(micro, pad)["attention_mask"]
            real, padded = real + int(mask.sum()), padded + mask.numel()

    def run(grouped: bool) -> tuple[float, float]:
        logprobs.GROUPED_ON_CPU = grouped
        torch.manual_seed(cfg.seed)  # the same dropout masks for both
        started, tokens, loss = time.perf_counter(), 0, 0.0
        for group in steps:
            row = trainer._step(model, trainable, group, pad)
            model.zero_grad(set_to_none=True)
            tokens, loss = tokens + row["tokens"], loss + row["loss"]
        return tokens / (time.perf_counter() - started), loss / len(steps)

    run(True)  # warm-up: allocator, thread pool
    rates: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, float] = {}
    for _ in range(args.reps):
        for grouped in (False, True):
            rate, losses[grouped] = run(grouped)
            rates[grouped].append(rate)
    peak = gemm_rate()
    params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    print(
        f"{args.run} round {args.round}: {len(examples)} examples, {len(steps)} steps of "
        f"{per_step}; padding {1 - real / padded:.0%} of the padded batch's positions"
    )
    print(
        f"GEMM roofline (2048^2 fp32 matmul): {peak / 1e9:.0f} GFLOP/s; "
        f"{torch.get_num_threads()} threads"
    )
    for grouped, name in ((False, "padded batch"), (True, "rows by length")):
        med = statistics.median(rates[grouped])
        flops = med * 4 * params  # forward + input gradients; the frozen base has no weight grad
        print(
            f"{name:>15}: {med:6.1f} tok/s (runs: {', '.join(f'{r:.0f}' for r in rates[grouped])})"
            f"  ~{flops / peak:.0%} of roofline  loss {losses[grouped]:.6f}"
        )
    ratio = statistics.median(rates[True]) / statistics.median(rates[False])
    print(f"ratio rows-by-length / padded: {ratio:.2f}x")


if __name__ == "__main__":
    main()
