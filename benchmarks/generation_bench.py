"""Generation throughput: the same instructions and sampling settings through the transformers
backend and the vLLM backend, on SmolLM2-135M, in one run.

    python3 benchmarks/generation_bench.py                     # 256 demo prompts, 128 tokens
    python3 benchmarks/generation_bench.py --eager             # vLLM without torch.compile
    python3 benchmarks/generation_bench.py --backends vllm --request-size 64   # shard-sized

What is measured: the first `-n` instructions of the demo set, rendered with the alpaca
template (as the loop renders them), generated greedily (temperature 0) and sampled
(temperature 0.7, top-p 0.9: the config's defaults), `--max-new-tokens` each, `--dtype` weights,
through each backend's Generator in calls of `--request-size` prompts (a generate stage makes
one call per shard). Tokens/s = generated tokens (the completions' num_tokens: the answer's
tokens, end-of-sequence not counted, as both backends report them) / wall seconds of the
generate calls. Loading the model and starting the engine are timed apart, not counted. The
backends run one after the other, never at once. vLLM runs in its child process as the loop
runs it (`.venv-vllm`, made by `scripts/setup.sh --vllm`), with the config's defaults (2 GiB
CPU KV cache, all cores); transformers in this process with `--hf-batch-size` prompts per
`model.generate` (the config's default is 16).

Target (issue 5): vLLM >= 5x transformers on greedy decoding.

The default dtype is float32, as the CPU demo generates: on CPUs without AMX (this machine's
KVM guest exposes AVX-512 BF16 but no AMX), oneDNN's bf16 GEMMs run below its fp32 ones
(~170 vs ~260 GFLOP/s on two cores), so bf16 slows vLLM (compute-bound at a batch of 256)
and barely moves transformers (overhead-bound at a batch of 16). The header line says which
matrix instructions this CPU has.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cut_loop.config import GenerationConfig  # noqa: E402
from cut_loop.data.sources import load_instructions  # noqa: E402
from cut_loop.generation.base import Generator, SamplingParams  # noqa: E402
from cut_loop.generation.prompts import load_template  # noqa: E402
from cut_loop.models import resolve_model  # noqa: E402

MODES = {
    "greedy": {"temperature": 0.0, "top_p": 1.0},
    "sampled": {"temperature": 0.7, "top_p": 0.9},
}


def run(generator: Generator, prompts: list[str], params: SamplingParams, size: int) -> float:
    """Generated tokens per second over all prompts, in calls of `size` prompts."""
    tokens = 0
    start = time.perf_counter()
    for i in range(0, len(prompts), size):
        out = generator.generate(prompts[i : i + size], params)
        tokens += sum(c.num_tokens for row in out for c in row)
    elapsed = time.perf_counter() - start
    print(f"    {tokens} tokens in {elapsed:.1f} s", flush=True)
    return tokens / elapsed


def bench(name: str, make: object, prompts: list[str], args: argparse.Namespace) -> dict:
    print(f"{name}:", flush=True)
    start = time.perf_counter()
    generator: Generator = make()  # type: ignore[operator]
    allocator = getattr(generator, "allocator", "")
    print(
        f"  load/start: {time.perf_counter() - start:.1f} s"
        + (f" (allocator: {allocator})" if allocator else ""),
        flush=True,
    )
    rates = {}
    try:
        for mode, sampling in MODES.items():
            params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0, **sampling)
            print(f"  {mode}:", flush=True)
            rates[mode] = run(generator, prompts, params, args.request_size or len(prompts))
            print(f"    {rates[mode]:.1f} tok/s", flush=True)
    finally:
        generator.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=256, help="instructions (default 256)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--hf-batch-size", type=int, default=16, help="transformers batch")
    parser.add_argument("--request-size", type=int, default=0, help="prompts per call (0: all)")
    parser.add_argument("--eager", action="store_true", help="vLLM enforce_eager")
    parser.add_argument("--backends", default="vllm,hf", help="comma list: vllm, hf")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--dtype", default="float32", help="weights of both backends: float32 or bfloat16"
    )
    args = parser.parse_args()

    model = resolve_model(args.model)
    template = load_template("alpaca")
    instructions = load_instructions("demo")[: args.n]
    prompts = [template.render(x.instruction, x.input) for x in instructions]
    print(
        f"{len(prompts)} prompts, {args.max_new_tokens} new tokens, {args.model}, {args.dtype};"
        f" vLLM {'eager' if args.eager else 'compiled'}, transformers batch {args.hf_batch_size},"
        f" {args.request_size or len(prompts)} prompts per call",
        flush=True,
    )
    print(f"CPU: {_cpu_matrix_isa()}", flush=True)
    makers = {
        "vllm": lambda: _vllm(model, args.eager, args.dtype),
        "hf": lambda: _hf(model, args.hf_batch_size, args.dtype),
    }
    results = {b: bench(b, makers[b], prompts, args) for b in args.backends.split(",")}
    print("\ntok/s        " + "".join(f"{b:>10}" for b in results) + "     ratio")
    for mode in MODES:
        rates = [results[b][mode] for b in results]
        ratio = f"{results['vllm'][mode] / results['hf'][mode]:9.2f}x" if len(results) == 2 else ""
        print(f"{mode:<13}" + "".join(f"{r:10.1f}" for r in rates) + ratio)
    if len(results) == 2:
        ok = results["vllm"]["greedy"] >= 5 * results["hf"]["greedy"]
        print(f"target (vLLM >= 5x transformers, greedy): {'met' if ok else 'NOT met'}")


def _cpu_matrix_isa() -> str:
    """Which of the instructions CPU GEMMs use this CPU has (torch's own detection)."""
    import torch

    checks = {
        "AMX": getattr(torch.cpu, "_is_amx_tile_supported", None),
        "AVX-512 BF16": getattr(torch.cpu, "_is_avx512_bf16_supported", None),
        "AVX-512": getattr(torch.cpu, "_is_avx512_supported", None),
    }
    return ", ".join(
        f"{name} {'yes' if check() else 'no'}" for name, check in checks.items() if check
    )


def _vllm(model: str, eager: bool, dtype: str) -> Generator:
    from cut_loop.generation.vllm import VLLMGenerator, find_vllm_python

    python = find_vllm_python()
    if python is None:
        raise SystemExit("no vLLM interpreter: run scripts/setup.sh --vllm")
    return VLLMGenerator(model, GenerationConfig(enforce_eager=eager, dtype=dtype), python)


def _hf(model: str, batch_size: int, dtype: str) -> Generator:
    from cut_loop.generation.hf import HFGenerator

    return HFGenerator(model, dtype=dtype, batch_size=batch_size)


if __name__ == "__main__":
    main()
