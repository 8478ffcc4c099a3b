"""CUT loss: ours (the fused, memory-lean head) against the reference's full-softmax
formulation; and a CUT training step against a plain forward+backward. One run prints all.

    python3 benchmarks/cut_loss_bench.py [--repeats 3] [--no-step]

Part 1, the loss alone, forward + backward. B = 4 examples, all negatives, so both
formulations see the same 2B = 8 rows (with positives the reference would also carry their
empty partner rows, which would flatter ours); T = 512 tokens a row, the first 64 a prompt
(masked), V = 49152 and H = 576 (SmolLM2-135M's vocabulary and width), float32. The inputs are
what the LM head receives: the decoder's final hidden states (8, 512, 576) and the head weight
(49152, 576), both requiring grad, made from the same seed in each process. The reference
(wwxu21/CUT, modeling_llama_unlikelihood.py, restated as in tests/unit/test_cut_loss.py)
projects every position to (8, 512, V) float32 logits, takes the full softmax, then the NLL
over the first contexts and the unlikelihood term over the negatives' tokens. Ours is
`cut_loop.training.fused_cut.fused_cut_loss`, what the trainer runs.

Peak memory, measured honestly: each formulation runs in a fresh subprocess. It builds the
inputs, runs a tiny warm-up (so one-time kernel and thread-pool set-up is not counted), reads
ru_maxrss (the kernel's high-water mark of the process's resident memory), runs forward +
backward once, and reads ru_maxrss again; the difference is the extra peak the loss needed:
logits, softmax, saved activations and the gradients of the hidden states and of the weight.
A high-water mark misses no transient peak, and glibc hands large freed blocks back to the
OS, so resident memory follows live tensors. (On a GPU it would be torch.cuda peak stats.)
Time: measured in the parent process, the two formulations alternating, the median of
`--repeats` runs each after a warm-up (other work on the machine then slows both alike).

Part 2, a training step: the trainer's CUT micro-batch (decoder, fused CUT loss, backward) vs
a plain forward + backward (transformers' own loss: full logits, cross-entropy) over the same
8 rows of 512 tokens, under bf16 autocast as the trainer runs by default, on SmolLM2-135M
(`resolve_model("smollm2-135m")`), or, when that package is missing, a randomly initialised
Llama of the same shape (timing does not depend on the weights). Timed as in part 1
(alternating, medians). The optimizer step, identical for both, is left out.

Targets (issue 3): memory <= 0.25x, time <= 0.8x, relative difference of the losses <= 1e-5;
CUT step <= 1.15x the plain forward + backward.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cut_loop.training.examples import IGNORE
from cut_loop.training.fused_cut import fused_cut_loss

B, T, PROMPT, V, H = 4, 512, 64, 49152, 576
THRESHOLD, WEIGHT_UNLIKE = 1.1, 1.0


def inputs(b: int = B, t: int = T, prompt: int = PROMPT, seed: int = 0):
    """Hidden states and head weight (leaves requiring grad) and labels: rows [0, b) the
    judged contexts, rows [b, 2b) the plain contexts of the same responses."""
    g = torch.Generator().manual_seed(seed)
    hidden = (0.5 * torch.randn(2 * b, t, H, generator=g)).requires_grad_()
    weight = (0.05 * torch.randn(V, H, generator=g)).requires_grad_()
    labels = torch.randint(0, V, (b, t), generator=g).repeat(2, 1)
    labels[:, :prompt] = IGNORE
    return hidden, weight, labels


def ours(hidden, weight, labels):
    b = labels.shape[0] // 2
    loss, parts = fused_cut_loss(
        hidden[:, :-1], labels[:, 1:], weight, None, torch.arange(b), THRESHOLD, WEIGHT_UNLIKE
    )
    loss.backward()
    return loss.item(), parts["flagged_token_fraction"]


def reference(hidden, weight, labels):
    """The reference's formulation: full logits, a float32 softmax, then probabilities."""
    b = labels.shape[0] // 2
    probs = torch.softmax((hidden @ weight.T).float(), dim=2)
    shift_probs, shift_labels = probs[:, :-1], labels[:b, 1:]
    shift_labels_neg = labels[b:, 1:]
    loss = F.nll_loss(torch.log(shift_probs[:b]).reshape(-1, V), shift_labels.reshape(-1))
    rows, cols = torch.meshgrid(torch.arange(b), torch.arange(shift_labels.shape[1]), indexing="ij")
    p_first = shift_probs[:b][rows, cols, shift_labels.clamp(0, V - 1)]
    p_plain = shift_probs[b:][rows, cols, shift_labels_neg.clamp(0, V - 1)]
    p_first = p_first[shift_labels != IGNORE]
    p_plain = p_plain[shift_labels_neg != IGNORE].clone()
    flagged = (p_first / p_plain).detach() > THRESHOLD
    p_plain[flagged] = 1 - p_plain[flagged]
    p_plain[p_plain == 0] += 1e-5
    lp = torch.log(p_plain)
    lp[flagged] = WEIGHT_UNLIKE * lp[flagged]
    loss = (loss - lp.sum() / lp.numel()) / 2
    loss.backward()
    return loss.item(), flagged.float().mean().item()


