"""The DeepSpeed trainer's controller side: it writes the stage's inputs into work_dir, launches
the ranks (`deepspeed_worker.py`) as a child process group with the `deepspeed` launcher or
torchrun, waits, and reads their result. Children talk to it through files only.

Kill safety: the launcher gets its own process group, killed with it when the controller stops
on an exception or Ctrl-C; each rank also watches the controller's pid and exits when it is gone
(a SIGKILLed controller runs no cleanup). Resume is a re-launch: the ranks load the newest
DeepSpeed checkpoint in work_dir. The ranks' output goes to work_dir/deepspeed.log. CPU ranks
leave shared-memory buffers in /dev/shm: the controller removes them when its ranks exit, and
a resume removes those of the launch it finds in work_dir/launch_port (a SIGKILLed controller's).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import cut_loop
from cut_loop.config import DeepSpeedConfig, LossConfig, TrainConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation.prompts import PromptTemplate
from cut_loop.progress import stage_bar
from cut_loop.rundir import atomic_write_json
from cut_loop.training.base import TrainResult, Triplet
from cut_loop.training.deepspeed_config import deepspeed_config

WORKER = "cut_loop.training.deepspeed_worker"
ERROR_PREFIX = "cutloop-error: "  # a rank's CutLoopError, the line reported to the user


class DeepSpeedTrainer:
    """`Trainer` backend running DeepSpeed ranks (GPUs, nodes, or CPU processes)."""

    def __init__(
        self,
        config: TrainConfig,
        loss: LossConfig,
        template: PromptTemplate,
        seed: int,
        *,
        logit_chunk: int = 512,
    ) -> None:
        if importlib.util.find_spec("deepspeed") is None:  # before the loop generates anything
            raise CutLoopError(
                "train.backend=deepspeed needs the deepspeed package: scripts/setup.sh installs it"
            )
        ranks = local_ranks(config)
        if ranks is not None:
            # A step that cannot split over the ranks, or a bad train.deepspeed.config_file,
            # fails now, before the round pays for generation and judging (the ranks check
            # again: with a hostfile only the launcher knows the rank count).
            deepspeed_config(config, ranks)
        self.config, self.loss, self.template, self.seed = config, loss, template, seed
        self.logit_chunk = logit_chunk  # label positions projected onto the vocabulary at once

    def train(
        self,
        triplets: Sequence[Triplet],
        start_model: Path,
        work_dir: Path,
        out_dir: Path,
        *,
        stop_after_steps: int | None = None,
    ) -> TrainResult:
        """As `TorchTrainer.train`: resume from work_dir, save the merged policy to `out_dir`
        atomically; `stop_after_steps` (tests) returns after that many steps without `out_dir`.
        Raises CutLoopError with the ranks' last error line and the log's path on failure."""
        work_dir, out_dir = Path(work_dir).resolve(), Path(out_dir).resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        config = self.config
        if config.deepspeed.config_file:  # the ranks may not share this working directory
            ds = dataclasses.replace(
                config.deepspeed, config_file=str(Path(config.deepspeed.config_file).resolve())
            )
            config = dataclasses.replace(config, deepspeed=ds)
        spec = {
            "train": dataclasses.asdict(config), "loss": dataclasses.asdict(self.loss),
            "seed": self.seed, "template": dataclasses.asdict(self.template),
            "start": str(Path(start_model).resolve()), "work_dir": str(work_dir),
            "out_dir": str(out_dir), "stop_after_steps": stop_after_steps,
            "logit_chunk": self.logit_chunk,
            "triplets": [dataclasses.asdict(t) for t in triplets],
        }  # fmt: skip
        spec_path = work_dir / "deepspeed_spec.json"
        atomic_write_json(spec_path, spec)
        result_path = work_dir / "result.json"
        result_path.unlink(missing_ok=True)
        (work_dir / "progress.json").unlink(missing_ok=True)
        log_path = work_dir / "deepspeed.log"
        port = config.deepspeed.master_port or _free_port()
        last_port = work_dir / "launch_port"
        if last_port.exists():  # a SIGKILLed controller could not release its ranks' buffers
            release_shared_memory(int(last_port.read_text()))
        last_port.write_text(str(port))
        cmd, env = launch_command(config, spec_path, port)
        with open(log_path, "a") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                code = _wait(proc, work_dir)
            finally:
                if proc.poll() is None:  # the controller is stopping: take the ranks with it
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                release_shared_memory(port)
        if code != 0 or not result_path.exists():
            raise CutLoopError(
                f"DeepSpeed training failed (exit {code}): {last_error(log_path)} (log: {log_path})"
            )
        result = json.loads(result_path.read_text())
        return TrainResult(result["steps"], result["examples"], result["metrics"])


def _wait(proc: subprocess.Popen, work_dir: Path) -> int:
    """Wait for the launcher to exit, showing the ranks' steps as a bar: rank 0 writes
    progress.json (total and resumed steps) once training starts, then a log.jsonl row a step."""
    plan, log = work_dir / "progress.json", work_dir / "log.jsonl"
    rows = _lines(log)  # rows of earlier launches
    with ExitStack() as stack:
        bar = None
        while True:
            try:
                code: int | None = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                code = None
            if bar is None and plan.exists():
                info = json.loads(plan.read_text())
                bar = stack.enter_context(
                    stage_bar("training", info["total"], done=info["start"], unit="step")
                )
            if bar is not None:
                now = _lines(log)
                bar.advance(max(0, now - rows))
                rows = max(rows, now)
            if code is not None:
                return code


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _gpu_count() -> int:
    import torch  # only here: the controller otherwise never needs it

    return torch.cuda.device_count()


def _ranks_per_node(ds: DeepSpeedConfig, gpus: int) -> int:
    return (ds.num_gpus or gpus) if gpus else ds.num_procs


def local_ranks(config: TrainConfig) -> int | None:
    """How many ranks a launch on this machine starts; None with a hostfile (many nodes)."""
    ds = config.deepspeed
    return None if ds.hostfile else _ranks_per_node(ds, _gpu_count())


def launch_command(
    config: TrainConfig, spec: Path, port: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """The launcher command line and environment that start the ranks on `spec`."""
    ds = config.deepspeed
    gpus = _gpu_count()
    port = port or ds.master_port or _free_port()
    env = {**os.environ, "CUTLOOP_CONTROLLER_PID": str(os.getpid())}
    # The ranks import cut_loop from this checkout, also when it is not installed.
    root = str(Path(cut_loop.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    ranks = _ranks_per_node(ds, gpus)
    if not gpus:
        env["DS_ACCELERATOR"] = "cpu"
        # Neither launcher sets it; the default (all cores per rank) oversubscribes ~5x.
        env["OMP_NUM_THREADS"] = str(ds.omp_threads or max(1, (os.cpu_count() or 1) // ranks))
    if ds.launcher == "torchrun":
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
            "--master_addr", ds.master_addr or "127.0.0.1", f"--master_port={port}", "-m",
        ]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", f"--master_port={port}"]
        if ds.hostfile:
            cmd += ["--hostfile", ds.hostfile, f"--num_nodes={ds.num_nodes}"]
        if ds.master_addr:
            cmd += ["--master_addr", ds.master_addr]
        if ds.num_gpus or not gpus:  # else the launcher takes every GPU of each node
            cmd += [f"--num_gpus={ranks}"]
        cmd += ["--no_local_rank", "--module"]
    return [*cmd, WORKER, "--spec", str(spec)], env


SHM_DIR = Path("/dev/shm")


def release_shared_memory(port: int) -> None:
    """Remove the shared-memory all-reduce buffers the CPU ranks of the launch on `port` left.
    DeepSpeed's CPU backend creates one per rank (/dev/shm/deepspeed_allreduce_buffer_<uid>_
    <addr>_<port>_<rank>, ~66 MB each) and never unlinks them: RAM-backed, they piled up to
    17 GB here over a day of runs, until vLLM could not find memory for its KV cache."""
    for path in SHM_DIR.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"):
        path.unlink(missing_ok=True)


def last_error(log_path: Path) -> str:
    """The line that says why the ranks failed: the worker's own error if it wrote one, else
    the last exception line of a traceback, else the log's last line."""
    lines = []
    for line in log_path.read_text(errors="replace").splitlines():
        line = re.sub(r"^\[rank\d+\]:\s*", "", line.strip())  # torchrun's per-rank prefix
        if line:
            lines.append(line)
    for line in reversed(lines):
        if ERROR_PREFIX in line:
            return line.split(ERROR_PREFIX, 1)[1]
    for line in reversed(lines):
        head = line.split(":", 1)[0].split(".")[-1]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return line
    return lines[-1] if lines else "no output"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
