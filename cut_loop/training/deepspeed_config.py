"""The DeepSpeed JSON config of a training stage: generated from the run config, with a user's
file (train.deepspeed.config_file) merged over it and checked against it.

Batch sizes are the run's, whatever the process count: an optimizer step is always
`grad_accum` micro-batches of `micro_batch_size` examples (the torch trainer's step), spread
over the ranks, so each rank accumulates `grad_accum / world_size` micro-batches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cut_loop.config import TrainConfig
from cut_loop.errors import CutLoopError

# Keys the trainer owns: a user file may state them ("auto" or the same value), not change them.
_BATCH_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size")


def accumulation_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-batches each rank runs per optimizer step."""
    if config.grad_accum % world_size:
        raise CutLoopError(
            f"train.grad_accum={config.grad_accum} must be a multiple of the {world_size}"
            " DeepSpeed ranks (each rank takes an equal share of a step's micro-batches)"
        )
    return config.grad_accum // world_size


def generated_config(config: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config the run config implies (no user file)."""
    ds = config.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": accumulation_steps(config, world_size),
        "train_batch_size": config.micro_batch_size * config.grad_accum,
        "gradient_clipping": config.max_grad_norm,  # 0: no clipping, as in the torch trainer
        "bf16": {"enabled": config.bf16},
        "zero_optimization": zero,
        # The trainer passes torch's AdamW (same numbers as the torch trainer, no JIT build).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the trainer writes its own log.jsonl
        "wall_clock_breakdown": False,
    }
    if ds.offload_optimizer:
        # ZeRO-Offload steps on the CPU with DeepSpeedCPUAdam, built by DeepSpeed from this.
        out["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": config.learning_rate, "weight_decay": config.weight_decay},
        }
    return out


def deepspeed_config(config: TrainConfig, world_size: int) -> dict[str, Any]:
    """The generated config with train.deepspeed.config_file (if any) merged over it. Raises
    CutLoopError, naming the file and key, for a file that is not a JSON object, that sets a
    scheduler (the schedule is train.warmup_steps + cosine) or batch sizes that disagree."""
    out = generated_config(config, world_size)
    if not config.deepspeed.config_file:
        return out
    path = Path(config.deepspeed.config_file)
    where = f"train.deepspeed.config_file={path}"
    try:
        user = json.loads(path.read_text())
    except FileNotFoundError:
        raise CutLoopError(f"{where}: no such file") from None
    except json.JSONDecodeError as e:
        raise CutLoopError(f"{where}: invalid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(user, dict):
        raise CutLoopError(f"{where}: a DeepSpeed config must be a JSON object")
    if "scheduler" in user:
        raise CutLoopError(
            f"{where}: drop its 'scheduler': the trainer schedules the learning rate"
            " (train.warmup_steps, then cosine)"
        )
    for key in _BATCH_KEYS:
        if key in user and user[key] != "auto" and user[key] != out[key]:
            raise CutLoopError(
                f"{where}: {key}={user[key]!r} disagrees with the run config's {out[key]}"
                f" (train.micro_batch_size={config.micro_batch_size},"
                f" train.grad_accum={config.grad_accum}, {world_size} ranks)"
            )
    return _merge(out, {k: v for k, v in user.items() if k not in _BATCH_KEYS})


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`, sections key by key; "auto" keeps the generated value."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value != "auto":
            out[key] = value
    return out
