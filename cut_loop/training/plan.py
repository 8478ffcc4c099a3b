"""Which examples each optimizer step trains on, and what a checkpoint must agree on to resume.

Shared by the torch and DeepSpeed trainers so that both train on exactly the same micro-batches
in the same order: one optimizer step = `grad_accum` micro-batches of `micro_batch_size`
examples, taken in a per-epoch permutation fixed by the seed. The examples of a step are a
function of the step number alone (and of the orders, which checkpoints store), so a resumed
run replays exactly the steps a killed one had left, on any number of processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cut_loop.config import LossConfig, TrainConfig


def step_counts(n_examples: int, config: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps of the run, capped by `max_steps`)."""
    micro_batches = math.ceil(n_examples / config.micro_batch_size)
    per_epoch = math.ceil(micro_batches / config.grad_accum)
    total = config.epochs * per_epoch
    return per_epoch, min(total, config.max_steps) if config.max_steps else total


def epoch_orders(n_examples: int, seed: int, epochs: int) -> list[list[int]]:
    """One permutation of the example indices per epoch."""
    return [
        np.random.default_rng([seed, epoch]).permutation(n_examples).tolist()
        for epoch in range(epochs)
    ]


def step_micro_batches(
    orders: list[list[int]], step: int, steps_per_epoch: int, config: TrainConfig
) -> tuple[int, list[list[int]]]:
    """(epoch, example indices of each micro-batch) of optimizer step `step` (0-based). The
    last step of an epoch may hold fewer than `grad_accum` micro-batches."""
    epoch, index = divmod(step, steps_per_epoch)
    span = config.grad_accum * config.micro_batch_size  # examples per optimizer step
    picked = orders[epoch][index * span : (index + 1) * span]
    size = config.micro_batch_size
    return epoch, [picked[j : j + size] for j in range(0, len(picked), size)]


def fingerprint(
    examples: Sequence[Any], total: int, seed: int, config: TrainConfig, loss: LossConfig
) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed by this run (not the process count:
    the steps do not depend on it)."""
    data = hashlib.sha256(
        json.dumps([dataclasses.asdict(e) for e in examples]).encode()
    ).hexdigest()
    return {
        "data": data, "total_steps": total, "seed": seed, "lora": config.lora.enabled,
        "micro_batch_size": config.micro_batch_size, "grad_accum": config.grad_accum,
        "loss": dataclasses.asdict(loss),
    }  # fmt: skip
