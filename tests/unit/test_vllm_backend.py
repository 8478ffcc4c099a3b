"""The vLLM backend's parts that need no engine: finding the interpreter, the errors that name
the fallback, `auto` choosing transformers, and the worker's conversions (the worker module is
stdlib-only, so it imports here). The real engine is tested in tests/engines/test_vllm.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cut_loop.config import GenerationConfig
from cut_loop.errors import CutLoopError
from cut_loop.generation import factory, vllm
from cut_loop.generation.hf import HFGenerator
from cut_loop.generation.vllm import find_tcmalloc, find_vllm_python, vllm_import_error
from cut_loop.generation.vllm_worker import completion, cpu_list


def _out(
    token_ids: list[int], finish: str | None, stop: object = None, text: str = " hi "
) -> object:
    return SimpleNamespace(text=text, token_ids=token_ids, finish_reason=finish, stop_reason=stop)


def test_completion_end_of_sequence_is_finished_and_not_counted() -> None:
    # vLLM keeps the EOS token in token_ids; the transformers backend does not count it.
    assert completion(_out([5, 6, 2], "stop")) == {"text": "hi", "finished": True, "num_tokens": 2}
    # another of the model's end tokens (stop_token_ids) reports its id
    assert completion(_out([5, 7], "stop", stop=7))["num_tokens"] == 1


def test_completion_stop_string_counts_its_tokens_and_length_is_cut_off() -> None:
    assert completion(_out([5, 6, 9], "stop", stop="###")) == {
        "text": "hi",
        "finished": True,
        "num_tokens": 3,
    }
    assert completion(_out([5, 6, 9], "length")) == {
        "text": "hi",
        "finished": False,
        "num_tokens": 3,
    }


def test_cpu_list_is_vllm_bind_format() -> None:
    assert cpu_list({0, 1}) == "0-1"
    assert cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_find_tcmalloc_takes_the_first_folder_that_has_it(tmp_path: Path) -> None:
    empty, full_only, minimal = (tmp_path / d for d in ("empty", "full", "minimal"))
    for d in (empty, full_only, minimal):
        d.mkdir()
    (full_only / "libtcmalloc.so.4").touch()
    (minimal / "libtcmalloc_minimal.so.4").touch()
    (minimal / "libtcmalloc.so.4").touch()
    assert find_tcmalloc([str(empty)]) is None
    assert find_tcmalloc([str(empty), str(minimal), str(full_only)]) == str(
        minimal / "libtcmalloc_minimal.so.4"
    )
    assert find_tcmalloc([str(full_only), str(minimal)]) == str(full_only / "libtcmalloc.so.4")


def test_engine_env_preloads_tcmalloc_before_the_users_preload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vllm, "find_tcmalloc", lambda: "/lib/libtcmalloc_minimal.so.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/libmine.so")
    monkeypatch.setenv("SOME_SETTING", "kept")
    env = vllm._engine_env()
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4:/opt/libmine.so"
    assert env["SOME_SETTING"] == "kept"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc.so.4")  # the user's own: left alone
    assert vllm._engine_env()["LD_PRELOAD"] == "/usr/lib/libtcmalloc.so.4"
    monkeypatch.delenv("LD_PRELOAD")
    assert vllm._engine_env()["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4"
    monkeypatch.setattr(vllm, "find_tcmalloc", lambda: None)
    assert "LD_PRELOAD" not in vllm._engine_env()


def test_vllm_python_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUT_LOOP_VLLM_PYTHON", "/opt/vllm/bin/python")
    assert find_vllm_python() == "/opt/vllm/bin/python"
    assert find_vllm_python("/x/python") == "/x/python"  # the config wins
    monkeypatch.setenv("CUT_LOOP_VLLM_PYTHON", "none")
    assert find_vllm_python() is None


def test_import_check_of_an_interpreter_without_vllm(tmp_path: Path) -> None:
    import sys

    assert "not installed" in (vllm_import_error(sys.executable) or "")
    assert "does not run" in (vllm_import_error(str(tmp_path / "python")) or "")


def test_vllm_backend_without_vllm_names_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUT_LOOP_VLLM_PYTHON", "none")
    with pytest.raises(CutLoopError, match=r"scripts/setup.sh --vllm, or use --generator hf$"):
        factory.make_generator(GenerationConfig(backend="vllm"), "model")
    missing = GenerationConfig(backend="vllm", vllm_python="/nonexistent/python")
    with pytest.raises(CutLoopError, match=r"/nonexistent/python does not exist.*--generator hf"):
        factory.make_generator(missing, "model")


def test_bad_vllm_options_reported_together() -> None:
    cfg = GenerationConfig(
        backend="vllm", vllm_python="/x", gpu_memory_utilization=1.5, cpu_kvcache_gb=0
    )
    with pytest.raises(CutLoopError, match=r"gpu_memory_utilization.*; .*cpu_kvcache_gb"):
        factory.make_generator(cfg, "model")


def test_auto_without_vllm_uses_transformers(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CUT_LOOP_VLLM_PYTHON", "none")
    generator = factory.make_generator(GenerationConfig(), str(tiny_model_dir))
    assert isinstance(generator, HFGenerator)
    generator.close()
    assert "vLLM" not in capsys.readouterr().err  # not installed is normal: nothing to say


def test_auto_dtype_is_float32_on_cpu_and_explicit_ones_stay() -> None:
    import torch

    from cut_loop.generation.base import generation_dtype

    assert generation_dtype("auto") == ("bfloat16" if torch.cuda.is_available() else "float32")
    assert generation_dtype("bfloat16") == "bfloat16"
    assert GenerationConfig().dtype == "auto"


def test_an_engine_dying_of_sigill_is_named_with_the_dtype_to_use(tmp_path: Path) -> None:
    """What vLLM's bf16 CPU kernels do on some CPUs (issue 12): the process gets SIGILL."""
    from cut_loop.generation.vllm import VLLMGenerator, VLLMStartError

    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nkill -ILL $$\n")
    python.chmod(0o755)
    cfg = GenerationConfig(backend="vllm", dtype="bfloat16")
    with pytest.raises(VLLMStartError, match=r"died of SIGILL.*dtype bfloat16; set generation"):
        VLLMGenerator("some-model", cfg, str(python))
