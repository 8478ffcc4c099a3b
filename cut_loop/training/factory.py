"""Choosing the trainer backend and the training objective (the loss) from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cut_loop.config import LossConfig, RunConfig, TrainConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.training.base import Objective, Trainer

if TYPE_CHECKING:
    import torch


def make_trainer(cfg: RunConfig, template: PromptTemplate) -> Trainer:
    """`torch` (one process, plain PyTorch) or `deepspeed` (ranks launched as a child); `auto`
    picks DeepSpeed when several GPUs are visible or a hostfile is configured.

    Refuses, before the loop generates anything, a loss the round's samples cannot feed."""
    if cfg.loss.name == "dpo" and cfg.generation.samples_per_instruction < 2:
        raise CutLoopError(
            "loss dpo needs generation.samples_per_instruction >= 2 (it compares judged"
            " responses to the same instruction): --set generation.samples_per_instruction=4"
        )
    if _backend(cfg.train) == "deepspeed":
        from cut_loop.training.deepspeed_trainer import DeepSpeedTrainer

        return DeepSpeedTrainer(cfg.train, cfg.loss, template, seed=cfg.seed)
    from cut_loop.training.torch_trainer import TorchTrainer

    return TorchTrainer(cfg.train, cfg.loss, template, seed=cfg.seed)


def _backend(train: TrainConfig) -> str:
    if train.backend != "auto":
        return train.backend
    import torch

    several = torch.cuda.device_count() > 1 or bool(train.deepspeed.hostfile)
    return "deepspeed" if several else "torch"


def make_objective(
    loss: LossConfig,
    train: TrainConfig,
    template: PromptTemplate,
    seed: int,
    device: torch.device,
    chunk: int = 512,
) -> Objective:
    """The `Objective` named by `loss.name` (`chunk`: label positions projected onto the
    vocabulary at once)."""
    if loss.name == "cut":
        from cut_loop.training.cut import CutObjective

        return CutObjective(
            template, train.max_length, loss.downsample, loss.threshold, loss.weight_unlike,
            seed, chunk, loss.truncated, loss.weight_like,
        )  # fmt: skip
    if loss.name == "sft":
        from cut_loop.training.sft import SftObjective

        return SftObjective(template, train.max_length, chunk, loss.truncated)
    if loss.name == "rrhf":
        from cut_loop.training.rrhf import RrhfObjective

        return RrhfObjective(
            template, train.max_length, loss.rrhf_weight, loss.length_penalty, chunk
        )
    if loss.name == "dpo":
        from cut_loop.training.dpo import DpoObjective

        return DpoObjective(
            template, train.max_length, loss.beta, device=device, bf16=train.bf16,
            batch_size=train.micro_batch_size, chunk=chunk,
        )  # fmt: skip
    if loss.name == "none":
        from cut_loop.training.control import NoTraining

        return NoTraining()
    raise CutLoopError(f"loss.name={loss.name!r} is not one of cut, sft, rrhf, dpo, none")
