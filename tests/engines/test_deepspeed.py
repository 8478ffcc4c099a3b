"""The DeepSpeed trainer for real: 2 CPU ranks (gloo, DS_ACCELERATOR=cpu) on the tiny model.

Each launch costs ~10-20 s here (two interpreters importing DeepSpeed + transformers); the first
one on a machine also JIT-builds DeepSpeed's shared-memory comm op (~30 s, cached afterwards).
The file takes ~2.5 min on 2 idle cores (~4.5 min when busy). The loop test runs in bf16 (the
default), the others in float32 so that they can compare with the torch trainer tightly.

Tolerance against the torch trainer: both runs are float32 (bf16 off), on the same micro-batches
in the same order with the same seed; the only difference is where the gradient sum happens
(each rank sums its micro-batches, then gloo averages the ranks, vs one running sum), which
changes the last bits of each step (~1e-7 relative) and Adam carries them along. 1e-4 relative
on losses and 1e-4 absolute on weights (lr 1e-2 steps move weights by ~1e-2) leave room for that
and none for a wrong batch, a missing micro-batch or a skipped step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cut_loop.config import DeepSpeedConfig, LoraConfig, LossConfig, TrainConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import load_template
from cut_loop.training.deepspeed_trainer import DeepSpeedTrainer
from cut_loop.training.torch_trainer import TorchTrainer
from tests.loop.conftest import ROOT, run_cli
from tests.unit.test_torch_trainer import TRIPLETS

pytestmark = pytest.mark.slow

# 8 examples (TRIPLETS, all kept): 2 steps an epoch, 6 in all.
CONFIG = TrainConfig(
    learning_rate=1e-2,
    warmup_steps=1,
    epochs=3,
    micro_batch_size=2,
    grad_accum=2,
    max_length=64,
    save_every=2,
    bf16=False,
    deepspeed=DeepSpeedConfig(num_procs=2),
)


def _config(stage: int, lora: bool = False, procs: int = 2) -> TrainConfig:
    ds = replace(CONFIG.deepspeed, zero_stage=stage, num_procs=procs)
    # LoRA without dropout: dropout masks come from per-rank RNG streams, not the torch one's.
    return replace(CONFIG, deepspeed=ds, lora=LoraConfig(enabled=lora, r=4, alpha=8, dropout=0.0))


def _trainer(cls: type, config: TrainConfig) -> DeepSpeedTrainer | TorchTrainer:
    return cls(config, LossConfig(downsample=1.0), load_template("alpaca"), seed=0)


def _rows(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]


def _losses(work_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _rows(work_dir)}  # a resume re-logs: last row wins


@pytest.mark.parametrize(
    ("stage", "lora"), [(2, False), (3, False), (3, True)], ids=["zero2", "zero3", "zero3-lora"]
)
def test_losses_and_weights_match_the_torch_trainer(tiny_model_dir, tmp_path, stage, lora):
    config = _config(stage, lora)
    buffers = _shared_memory_buffers()
    ds = _trainer(DeepSpeedTrainer, config).train(
        TRIPLETS, tiny_model_dir, tmp_path / "ds", tmp_path / "ds-out"
    )
    assert _shared_memory_buffers() <= buffers  # the ranks' all-reduce buffers are gone
    ref = _trainer(TorchTrainer, config).train(
        TRIPLETS, tiny_model_dir, tmp_path / "torch", tmp_path / "torch-out"
    )
    assert (ds.steps, ds.examples) == (ref.steps, ref.examples) == (6, 8)
    assert ds.metrics["negatives"] == ref.metrics["negatives"] == 4
    a, b = _losses(tmp_path / "torch"), _losses(tmp_path / "ds")
    assert sorted(b) == list(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    assert a[6] < a[1]  # it did learn
    row = _rows(tmp_path / "ds")[0]
    assert {"align_loss", "misalign_loss", "lr", "grad_norm", "tokens", "tokens_per_s"} <= set(row)

    wa, wb = (
        load_file(tmp_path / "torch-out/model.safetensors"),
        load_file(tmp_path / "ds-out/model.safetensors"),
    )
    assert wa.keys() == wb.keys()  # LoRA merged: no adapter keys
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-4, msg=name)
    AutoModelForCausalLM.from_pretrained(tmp_path / "ds-out")
    AutoTokenizer.from_pretrained(tmp_path / "ds-out")
    assert not list(tmp_path.glob(".*"))  # no temporary directory left behind

    if stage == 3 and not lora:
        _assert_output_is_the_zero3_state(tmp_path / "ds", tmp_path / "ds-out")
        # The partitions belong to 2 ranks: 1 rank may not resume them.
        with pytest.raises(CutLoopError, match="saved by 2 ranks, resumed with 1"):
            _trainer(DeepSpeedTrainer, _config(3, procs=1)).train(
                TRIPLETS, tiny_model_dir, tmp_path / "ds", tmp_path / "other"
            )


def _shared_memory_buffers() -> set[str]:
    """DeepSpeed's CPU all-reduce buffers in /dev/shm (RAM), of any launch."""
    return {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}


