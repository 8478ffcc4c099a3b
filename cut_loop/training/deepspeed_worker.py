"""One DeepSpeed rank of a training stage: `python -m cut_loop.training.deepspeed_worker --spec
<work_dir>/deepspeed_spec.json`, started by `deepspeed_trainer.py` through the `deepspeed`
launcher or torchrun.

The same objective, examples and step plan as the torch trainer (`plan.py`): each optimizer step
takes the same `grad_accum` micro-batches, rank r running micro-batches r, r + world, ...; the
gradient is the mean over the step's micro-batches, as in the torch trainer, so the losses match
it up to the reduction order (and bf16 rounding where bf16 is on).

Checkpoints and resume: `deepspeed_checkpoint.py` (also where a different number of ranks
may resume).

At round end rank 0 writes one Hugging Face directory (safetensors + tokenizer) atomically: the
fp32 master weights are gathered from every rank (also ZeRO-3 partitions), copied into a freshly
loaded start model, LoRA merged, saved in the start model's dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers import get_cosine_schedule_with_warmup as cosine_schedule
from transformers.integrations import HfDeepSpeedConfig

from cut_loop.config import config_from_dict
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.rundir import JsonlAppender, atomic_write_json
from cut_loop.training.base import Objective, Triplet
from cut_loop.training.deepspeed_checkpoint import resume, save
from cut_loop.training.deepspeed_config import deepspeed_config
from cut_loop.training.deepspeed_trainer import ERROR_PREFIX
from cut_loop.training.examples import pad_token_id
from cut_loop.training.factory import make_objective
from cut_loop.training.plan import epoch_orders, fingerprint, step_counts, step_micro_batches
from cut_loop.training.policy_files import check_plain_head, replace_dir, save_policy


class LossModule(torch.nn.Module):
    """The model with the objective's loss as its forward. ZeRO-3 gathers a weight only inside
    some module's forward; the losses read the LM head's weight directly (chunked projection),
    so the whole loss must run inside one: this one."""

    def __init__(self, model: torch.nn.Module, objective: Objective, lora: bool) -> None:
        super().__init__()
        self.model, self.objective, self.lora = model, objective, lora

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.objective.loss(self.model.get_base_model() if self.lora else self.model, batch)


def train(spec: dict[str, Any]) -> None:
    cfg = config_from_dict({"train": spec["train"], "loss": spec["loss"], "seed": spec["seed"]})
    config, seed = cfg.train, cfg.seed
    work_dir, out_dir, start_model = (Path(spec[k]) for k in ("work_dir", "out_dir", "start"))
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")

    template = PromptTemplate(**spec["template"])
    objective = make_objective(cfg.loss, config, template, seed, device, spec["logit_chunk"])
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    triplets = [Triplet(**t) for t in spec["triplets"]]
    examples: list[Any] = []
    for turn in (0, 1):  # rank 0 first: it fills caches (DPO's reference) the others read
        if (rank == 0) == (turn == 0):
            examples = objective.build(triplets, tokenizer, start_model, work_dir)
        dist.barrier()
    metrics: dict[str, Any] = dict(objective.counts(examples))
    if not examples:
        if rank == 0:
            replace_dir(start_model, out_dir, copy=True)
            _write_result(work_dir, 0, 0, metrics)
        return

    steps_per_epoch, total = step_counts(len(examples), config)
    state: dict[str, Any] = {
        "fingerprint": fingerprint(examples, total, seed, config, cfg.loss),
        "orders": epoch_orders(len(examples), seed, config.epochs),
    }
    ds_config = deepspeed_config(config, world)
    engine = _engine(config, ds_config, start_model, objective, seed, total)
    step = start = resume(engine, work_dir, state, config.deepspeed.zero_stage, rank, world)
    stop = total if spec["stop_after_steps"] is None else min(total, spec["stop_after_steps"])
    if rank == 0:  # for the controller's progress bar
        atomic_write_json(work_dir / "progress.json", {"total": total, "start": start})
    pad_id = pad_token_id(tokenizer)
    log = JsonlAppender(work_dir / "log.jsonl") if rank == 0 else None
    try:
        while step < stop:
            epoch, micro = step_micro_batches(state["orders"], step, steps_per_epoch, config)
            t0 = time.perf_counter()
            lr = engine.get_lr()[0]
            sums, keys = _step(engine, objective, examples, micro, pad_id, rank, world, device)
            engine.step()
            step += 1
            row = _row(sums, keys, len(micro), engine.get_global_grad_norm(), lr, t0)
            metrics["loss"] = row["loss"]
            if log is not None:
                log.append({"step": step, "epoch": epoch, **row})
            if step % config.save_every == 0 or step == total:
                save(engine, work_dir, step, state, config, rank, world)
    finally:
        if log is not None:
            log.close()
    metrics["resumed_from"] = start
    if step == total:
        _save_model(engine, config, start_model, tokenizer, out_dir, rank)
    if rank == 0:
        _write_result(work_dir, step, len(examples), metrics)


def _engine(
    config: Any,
    ds_config: dict[str, Any],
    start_model: Path,
    objective: Objective,
    seed: int,
    total: int,
) -> Any:
    torch.manual_seed(seed)  # LoRA initialisation and dropout: the same on every rank
    # ZeRO-3: while this object lives, transformers loads the weights straight into each rank's
    # partitions (zero.Init), not one whole fp32 copy per rank (52 GB for a 13B model).
    zero3 = HfDeepSpeedConfig(ds_config) if config.deepspeed.zero_stage == 3 else None
    model = AutoModelForCausalLM.from_pretrained(start_model, dtype=torch.float32)
    check_plain_head(model, start_model)
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    if config.lora.enabled:
        model = _with_lora(model, config.lora)
    params = [p for p in model.parameters() if p.requires_grad]
    # No decay on norms and biases (1-d tensors), as in the torch trainer; a ZeRO-3 partition
    # is flat, its `ds_shape` is the weight's.
    matrices = [p for p in params if len(getattr(p, "ds_shape", p.shape)) >= 2]
    rest = [p for p in params if len(getattr(p, "ds_shape", p.shape)) < 2]
    groups = [
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    # torch's AdamW as the torch trainer uses, unless the config names DeepSpeed's (offload).
    optimizer = None
    if "optimizer" not in ds_config:
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    engine, *_ = deepspeed.initialize(
        model=LossModule(model, objective, config.lora.enabled),
        optimizer=optimizer,
        model_parameters=groups if optimizer is None else None,
        lr_scheduler=lambda opt: cosine_schedule(opt, config.warmup_steps, total),
        config=ds_config,
    )
    engine.train()
    del zero3  # later loads (the round-end save on rank 0) are plain, whole models again
    return engine


def _with_lora(model: torch.nn.Module, lora: Any) -> torch.nn.Module:
    from peft import LoraConfig as PeftLoraConfig  # peft's import costs seconds
    from peft import get_peft_model

    return get_peft_model(
        model,
        PeftLoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM",
        ),
    )  # fmt: skip


def _step(
    engine: Any,
    objective: Objective,
    examples: list[Any],
    micro: list[list[int]],
    pad_id: int,
    rank: int,
    world: int,
    device: torch.device,
) -> tuple[torch.Tensor, list[str]]:
    """Forward + backward of this rank's share of one step's micro-batches. Every rank runs the
    same number of passes (ZeRO reduces gradients inside backward, a collective): a rank
    without a micro-batch of its own repeats one with weight 0. Returns the summed statistics
    [loss, tokens, then (sum, count) per component] of this rank's real micro-batches."""
    mine = micro[rank::world]
    passes = -(-len(micro) // world)
    sums: list[float] = [0.0, 0.0]
    keys: list[str] = []
    for j in range(passes):
        real = j < len(mine)
        batch = objective.collate([examples[i] for i in (mine[j] if real else micro[0])], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        engine.set_gradient_accumulation_boundary(j == passes - 1)
        loss, comps = engine(batch)
        # After the ranks' mean, the gradient is the mean over the step's micro-batch losses.
        engine.backward(loss * (world / len(micro) if real else 0.0), scale_wrt_gas=False)
        if not keys:
            keys = sorted(comps)
            sums += [0.0] * (2 * len(keys))
        if real:
            sums[0] += loss.item()
            sums[1] += float(batch["attention_mask"].sum())
            for n, key in enumerate(keys):
                if comps[key] is not None:
                    sums[2 + 2 * n] += float(comps[key])
                    sums[3 + 2 * n] += 1.0
    total = torch.tensor(sums, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.cpu(), keys


def _row(
    sums: torch.Tensor, keys: list[str], micro: int, norm: Any, lr: float, t0: float
) -> dict[str, Any]:
    """One log.jsonl row, the torch trainer's columns."""
    row: dict[str, Any] = {"loss": sums[0].item() / micro}
    for n, key in enumerate(keys):
        count = sums[3 + 2 * n].item()
        row[key] = sums[2 + 2 * n].item() / count if count else None
    seconds = time.perf_counter() - t0
    grad_norm = None if norm is None else float(norm)
    tokens = int(sums[1].item())
    return {
        **row, "grad_norm": grad_norm, "tokens": tokens, "lr": lr, "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }  # fmt: skip


def _save_model(
    engine: Any, config: Any, start_model: Path, tokenizer: Any, out_dir: Path, rank: int
) -> None:
    """The trained policy as one HF directory, written by rank 0. Every rank takes part in
    gathering each trainable weight's fp32 master copy (a collective under ZeRO)."""
    trained: dict[str, torch.Tensor] = {}
    for name, param in engine.module.model.named_parameters():
        if not param.requires_grad:
            continue
        full = safe_get_full_fp32_param(param)  # None: no separate master copy (ZeRO 0, fp32)
        if rank == 0:
            trained[name] = (param.detach() if full is None else full).float().cpu().clone()
    if rank == 0:
        save_dtype = AutoConfig.from_pretrained(start_model).dtype or torch.float32
        model = AutoModelForCausalLM.from_pretrained(start_model, dtype=torch.float32)
        if config.lora.enabled:
            model = _with_lora(model, config.lora)
        params = dict(model.named_parameters())
        if not trained.keys() <= params.keys():
            raise CutLoopError(f"{out_dir}: the trained weights do not match {start_model}")
        with torch.no_grad():
            for name, tensor in trained.items():
                params[name].copy_(tensor.view_as(params[name]))
        save_policy(model, tokenizer, out_dir, save_dtype, merge_lora=config.lora.enabled)
    dist.barrier()


def _write_result(work_dir: Path, steps: int, examples: int, metrics: dict[str, Any]) -> None:
    atomic_write_json(
        work_dir / "result.json", {"steps": steps, "examples": examples, "metrics": metrics}
    )


def _die_with(pid: int) -> None:
    """Exit as soon as process `pid` (the controller) is gone: a killed controller must not
    leave ranks training (the launcher then stops the other ranks). Only ranks on the
    controller's node watch: the launcher does not export CUTLOOP_* variables to other nodes,
    where stopping is left to the launcher's own teardown (pdsh)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
                stat = Path(f"/proc/{pid}/stat").read_text()
            except (ProcessLookupError, FileNotFoundError):
                os._exit(1)
            if stat.rsplit(")", 1)[1].split()[0] == "Z":  # dead, not yet reaped
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", type=Path, required=True)
    args, _ = parser.parse_known_args(argv)  # the deepspeed launcher adds --local_rank
    if "CUTLOOP_CONTROLLER_PID" in os.environ:
        _die_with(int(os.environ["CUTLOOP_CONTROLLER_PID"]))
    try:
        train(json.loads(args.spec.read_text()))
    except CutLoopError as e:
        print(f"{ERROR_PREFIX}{e}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
