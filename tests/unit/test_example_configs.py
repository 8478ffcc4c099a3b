"""Every ready-made config in configs/ loads with the project's config loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from cut_loop.config import resolve_run_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path: Path) -> None:
    resolve_run_config(path)


def test_the_deepspeed_configs_say_what_they_promise() -> None:
    by_name = {p.name: resolve_run_config(p) for p in CONFIGS}
    cut = by_name["cut-13b-8gpu.yaml"].train
    assert (cut.backend, cut.deepspeed.zero_stage, cut.deepspeed.num_gpus) == ("deepspeed", 3, 8)
    assert (cut.lora.enabled, cut.lora.r, cut.lora.alpha) == (True, 16, 16)
    assert cut.lora.target_modules == ["gate_proj", "up_proj", "down_proj"]
    assert cut.micro_batch_size * cut.grad_accum == 8 and cut.learning_rate == 4e-4
    offload = by_name["7b-zero3-offload.yaml"].train
    assert not offload.lora.enabled and offload.deepspeed.zero_stage == 3
    assert offload.deepspeed.offload_optimizer and offload.deepspeed.offload_params
    cpu = by_name["cpu-deepspeed-2proc.yaml"].train.deepspeed
    assert (cpu.num_procs, cpu.omp_threads, cpu.zero_stage) == (2, 1, 2)