def _assert_output_is_the_zero3_state(work_dir: Path, out_dir: Path) -> None:
    """The consolidated directory holds what the ranks' partitions held at the last step, read
    back independently with DeepSpeed's own consolidation of the final checkpoint."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    held = get_fp32_state_dict_from_zero_checkpoint(str(work_dir), tag="checkpoint-6")
    saved = load_file(out_dir / "model.safetensors")
    held = {k.removeprefix("model."): v for k, v in held.items()}  # the LossModule wrapper
    assert saved.keys() <= held.keys()
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, held[name].to(tensor.dtype), rtol=0, atol=0, msg=name)


def test_sigkill_mid_round_then_resume_continues_from_the_saved_step(tiny_model_dir, tmp_path):
    """Kill the launcher's process group mid-round (the controller reports it), resume and kill
    the controller alone (the ranks follow it), resume in-process to the end."""
    # 50 steps of ~30 ms, a checkpoint every 2: the ranks run on for up to 0.5 s after their
    # controller dies (the watchdog's period), and must not reach the end in that time.
    total = 50
    config = replace(_config(2), epochs=total // 2)
    work, out = tmp_path / "w", tmp_path / "out"
    buffers = _shared_memory_buffers()

    controller = _controller(config, tiny_model_dir, work, out)
    _wait_for_rows(work, 3, controller)  # past checkpoint-2
    launcher = _child_pids(controller.pid)
    assert len(launcher) == 1
    os.killpg(launcher[0], signal.SIGKILL)  # the launcher and its ranks
    output = controller.communicate(timeout=60)[0]
    assert controller.returncode != 0
    assert "DeepSpeed training failed" in output and "deepspeed.log" in output
    killed_at = max(r["step"] for r in _rows(work))
    assert _saved_step(work) >= 2 and killed_at < total and not out.exists()

    controller = _controller(config, tiny_model_dir, work, out)
    _wait_for_rows(work, len(_rows(work)) + 1, controller)
    (launcher,) = _child_pids(controller.pid)
    controller.kill()  # SIGKILL: the controller runs no cleanup
    controller.wait()
    deadline = time.monotonic() + 30
    while _live_group_members(launcher):
        assert time.monotonic() < deadline, "the ranks outlived their controller"
        time.sleep(0.2)

    saved = _saved_step(work)
    assert not out.exists()
    result = _trainer(DeepSpeedTrainer, config).train(TRIPLETS, tiny_model_dir, work, out)
    assert result.steps == total and result.metrics["resumed_from"] == saved
    # The killed controller's launch left its ranks' shared memory; the resume released it.
    assert _shared_memory_buffers() <= buffers
    logged = [r["step"] for r in _rows(work)]
    assert logged[: _first_kill(logged)] == list(range(1, killed_at + 1))
    assert logged[-(total - saved) :] == list(range(saved + 1, total + 1))  # resumed at saved + 1

    # The resumes replayed exactly the lost steps: the same losses as one uninterrupted run.
    ref = _trainer(TorchTrainer, config)
    ref.train(TRIPLETS, tiny_model_dir, tmp_path / "t", tmp_path / "t-out")
    a, b = _losses(tmp_path / "t"), _losses(work)
    assert a.keys() == b.keys()
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    AutoModelForCausalLM.from_pretrained(out)


def _controller(config: TrainConfig, model: Path, work: Path, out: Path) -> subprocess.Popen:
    """DeepSpeedTrainer.train in a process of its own, as `cutloop run` would call it."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from cut_loop.config import LossConfig, config_from_dict
        from cut_loop.generation.prompts import load_template
        from cut_loop.training.deepspeed_trainer import DeepSpeedTrainer
        from tests.unit.test_torch_trainer import TRIPLETS
        train = config_from_dict({{"train": {asdict(config)!r}}}).train
        trainer = DeepSpeedTrainer(train, LossConfig(downsample=1.0), load_template("alpaca"), 0)
        trainer.train(TRIPLETS, Path({str(model)!r}), Path({str(work)!r}), Path({str(out)!r}))
    """)
    return subprocess.Popen(
        [sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for_rows(work: Path, rows: int, controller: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not (work / "log.jsonl").exists() or len(_rows(work)) < rows:
        if controller.poll() is not None:
            pytest.fail(f"the controller ended first: {controller.stdout.read()}")
        assert time.monotonic() < deadline, f"training never logged {rows} rows"
        time.sleep(0.01)


def _saved_step(work: Path) -> int:
    return int((work / "latest").read_text().split("-")[1])


def _first_kill(steps: list[int]) -> int:
    """Index of the first row that goes back (a resume re-logging steps)."""
    return next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])


def _child_pids(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_zero0_resumes_on_another_number_of_ranks(tiny_model_dir, tmp_path):
    """ZeRO stage 0 keeps whole optimizer states: 2 ranks stop at step 3, 1 rank finishes from
    checkpoint-2, and the losses are those of an uninterrupted run (ZeRO 1-3 refuse: above)."""
    work = tmp_path / "w"
    stopped = _trainer(DeepSpeedTrainer, _config(0)).train(
        TRIPLETS, tiny_model_dir, work, tmp_path / "out", stop_after_steps=3
    )
    assert stopped.steps == 3 and not (tmp_path / "out").exists()
    result = _trainer(DeepSpeedTrainer, _config(0, procs=1)).train(
        TRIPLETS, tiny_model_dir, work, tmp_path / "out"
    )
    assert result.steps == 6 and result.metrics["resumed_from"] == 2
    assert [r["step"] for r in _rows(work)] == [1, 2, 3, 3, 4, 5, 6]
    _trainer(TorchTrainer, _config(0)).train(
        TRIPLETS, tiny_model_dir, tmp_path / "t", tmp_path / "to"
    )
    a, b = _losses(tmp_path / "t"), _losses(work)
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step


def test_a_rank_error_is_one_line_with_the_log_path(tiny_model_dir, tmp_path):
    scaled = tmp_path / "scaled"  # a model whose logits are rescaled: the ranks refuse it
    shutil.copytree(tiny_model_dir, scaled)
    config_json = json.loads((scaled / "config.json").read_text())
    (scaled / "config.json").write_text(json.dumps({**config_json, "logit_scale": 0.5}))
    with pytest.raises(CutLoopError) as e:
        _trainer(DeepSpeedTrainer, _config(2)).train(
            TRIPLETS, scaled, tmp_path / "w", tmp_path / "out"
        )
    message = str(e.value)
    assert "\n" not in message
    assert f"{scaled}: models that rescale or cap their logits are not supported" in message
    assert str(tmp_path / "w" / "deepspeed.log") in message
    assert not (tmp_path / "out").exists()


def test_one_loop_round_with_the_deepspeed_trainer(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "8", "--eval-size", "2",
        "--max-new-tokens", "16", "--iterations", "1", "--judge", "rules",
        "--trainer", "deepspeed",
        "--set", "generation.template=alpaca", "--set", "train.warmup_steps=1",
        "--set", "train.micro_batch_size=2", "--set", "train.grad_accum=2",
        "--set", "train.deepspeed.num_procs=2", "--set", "loss.downsample=1.0",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    model_dir = run_dir / "round-01" / "model"
    AutoModelForCausalLM.from_pretrained(model_dir)
    assert (run_dir / "round-01" / "DONE.train").exists()
    assert (run_dir / "round-01" / "train" / "deepspeed.log").exists()
