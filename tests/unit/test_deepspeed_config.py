"""The DeepSpeed trainer without launching it: the generated DeepSpeed config, a user's JSON
merged over it, the launch command, the backend choice and the failure line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cut_loop.config import LossConfig, TrainConfig, config_from_dict
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import load_template
from cut_loop.training.deepspeed_config import deepspeed_config
from cut_loop.training.deepspeed_trainer import DeepSpeedTrainer, last_error, launch_command
from cut_loop.training.factory import make_trainer
from cut_loop.training.torch_trainer import TorchTrainer

TRAIN = TrainConfig(micro_batch_size=4, grad_accum=4, max_grad_norm=1.0, learning_rate=4e-4)


def _with(config: TrainConfig = TRAIN, **ds) -> TrainConfig:
    return replace(config, deepspeed=replace(config.deepspeed, **ds))


def test_generated_config_spreads_the_step_over_the_ranks() -> None:
    out = deepspeed_config(_with(zero_stage=3), world_size=2)
    assert out["train_micro_batch_size_per_gpu"] == 4
    assert out["gradient_accumulation_steps"] == 2  # 4 micro-batches a step, 2 per rank
    assert out["train_batch_size"] == 16  # = the torch trainer's step
    assert out["gradient_clipping"] == 1.0
    assert out["bf16"] == {"enabled": True}
    assert out["zero_optimization"] == {"stage": 3}
    assert out["zero_allow_untested_optimizer"] is True
    assert "optimizer" not in out  # the trainer passes torch's AdamW


def test_offload_asks_deepspeed_for_its_cpu_optimizer() -> None:
    out = deepspeed_config(_with(zero_stage=3, offload_optimizer=True, offload_params=True), 4)
    zero = out["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"
    assert out["optimizer"] == {"type": "AdamW", "params": {"lr": 4e-4, "weight_decay": 0.0}}
    assert out["gradient_accumulation_steps"] == 1


def test_a_step_that_cannot_split_over_the_ranks_is_refused() -> None:
    with pytest.raises(CutLoopError, match=r"train.grad_accum=4 must be a multiple of the 3"):
        deepspeed_config(TRAIN, world_size=3)


def test_the_controller_checks_the_split_before_a_round_starts(tmp_path: Path) -> None:
    """Constructing the trainer (the loop does it before touching the run directory) checks
    what the ranks would refuse only after generation and judging were paid for."""
    template = load_template("alpaca")
    uneven = replace(_with(num_procs=2), grad_accum=3)
    with pytest.raises(CutLoopError, match=r"train.grad_accum=3 must be a multiple of the 2"):
        DeepSpeedTrainer(uneven, LossConfig(), template, seed=0)
    clash = _with(_user(tmp_path, '{"train_batch_size": 7}'), num_procs=2)
    with pytest.raises(CutLoopError, match=r"train_batch_size=7 disagrees"):
        DeepSpeedTrainer(clash, LossConfig(), template, seed=0)
    # With a hostfile only the launcher knows the rank count: the ranks check it.
    DeepSpeedTrainer(replace(uneven, deepspeed=replace(uneven.deepspeed, hostfile="h")),
                     LossConfig(), template, seed=0)  # fmt: skip
    DeepSpeedTrainer(replace(uneven, grad_accum=4), LossConfig(), template, seed=0)


def _user(tmp_path: Path, content: str) -> TrainConfig:
    path = tmp_path / "ds.json"
    path.write_text(content)
    return _with(config_file=str(path))


def test_user_json_is_merged_over_the_generated_config(tmp_path: Path) -> None:
    user = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": 2,
        "zero_optimization": {"stage": 3, "overlap_comm": True, "reduce_bucket_size": "auto"},
        "activation_checkpointing": {"partition_activations": True},
    }
    out = deepspeed_config(_user(tmp_path, json.dumps(user)), world_size=2)
    assert out["train_micro_batch_size_per_gpu"] == 4 and out["gradient_accumulation_steps"] == 2
    assert out["zero_optimization"] == {"stage": 3, "overlap_comm": True}
    assert out["activation_checkpointing"] == {"partition_activations": True}
    assert out["gradient_clipping"] == 1.0  # generated keys the file leaves alone stay


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ('{"zero_optimization": {"stage": 3,}}', r"ds.json: invalid JSON \(line 1: "),
        ("[1, 2]", "ds.json: a DeepSpeed config must be a JSON object"),
        ('{"train_batch_size": 32}', "train_batch_size=32 disagrees with the run config's 16"),
        ('{"train_micro_batch_size_per_gpu": 8}', "train_micro_batch_size_per_gpu=8 disagrees"),
        ('{"gradient_accumulation_steps": 4}', "gradient_accumulation_steps=4 disagrees"),
        ('{"scheduler": {"type": "WarmupLR"}}', "drop its 'scheduler'"),
    ],
    ids=["bad-json", "not-object", "batch", "micro", "accum", "scheduler"],
)
def test_bad_user_json_is_refused_in_one_line(tmp_path: Path, content: str, expect: str) -> None:
    with pytest.raises(CutLoopError, match=expect) as e:
        deepspeed_config(_user(tmp_path, content), world_size=2)
    assert "\n" not in str(e.value) and "train.deepspeed.config_file=" in str(e.value)


def test_missing_user_json_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(CutLoopError, match=r"config_file=.*nope.json: no such file"):
        deepspeed_config(_with(config_file=str(tmp_path / "nope.json")), world_size=1)


def test_run_config_checks_the_deepspeed_section() -> None:
    with pytest.raises(CutLoopError) as e:
        config_from_dict(
            {
                "train": {
                    "deepspeed": {
                        "zero_stage": 4, "launcher": "mpirun", "num_procs": 0,
                        "offload_params": True, "master_port": 70000, "bogus": 1,
                    }
                }
            }
        )  # fmt: skip
    msg = str(e.value)
    for fragment in (
        "train.deepspeed.zero_stage=4", "train.deepspeed.launcher='mpirun'",
        "train.deepspeed.num_procs must be >= 1", "offload_params needs",
        "master_port must be in", "'train.deepspeed.bogus'",
    ):  # fmt: skip
        assert fragment in msg
    with pytest.raises(CutLoopError, match="torchrun runs on this machine only"):
        config_from_dict({"train": {"deepspeed": {"launcher": "torchrun", "hostfile": "hosts"}}})


def test_launch_command_on_cpu(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    cmd, env = launch_command(_with(num_procs=2, master_port=29600, omp_threads=1), spec)
    assert cmd[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert "--num_gpus=2" in cmd and "--master_port=29600" in cmd
    assert cmd[-4:] == ["--module", "cut_loop.training.deepspeed_worker", "--spec", str(spec)]
    assert env["DS_ACCELERATOR"] == "cpu" and env["OMP_NUM_THREADS"] == "1"

    cmd, env = launch_command(_with(launcher="torchrun", num_procs=3), spec)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=3" in cmd
    assert cmd[-4:] == ["-m", "cut_loop.training.deepspeed_worker", "--spec", str(spec)]
    assert int(env["OMP_NUM_THREADS"]) >= 1

    cmd, _ = launch_command(_with(hostfile="/etc/hosts.ds", num_nodes=2, master_addr="n0"), spec)
    assert cmd[cmd.index("--hostfile") + 1] == "/etc/hosts.ds" and "--num_nodes=2" in cmd
    assert cmd[cmd.index("--master_addr") + 1] == "n0"


def test_auto_picks_deepspeed_with_a_hostfile_else_torch_on_this_machine() -> None:
    template = load_template("alpaca")
    for backend, hostfile, expected in [
        ("auto", "", TorchTrainer),  # no GPU here
        ("auto", "hosts", DeepSpeedTrainer),
        ("deepspeed", "", DeepSpeedTrainer),
        ("torch", "hosts", TorchTrainer),
    ]:
        cfg = config_from_dict({"train": {"backend": backend, "deepspeed": {"hostfile": hostfile}}})
        assert isinstance(make_trainer(cfg, template), expected), (backend, hostfile)


def test_last_error_prefers_the_workers_own_line_then_the_exception(tmp_path: Path) -> None:
    log = tmp_path / "deepspeed.log"
    log.write_text(
        "[rank1]: Traceback (most recent call last):\n"
        "[rank1]: RuntimeError: boom\n"
        "cutloop-error: train.grad_accum=3 must be a multiple of the 2 DeepSpeed ranks\n"
        "[ERROR] [launch.py:259:sigkill_handler] exits with return code = 2\n"
    )
    assert last_error(log) == "train.grad_accum=3 must be a multiple of the 2 DeepSpeed ranks"
    log.write_text(
        "[rank0]: deepspeed.runtime.zero.utils.ZeRORuntimeException: world size\n"
        "[2026-01-01 10:00:00,000] [ERROR] [launch.py:259:sigkill_handler] exits with 1\n"
    )
    assert last_error(log) == "deepspeed.runtime.zero.utils.ZeRORuntimeException: world size"
    log.write_text("Killed\n")
    assert last_error(log) == "Killed"
