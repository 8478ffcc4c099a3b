"""DeepSpeed checkpoints of a training stage, and resuming from them.

Checkpoints are DeepSpeed's own (`save_checkpoint` into work_dir/checkpoint-<step>/), with the
step, the sample order and the fingerprint as client state, each rank's RNG states beside them,
and `cutloop_state.json` written last by rank 0; `work_dir/latest` names the newest complete one
(DeepSpeed's launcher-agnostic resume pointer), the newest two are kept. A re-launch resumes
from it, on any number of ranks for ZeRO stage 0 (whole states, saved by rank 0; ranks that
did not exist take rank 0's RNG streams, so dropout masks differ from an uninterrupted run).
ZeRO 1, 2 and 3 partition the optimizer states by rank, and DeepSpeed 0.19.8's `load_checkpoint`
refuses another data-parallel size (`elastic_checkpoint` no longer helps). Its offline route,
`deepspeed.checkpoint.ds_to_universal` + `checkpoint.load_universal`, does not take these
checkpoints either (tried on a ZeRO-2 one: it wants Megatron's `universal_checkpoint_info`, and
`--inject_missing_state` then fails reading the optimizer state). So `resume` refuses first,
naming the saved rank count, before anything is loaded.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cut_loop.errors import CutLoopError
from cut_loop.rundir import atomic_write_json, atomic_write_text


def tags(work_dir: Path) -> list[Path]:
    """Checkpoint directories in work_dir, oldest first (complete or not: `latest` says)."""
    found = [p for p in work_dir.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def save(
    engine: Any, work_dir: Path, step: int, state: dict, config: Any, rank: int, world: int
) -> None:
    """DeepSpeed checkpoint of `step`; it counts once rank 0 has written `latest` (after every
    rank's files), so a kill mid-save leaves the previous one in charge."""
    tag = f"checkpoint-{step}"
    client = {"step": step, "orders": state["orders"], "fingerprint": state["fingerprint"]}
    engine.save_checkpoint(
        str(work_dir), tag=tag, client_state=client, save_latest=False,
        exclude_frozen_parameters=config.lora.enabled,
    )  # fmt: skip
    torch.save(_rng_state(), work_dir / tag / f"rng-{rank}.pt")
    dist.barrier()
    if rank == 0:
        meta = {
            "step": step, "world_size": world, "zero_stage": config.deepspeed.zero_stage,
            "fingerprint": state["fingerprint"],
        }  # fmt: skip
        atomic_write_json(work_dir / tag / "cutloop_state.json", meta)
        atomic_write_text(work_dir / "latest", tag)
        for old in tags(work_dir)[:-2]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def resume(engine: Any, work_dir: Path, state: dict, stage: int, rank: int, world: int) -> int:
    """Load the checkpoint `latest` names into the engine and `state`; its step, or 0."""
    pointer = work_dir / "latest"
    if not pointer.exists():
        return 0
    tag = pointer.read_text().strip()
    meta = json.loads((work_dir / tag / "cutloop_state.json").read_text())
    if meta["fingerprint"] != state["fingerprint"] or meta["zero_stage"] != stage:
        raise CutLoopError(
            f"{work_dir / tag}: this checkpoint was made for other training data or settings;"
            f" delete {work_dir} to train this round from the start"
        )
    if meta["world_size"] != world and stage > 0:
        raise CutLoopError(
            f"{work_dir / tag}: saved by {meta['world_size']} ranks, resumed with {world}:"
            f" DeepSpeed cannot re-partition ZeRO-{stage} optimizer states on load; resume with"
            f" {meta['world_size']} ranks (train.deepspeed.num_gpus / num_procs) or delete"
            f" {work_dir} to train this round from the start"
        )
    _, client = engine.load_checkpoint(
        str(work_dir), tag=tag, load_module_strict=not engine.module.lora
    )
    state["orders"] = client["orders"]
    own = work_dir / tag / f"rng-{rank}.pt"
    _set_rng_state(torch.load(own if own.exists() else work_dir / tag / "rng-0.pt"))
    return int(client["step"])


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    random.setstate(rng["python"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
