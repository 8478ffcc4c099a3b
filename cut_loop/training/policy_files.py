"""The round's policy on disk, shared by the torch trainer and the DeepSpeed ranks: which
models the losses can train, and writing the trained policy as a plain Hugging Face directory
that replaces the old one atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cut_loop.errors import CutLoopError
from cut_loop.rundir import file_mode

# Config fields of models whose logits are not the LM head's output: the fused CUT loss and
# the log-prob helpers compute log-softmax of the plain head, so these would train wrongly.
HEAD_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def check_plain_head(model: torch.nn.Module, path: Path | str) -> None:
    """Refuse a model that rescales or caps its logits."""
    if any(getattr(model.config, k, None) not in (None, 1, 1.0) for k in HEAD_TRANSFORMS):
        raise CutLoopError(f"{path}: models that rescale or cap their logits are not supported")


def save_policy(
    model: torch.nn.Module, tokenizer: Any, out_dir: Path, dtype: torch.dtype, merge_lora: bool
) -> None:
    """The round's policy as a plain Hugging Face directory (LoRA merged in, the start model's
    dtype, safetensors + tokenizer), replacing `out_dir` atomically."""
    if merge_lora:
        model = model.merge_and_unload()
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(dtype).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir)


def replace_dir(src: Path, dst: Path, copy: bool = False) -> None:
    """Make `dst` the finished directory `src` (or a copy of it) with one rename, after its
    files reached the disk: readers see the old directory or the whole new one. Its files get
    the run's one file mode (safetensors writes its own private, 0600)."""
    if copy:
        tmp = dst.parent / f".{dst.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        src = tmp
    for f in src.rglob("*"):
        if f.is_file():
            f.chmod(file_mode())
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = dst.parent / f".{dst.name}.old"
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)  # a directory cannot be renamed over a non-empty one
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    shutil.rmtree(old, ignore_errors=True)