def peak_memory(name: str) -> dict:
    """One formulation in this (fresh) process: the extra peak memory of one forward+backward,
    and its loss."""
    fn = {"ours": ours, "reference": reference}[name]
    fn(*inputs(b=1, t=16, prompt=4))  # warm-up: kernels, thread pools
    hidden, weight, labels = inputs()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    loss, flagged = fn(hidden, weight, labels)
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"peak_mib": peak_mib, "loss": loss, "flagged": flagged}


def median_times(fns: dict, repeats: int, reset) -> dict[str, float]:
    """Median seconds per function over `repeats` rounds after a warm-up round; the functions
    alternate within each round, so a change in machine load hits both alike."""
    times: dict[str, list[float]] = {key: [] for key in fns}
    for i in range(repeats + 1):
        for key, fn in fns.items():
            reset()
            start = time.perf_counter()
            fn()
            if i:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def loss_benchmark(repeats: int) -> bool:
    results = {}
    for name in ("reference", "ours"):
        proc = subprocess.run(
            [sys.executable, __file__, "--variant", name],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    hidden, weight, labels = inputs()

    def reset() -> None:
        hidden.grad = weight.grad = None

    seconds = median_times(
        {name: lambda f=f: f(hidden, weight, labels) for name, f in
         (("reference", reference), ("ours", ours))},
        repeats, reset,
    )  # fmt: skip
    for name in results:
        results[name]["seconds"] = seconds[name]
    ref, our = results["reference"], results["ours"]
    mem, secs = our["peak_mib"] / ref["peak_mib"], our["seconds"] / ref["seconds"]
    rel = abs(our["loss"] - ref["loss"]) / abs(ref["loss"])
    print(
        f"CUT loss forward+backward: B={B} negatives (2B={2 * B} rows), T={T} ({T - PROMPT} "
        f"scored tokens a row), V={V}, H={H}, float32, {torch.get_num_threads()} threads"
    )
    print(f"  {'':<28}{'peak memory':>14}{'time':>10}  loss (flagged fraction)")
    for label, r in (("reference (full softmax)", ref), ("ours (fused head)", our)):
        print(
            f"  {label:<28}{r['peak_mib']:>10.1f} MiB{r['seconds']:>8.2f} s"
            f"  {r['loss']:.9f} ({r['flagged']:.4f})"
        )
    checks = [mem <= 0.25, secs <= 0.8, rel <= 1e-5]
    print(f"  memory ratio ours/reference: {mem:.3f}   (target <= 0.25: {_ok(checks[0])})")
    print(f"  time ratio ours/reference:   {secs:.3f}   (target <= 0.8: {_ok(checks[1])})")
    print(f"  relative difference of the losses: {rel:.2e}   (target <= 1e-5: {_ok(checks[2])})")
    return all(checks)


def step_model() -> tuple[torch.nn.Module, str]:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from cut_loop.errors import CutLoopError
    from cut_loop.models import resolve_model

    try:
        path = resolve_model("smollm2-135m")
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), "SmolLM2-135M"
    except CutLoopError:
        config = LlamaConfig(
            vocab_size=V, hidden_size=H, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
        )  # fmt: skip
        return LlamaForCausalLM(config), "a random Llama shaped like SmolLM2-135M"


def step_benchmark(repeats: int) -> bool:
    from cut_loop.generation.prompts import load_template
    from cut_loop.training.cut import CutObjective

    model, name = step_model()
    model.train()
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    response = torch.randint(0, vocab, (B, T - PROMPT), generator=g)
    prompts = torch.randint(0, vocab, (2 * B, PROMPT), generator=g)
    ids = torch.cat([prompts, response.repeat(2, 1)], dim=1)
    labels = ids.clone()
    labels[:, :PROMPT] = IGNORE
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
             "neg_rows": torch.arange(B)}  # fmt: skip
    objective = CutObjective(load_template("alpaca"), T, 0.25, THRESHOLD, WEIGHT_UNLIKE, 0)

    def cut_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = objective.loss(model, batch)
        loss.backward()

    def plain_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()

    seconds = median_times(
        {"plain": plain_step, "cut": cut_step}, repeats, lambda: model.zero_grad(set_to_none=True)
    )
    cut, plain = seconds["cut"], seconds["plain"]
    print(f"\nTraining step on {name}: {2 * B} rows x {T} tokens, bf16 autocast")
    print(f"  plain forward+backward (full logits + cross-entropy): {plain:.2f} s")
    print(f"  CUT step (decoder + fused CUT loss + backward):        {cut:.2f} s")
    print(f"  ratio CUT/plain: {cut / plain:.3f}   (target <= 1.15: {_ok(cut / plain <= 1.15)})")
    return cut / plain <= 1.15


def _ok(passed: bool) -> str:
    return "met" if passed else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--no-step", action="store_true", help="skip the training-step part")
    parser.add_argument("--variant", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # the child process of loss_benchmark
        print(json.dumps(peak_memory(args.variant)))
        return
    passed = loss_benchmark(args.repeats)
    if not args.no_step:
        passed = step_benchmark(args.repeats) and passed
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
