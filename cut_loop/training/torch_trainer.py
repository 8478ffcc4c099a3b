"""The single-process PyTorch trainer: AdamW, warm-up + cosine, resumable checkpoints, and any
loss behind the `Objective` protocol (CUT, SFT, RRHF, DPO: `factory.make_objective`).

One optimizer step = `grad_accum` micro-batches of `micro_batch_size` examples, taken in a
per-epoch permutation fixed by the seed and stored in every checkpoint (`plan.py`, shared with
the DeepSpeed trainer). Which examples a step uses is a function of the step number alone, so a
resumed run replays exactly the steps a killed one had left, with the same data, weights,
optimizer and RNG states.

work_dir holds `checkpoint-<step>/` (the newest two) and `log.jsonl` (one row per step: loss,
the objective's components, lr, grad_norm, tokens, seconds, tokens_per_s; a resumed run
re-appends the steps after its checkpoint, so readers keep the last row per step).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    get_cosine_schedule_with_warmup,
)

from cut_loop.config import LossConfig, TrainConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.progress import stage_bar
from cut_loop.rundir import JsonlAppender
from cut_loop.training.base import TrainResult, Triplet
from cut_loop.training.examples import pad_token_id
from cut_loop.training.factory import make_objective
from cut_loop.training.plan import epoch_orders, fingerprint, step_counts, step_micro_batches
from cut_loop.training.policy_files import check_plain_head, replace_dir, save_policy


class TorchTrainer:
    """`Trainer` backend for one process (CPU, or one GPU when CUDA is available)."""

    def __init__(
        self,
        config: TrainConfig,
        loss: LossConfig,
        template: PromptTemplate,
        seed: int,
        *,
        logit_chunk: int = 512,
    ) -> None:
        self.config, self.loss, self.seed = config, loss, seed
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # logit_chunk: label positions projected onto the vocabulary at once.
        self.objective = make_objective(loss, config, template, seed, self.device, logit_chunk)

    def train(
        self,
        triplets: Sequence[Triplet],
        start_model: Path,
        work_dir: Path,
        out_dir: Path,
        *,
        stop_after_steps: int | None = None,
    ) -> TrainResult:
        """Train on `triplets` from `start_model`, resuming from work_dir's newest checkpoint;
        save the merged policy (safetensors + tokenizer) to `out_dir` atomically.

        `stop_after_steps` is for tests: return once that many optimizer steps are done, without
        saving `out_dir`, as a run killed there would (checkpoints are kept as usual)."""
        cfg, work_dir, out_dir = self.config, Path(work_dir), Path(out_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        for stale in work_dir.glob(".checkpoint-*.tmp"):  # a save a kill interrupted
            shutil.rmtree(stale)
        tokenizer = AutoTokenizer.from_pretrained(start_model)
        examples = self.objective.build(triplets, tokenizer, Path(start_model), work_dir)
        metrics: dict[str, Any] = dict(self.objective.counts(examples))
        if not examples:
            replace_dir(Path(start_model), out_dir, copy=True)
            return TrainResult(steps=0, examples=0, metrics=metrics)

        torch.manual_seed(self.seed)  # LoRA initialisation and dropout
        save_dtype = AutoConfig.from_pretrained(start_model).dtype or torch.float32
        model = self._load_model(Path(start_model))
        optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
        steps_per_epoch, total = step_counts(len(examples), cfg)
        scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total)
        state = {
            "fingerprint": fingerprint(examples, total, self.seed, cfg, self.loss),
            "orders": epoch_orders(len(examples), self.seed, cfg.epochs),
        }
        step = start = _resume(work_dir, model, optimizer, scheduler, state)
        stop = total if stop_after_steps is None else min(total, stop_after_steps)
        pad_id = pad_token_id(tokenizer)
        trainable = [p for p in model.parameters() if p.requires_grad]
        model.train()

        with (
            stage_bar("training", total, done=step, unit="step") as bar,
            JsonlAppender(work_dir / "log.jsonl") as log,
        ):
            while step < stop:
                epoch, micro = step_micro_batches(state["orders"], step, steps_per_epoch, cfg)
                group = [[examples[i] for i in indices] for indices in micro]
                t0 = time.perf_counter()
                row = self._step(model, trainable, group, pad_id)
                row["lr"] = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                row["seconds"] = time.perf_counter() - t0
                row["tokens_per_s"] = row["tokens"] / row["seconds"]
                log.append({"step": step, "epoch": epoch, **row})
                metrics["loss"] = row["loss"]
                if step % cfg.save_every == 0 or step == total:
                    _save_checkpoint(work_dir, step, model, optimizer, scheduler, state)
                bar.advance()

        metrics["resumed_from"] = start
        if step < total:
            return TrainResult(steps=step, examples=len(examples), metrics=metrics)
        save_policy(model, tokenizer, out_dir, save_dtype, merge_lora=cfg.lora.enabled)
        return TrainResult(steps=step, examples=len(examples), metrics=metrics)

    def _load_model(self, path: Path) -> torch.nn.Module:
        # float32 master weights: autocast runs the matmuls in bf16, the optimizer stays exact.
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        check_plain_head(model, path)
        if self.config.gradient_checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        lora = self.config.lora
        if lora.enabled:
            from peft import LoraConfig as PeftLoraConfig  # peft's import costs seconds
            from peft import get_peft_model

            model = get_peft_model(
                model,
                PeftLoraConfig(
                    r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                    target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM",
                ),
            )  # fmt: skip
        return model.to(self.device)

    def _step(
        self,
        model: torch.nn.Module,
        trainable: list[torch.nn.Parameter],
        group: list[list[Any]],
        pad_id: int,
    ) -> dict[str, Any]:
        """Forward + backward over one accumulation group, then clip. Returns the step's
        loss, components (means over micro-batches that had them), grad_norm and tokens."""
        base = model.get_base_model() if self.config.lora.enabled else model
        loss_sum, tokens, parts = 0.0, 0, []
        for examples in group:
            batch = self.objective.collate(examples, pad_id)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
                loss, comps = self.objective.loss(base, batch)
            # Micro-batch means averaged over the group, as the reference's Trainer does.
            (loss / len(group)).backward()
            loss_sum += loss.item()
            tokens += int(batch["attention_mask"].sum())
            parts.append(comps)
        row: dict[str, Any] = {"loss": loss_sum / len(group)}
        for key in parts[0]:
            values = [p[key] for p in parts if p[key] is not None]
            row[key] = sum(values) / len(values) if values else None
        norm = torch.nn.utils.clip_grad_norm_(trainable, self.config.max_grad_norm or math.inf)
        return {**row, "grad_norm": norm.item(), "tokens": tokens}


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on norms and biases (1-d tensors), as in the usual AdamW recipes.
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def _checkpoints(work_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a directory is complete once it has its name)."""
    found = [p for p in work_dir.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def _save_checkpoint(
    work_dir: Path, step: int, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: dict
) -> None:
    """Trainable weights (the whole model, or just the LoRA adapter), optimizer, scheduler,
    RNG states, step and data order into checkpoint-<step>/, atomically; keep the newest 2."""
    tmp = work_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }
    save_file(weights, tmp / "trainable.safetensors")
    np_state = np.random.get_state()
    rng = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
        tmp / "state.pt",
    )
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}))
    replace_dir(tmp, work_dir / f"checkpoint-{step}")
    for old in _checkpoints(work_dir)[:-2]:
        shutil.rmtree(old)


def _resume(
    work_dir: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: dict
) -> int:
    """Load the newest checkpoint into the objects (and `state["orders"]`); return its step,
    or 0 when there is none. A checkpoint made for other data or settings is an error."""
    found = _checkpoints(work_dir)
    if not found:
        return 0
    path = found[-1]
    saved = json.loads((path / "trainer_state.json").read_text())
    if saved["fingerprint"] != state["fingerprint"]:
        raise CutLoopError(
            f"{path}: this checkpoint was made for other training data or settings;"
            f" delete {work_dir} to train this round from the start"
        )
    state["orders"] = saved["orders"]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    weights = load_file(path / "trainable.safetensors")
    if weights.keys() != params.keys():
        raise CutLoopError(f"{path}: its weights do not match the model being trained")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    blob = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng = blob["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(rng["python"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    return int(saved["step"])
