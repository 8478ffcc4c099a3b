"""The whole loop through the real CLI: a tiny model, the rules judge, real files."""

from __future__ import annotations

import html
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cut_loop.rundir import read_jsonl
from tests.loop.conftest import ROOT, run_cli, tensorboard_points

pytestmark = pytest.mark.slow


def ids(path: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(path)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("loop") / "run"
    args = [
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "8", "--eval-size", "4",
        "--max-new-tokens", "16", "--iterations", "2", "--judge", "rules",
        "--set", "train.warmup_steps=1", "--set", "train.micro_batch_size=2",
        "--set", "train.grad_accum=1", "--set", "train.learning_rate=1e-3",
    ]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_two_rounds_leave_complete_well_formed_artifacts(finished_run: Path) -> None:
    run = finished_run
    for name in ("config.yaml", "ledger.jsonl", "metrics.jsonl", "log.txt"):
        assert (run / name).is_file(), name
    for k in (1, 2):
        round_dir = run / f"round-{k:02d}"
        sample = ids(round_dir / "instructions.jsonl")
        assert len(sample) == 8
        responses = [
            r for p in sorted((round_dir / "responses").glob("*.jsonl")) for r in read_jsonl(p)
        ]
        assert [r["id"] for r in responses] == sample
        assert all(isinstance(r["response"], str) and "finished" in r for r in responses)
        judged = read_jsonl(round_dir / "judgments.jsonl")
        assert sorted(j["id"] for j in judged) == sorted(sample)
        assert {j["verdict"] for j in judged} <= {"acceptable", "unacceptable"}
        assert all(j["critique"] for j in judged if j["verdict"] == "unacceptable")
        for stage in ("generate", "judge", "train", "round"):
            assert (round_dir / f"DONE.{stage}").is_file(), (k, stage)
        assert (round_dir / "model" / "model.safetensors").is_file()
        assert (round_dir / "model" / "tokenizer.json").is_file()
        assert not list((round_dir / "train").glob("checkpoint-*"))  # cleaned once saved


def responses_of(folder: Path) -> list[dict]:
    return [r for p in sorted((folder / "responses").glob("*.jsonl")) for r in read_jsonl(p)]


def test_one_generator_serves_each_policy_with_the_answers_of_a_fresh_one(
    finished_run: Path, tmp_path: Path
) -> None:
    """The eval after round k and round k+1's generation share one generator (3 loads for 2
    rounds, not 5); round 2's answers, made by the generator that answered eval 1, are those
    a fresh generator gives: the copy below generates round 2 alone (eval 1 is done)."""
    loads = [x for x in (finished_run / "log.txt").read_text().splitlines() if "loading" in x]
    assert len(loads) == 3, loads
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("round-03"))
    r2 = copy / "round-02"
    for p in r2.iterdir():
        if p.name != "instructions.jsonl":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(copy / "eval" / "round-02")
    result = run_cli("run", "--run-dir", str(copy), "--iterations", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert responses_of(r2) == responses_of(finished_run / "round-02")
    assert responses_of(copy / "eval" / "round-02") == responses_of(
        finished_run / "eval" / "round-02"
    )


def test_samples_are_fresh_every_round_and_disjoint_from_eval(finished_run: Path) -> None:
    eval_ids = set(ids(finished_run / "eval" / "instructions.jsonl"))
    r1 = set(ids(finished_run / "round-01" / "instructions.jsonl"))
    r2 = set(ids(finished_run / "round-02" / "instructions.jsonl"))
    assert len(eval_ids) == 4 and not (r1 & r2) and not (eval_ids & (r1 | r2))
    ledger = read_jsonl(finished_run / "ledger.jsonl")
    assert {r["id"] for r in ledger} == eval_ids | r1 | r2
    assert len(ledger) == 20


def test_heldout_acceptance_is_recorded_before_and_after_every_round(finished_run: Path) -> None:
    rows = read_jsonl(finished_run / "metrics.jsonl")
    evals = {r["round"]: r for r in rows if r["kind"] == "eval"}
    assert sorted(evals) == [0, 1, 2]
    for row in evals.values():
        assert 0.0 <= row["acceptance_rate"] <= 1.0
        assert row["acceptable"] + row["unacceptable"] == 4
    trains = [r for r in rows if r["kind"] == "train"]
    assert [r["round"] for r in trains] == [1, 2] and all(r["steps"] > 0 for r in trains)


def test_training_changed_the_parameters(finished_run: Path, tiny_model_dir: Path) -> None:
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(finished_run / "round-02" / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2


def test_round_model_loads_in_transformers(finished_run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(finished_run / "round-01" / "model")
    tokenizer = AutoTokenizer.from_pretrained(finished_run / "round-01" / "model")
    out = model.generate(**tokenizer("Hi", return_tensors="pt"), max_new_tokens=2)
    assert out.shape[1] >= 2


def test_status_reports_done_rounds_and_metrics(finished_run: Path) -> None:
    result = run_cli("status", str(finished_run))
    assert result.returncode == 0, result.stderr
    assert "saved" in result.stdout and "metrics" in result.stdout


def test_the_manifest_says_what_made_the_run(finished_run: Path) -> None:
    import transformers

    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["transformers"] == transformers.__version__
    assert manifest["versions"]["cut_loop"] and manifest["seed"] == 0
    assert len(manifest["instructions_sha256"]) == 64 and manifest["instructions"] > 12
    assert manifest["machine"]["cpu"] and manifest["machine"]["gpus"] == []
    assert manifest["git"] is None or len(manifest["git"]["commit"]) == 40
    assert read_jsonl(finished_run / "invocations.jsonl")[0]["versions"] == manifest["versions"]


def test_a_resume_on_other_versions_is_reported_by_status(
    finished_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    rows = read_jsonl(run / "invocations.jsonl")
    rows.append({**rows[0], "versions": {**rows[0]["versions"], "torch": "9.9.9"}})
    (run / "invocations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("status", str(run))
    assert result.returncode == 0, result.stderr
    assert f"torch {torch.__version__} -> 9.9.9" in " ".join(result.stdout.split())


def test_stage_times_lengths_and_critiques_are_in_the_metrics(finished_run: Path) -> None:
    rows = read_jsonl(finished_run / "metrics.jsonl")
    times = [r for r in rows if r["kind"] == "time"]
    assert [r["round"] for r in times] == [1, 2]
    for r in times:
        for stage in ("generate", "judge", "train", "eval"):
            assert r[f"{stage}_seconds"] > 0, (stage, r)
    assert all(r["eval_seconds"] > 0 for r in rows if r["kind"] == "eval")
    assert all(r["generate_tokens_per_s"] > 0 for r in times)
    for r in (r for r in rows if r["kind"] == "train"):
        assert r["sample_median_tokens"] <= r["sample_p90_tokens"] <= 16
    judged = [r for r in rows if r["kind"] == "judge"]
    for r in judged:  # grouped critiques add up to no more than the rejections
        assert sum(n for _, n in r["top_critiques"]) <= r["unacceptable"]
        assert all(isinstance(text, str) and n >= 1 for text, n in r["top_critiques"])
    assert any(r["top_critiques"] for r in judged)


def test_export_alpaca_eval_holds_a_rounds_held_out_answers(finished_run: Path) -> None:
    out = finished_run / "exports" / "round-01-alpaca-eval.json"
    result = run_cli("export", str(finished_run), "--round", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"{out}: 4 rows"
    rows = json.loads(out.read_text())
    stored = [r for p in sorted((finished_run / "eval" / "round-01" / "responses").glob("*"))
              for r in read_jsonl(p)]  # fmt: skip
    assert [r["output"] for r in rows] == [r["response"] for r in stored]
    for row in rows:
        assert set(row) == {"instruction", "output", "generator", "dataset"}
        assert all(isinstance(v, str) for v in row.values())
        assert row["generator"] == "run-round-1" and row["dataset"] == "cut_loop-heldout"


def test_export_alpaca_eval_answers_an_instruction_file_once(
    finished_run: Path, tmp_path: Path
) -> None:
    source = tmp_path / "alpaca_eval.json"
    source.write_text(json.dumps([
        {"instruction": "Name a prime number.", "output": "7", "generator": "gpt4",
         "dataset": "helpful_base"},
        {"instruction": "Say hello.", "output": "Hello!", "generator": "gpt4",
         "dataset": "koala"},
    ]))  # fmt: skip
    out = tmp_path / "outputs.json"
    args = ("export", str(finished_run), "--round", "2", "--instructions", str(source),
            "--output", str(out))  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["instruction"], r["dataset"]) for r in rows] == [
        ("Name a prime number.", "helpful_base"), ("Say hello.", "koala"),
    ]  # fmt: skip
    assert all(r["generator"] == "run-round-2" and isinstance(r["output"], str) for r in rows)
    shards = list((finished_run / "exports").glob("answers-alpaca_eval-*/round-02/responses/*"))
    assert len(shards) == 1
    kept = shards[0].stat().st_mtime_ns
    assert run_cli(*args).returncode == 0
    assert shards[0].stat().st_mtime_ns == kept, "the answers were generated again"
    assert json.loads(out.read_text()) == rows


def test_export_cut_writes_the_rounds_triplets_for_offline_training(finished_run: Path) -> None:
    from cut_loop.offline import load_cut_file

    result = run_cli("export", str(finished_run), "--round", "1", "--format", "cut")
    assert result.returncode == 0, result.stderr[-2000:]
    path = finished_run / "exports" / "round-01-triplets.json"
    rows = json.loads(path.read_text())
    judged = read_jsonl(finished_run / "round-01" / "judgments.jsonl")
    assert len(rows) == len(judged) == 8
    assert {tuple(sorted(r)) for r in rows} == {
        ("id", "input", "instruction", "judgment", "output", "score")
    }
    by_id = {j["id"]: j for j in judged}
    for r in rows:
        assert (r["judgment"] is None) == (by_id[r["id"]]["verdict"] == "acceptable")
    assert len(load_cut_file(path)) == 8
    assert run_cli("export", str(finished_run), "--round", "1", "--format", "jsonl").returncode == 0
    lines = read_jsonl(finished_run / "exports" / "round-01-triplets.jsonl")
    assert lines == rows


def test_tensorboard_holds_every_round_once_on_one_step_axis(finished_run: Path) -> None:
    points = tensorboard_points(finished_run)
    assert [s for s, _ in points["eval/rules/acceptance_rate"]] == [0, 1, 2]
    assert [s for s, _ in points["round/judge_acceptance_rate"]] == [1, 2]
    assert [s for s, _ in points["time/train_seconds"]] == [1, 2]
    metrics = read_jsonl(finished_run / "metrics.jsonl")
    evals = [r["acceptance_rate"] for r in metrics if r["kind"] == "eval"]
    assert [v for _, v in points["eval/rules/acceptance_rate"]] == pytest.approx(evals)
    # Optimizer steps count on across rounds, each once: round 2 follows round 1.
    steps = [s for s, _ in points["train/loss"]]
    per_round = [r["steps"] for r in metrics if r["kind"] == "train"]
    assert steps == list(range(1, sum(per_round) + 1))


def _report(finished_run: Path, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "report.html"
    result = run_cli("report", str(finished_run), "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, out.read_text()


def test_the_report_embeds_every_plot_and_every_rounds_answers(
    finished_run: Path, tmp_path: Path
) -> None:
    import base64
    import io
    import re

    from matplotlib import image

    _, page = _report(finished_run, tmp_path)
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 4
    for data in pngs:
        pixels = image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 0.01
    first = read_jsonl(finished_run / "eval" / "instructions.jsonl")[0]
    assert html.escape(first["instruction"]) in page
    for k in (0, 1, 2):
        answers = {r["id"]: r["response"]
                   for p in (finished_run / "eval" / f"round-{k:02d}" / "responses").glob("*")
                   for r in read_jsonl(p)}  # fmt: skip
        assert f"round {k}: " in page and html.escape(answers[first["id"]]) in page
    assert "Most common critiques" in page and "Round 2:" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (apt install chromium)")
def test_the_report_renders_in_headless_chromium_with_every_plot(
    finished_run: Path, tmp_path: Path
) -> None:
    out, page = _report(finished_run, tmp_path)
    # Chromium decodes every image, then says how many it could: the DOM it dumps carries it.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>document.body.dataset.loaded = "
        "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length;"
        "</script></body>"))  # fmt: skip
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu"]
    dom = subprocess.run([*chrome, "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert 'data-loaded="4"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([*chrome, f"--screenshot={shot}", "--window-size=1280,3000", out.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.stat().st_size > 50_000


def test_chat_streams_the_rounds_greedy_answer_to_a_piped_line(finished_run: Path) -> None:
    from cut_loop.config import config_from_dict, load_yaml
    from cut_loop.generation.base import SamplingParams
    from cut_loop.generation.hf import HFGenerator
    from cut_loop.generation.prompts import load_template

    result = subprocess.run(
        [sys.executable, "-m", "cut_loop", "chat", str(finished_run), "--round", "0"],
        input="Name a color.\n", capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = config_from_dict(load_yaml(finished_run / "config.yaml"))
    gen = HFGenerator(cfg.model, "float32")  # round 0: the starting model (it says something)
    prompt = load_template(cfg.generation.template).render("Name a color.", "", gen.tokenizer)
    params = SamplingParams(max_new_tokens=cfg.generation.max_new_tokens, temperature=0.0,
                            top_p=1.0, seed=cfg.seed, stop=tuple(cfg.generation.stop))  # fmt: skip
    [[expected]] = gen.generate([prompt], params)
    # The tiny random model's answer may be blank; the streamed text itself is tested on a
    # model with a known answer in tests/unit/test_hf_generator.py.
    assert result.stdout.strip() == expected.text


def test_chat_compares_two_rounds_side_by_side(finished_run: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cut_loop", "chat", str(finished_run), "--round", "2",
         "--compare", "0"],
        input="Name a color.\nSay hello.\n", capture_output=True, text=True, timeout=300,
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    headers = [x for x in result.stdout.splitlines() if "round 2" in x]
    assert len(headers) == 2 and all("round 0" in h for h in headers)


def test_rerun_skips_done_work_and_extends_by_a_round(finished_run: Path) -> None:
    before = (finished_run / "round-01" / "judgments.jsonl").stat().st_mtime_ns
    result = run_cli("run", "--run-dir", str(finished_run), "--iterations", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (finished_run / "round-03" / "DONE.round").is_file()
    assert (finished_run / "round-01" / "judgments.jsonl").stat().st_mtime_ns == before
    r3 = set(ids(finished_run / "round-03" / "instructions.jsonl"))
    earlier = set(ids(finished_run / "round-01" / "instructions.jsonl"))
    assert not r3 & earlier


def test_changed_run_defining_field_is_refused(finished_run: Path) -> None:
    config_before = (finished_run / "config.yaml").read_text()
    result = run_cli("run", "--run-dir", str(finished_run), "--seed", "5")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "seed" in lines[0] and "--force" in lines[0]
    assert (finished_run / "config.yaml").read_text() == config_before


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("missing.jsonl", None, "missing.jsonl"),
        ("noinstr.jsonl", '{"instruction": "a"}\n{"prompt": "b"}\n', "noinstr.jsonl:2"),
        ("empty.jsonl", "", "empty.jsonl"),
        ("broken.jsonl", '{"instruction": "a"}\n{"instruction": "b",\n', "broken.jsonl:2"),
    ],
)
def test_bad_instruction_file_fails_in_one_line_and_touches_nothing(
    tmp_path: Path, tiny_model_dir: Path, name: str, content: str | None, expect: str
) -> None:
    source = tmp_path / name
    if content is not None:
        _write(source, content)
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", str(source), "--judge", "rules",
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expect in lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("model", "expect"),
    [
        ("./no-such-model", "model: ./no-such-model does not exist"),
        ("{empty}", "is not a Hugging Face model directory (no config.json)"),
        ("{broken}", "cannot read its config"),
    ],
)
def test_a_bad_model_fails_in_one_line_before_the_run_directory_exists(
    tmp_path: Path, model: str, expect: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    _write(tmp_path / "broken" / "config.json", '{"model_type": "no-such-architecture"}')
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--judge", "rules", "--instructions", "demo",
        "--model", model.format(empty=tmp_path / "empty", broken=tmp_path / "broken"),
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], result.stderr[-2000:]
    assert not run_dir.exists()


def test_deepspeed_step_that_cannot_split_over_the_ranks_fails_before_the_round(
    tmp_path: Path, base_args: Callable[..., list[str]]
) -> None:
    run_dir = tmp_path / "run"
    args = base_args(run_dir, "--trainer", "deepspeed", "--set", "train.deepspeed.num_procs=2")
    result = run_cli(*args, "--set", "train.grad_accum=3")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "train.grad_accum=3 must be a multiple of the 2 DeepSpeed ranks" in lines[0]
    assert not run_dir.exists()


def test_every_file_of_a_run_has_one_mode(finished_run: Path) -> None:
    """Atomically written files, appended logs, the lock and the saved models alike: none is
    private while its neighbours are world-readable (what the process's umask gives)."""
    modes = {p.relative_to(finished_run).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in finished_run.rglob("*") if p.is_file()}  # fmt: skip
    assert len(set(modes.values())) == 1, modes


def test_metrics_file_is_plain_json_lines(finished_run: Path) -> None:
    for line in (finished_run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_too_few_instructions_stops_before_spending_anything(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "200", "--iterations", "2", "--judge", "rules",
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unused instructions left" in lines[0] and "400" in lines[0]
    assert not run_dir.exists()


def test_several_samples_per_instruction_are_generated_and_judged_separately(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "3", "--eval-size", "2", "--iterations", "1",
        "--max-new-tokens", "8", "--judge", "rules",
        "--set", "generation.samples_per_instruction=2", "--set", "train.warmup_steps=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    round_dir = run_dir / "round-01"
    rows = [r for p in sorted((round_dir / "responses").glob("*.jsonl")) for r in read_jsonl(p)]
    sample = ids(round_dir / "instructions.jsonl")
    assert [r["prompt_id"] for r in rows] == [i for i in sample for _ in range(2)]
    assert [r["id"] for r in rows] == [f"{i}-{j}" for i in sample for j in range(2)]
    assert sorted(ids(round_dir / "judgments.jsonl")) == sorted(r["id"] for r in rows)
    evals = [
        r for p in (run_dir / "eval" / "round-00" / "responses").glob("*") for r in read_jsonl(p)
    ]
    assert len(evals) == 2  # the held-out eval always takes one answer per instruction


def test_rrhf_ranks_the_samples_and_the_reference_answer(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`--loss rrhf` with two samples per instruction plus the source's own answer, judged by
    a scoring plugin judge: three candidates per instruction reach the judge and the trainer;
    the held-out eval still takes one policy answer per instruction."""
    data = tmp_path / "data.jsonl"
    rows = [
        {"instruction": f"Describe item number {i} in a sentence.", "output": "A reference " * i}
        for i in range(1, 6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", str(data), "--per-round", "3", "--eval-size", "1", "--iterations", "1",
        "--max-new-tokens", "8", "--loss", "rrhf",
        "--judge", str(ROOT / "judges" / "example_judge.py") + ":LengthJudge",
        "--set", "generation.samples_per_instruction=2",
        "--set", "generation.include_reference=true", "--set", "train.warmup_steps=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    round_dir = run_dir / "round-01"
    responses = [r for p in sorted((round_dir / "responses").glob("*")) for r in read_jsonl(p)]
    sample = ids(round_dir / "instructions.jsonl")
    assert [r["id"] for r in responses] == [f"{i}-{j}" for i in sample for j in ("0", "1", "ref")]
    references = {json.dumps(r["output"]) for r in rows}
    for r in responses:
        assert (r["source"] == "reference") == r["id"].endswith("-ref")
        if r["source"] == "reference":
            assert json.dumps(r["response"]) in references and r["finished"]
    assert sorted(ids(round_dir / "judgments.jsonl")) == sorted(r["id"] for r in responses)
    trained = json.loads((round_dir / "DONE.train").read_text())
    assert trained["steps"] > 0 and trained["responses"] == 9
    evals = [
        r for p in (run_dir / "eval" / "round-01" / "responses").glob("*") for r in read_jsonl(p)
    ]
    assert [r["source"] for r in evals] == ["policy"]


def test_rrhf_with_a_judge_that_gives_no_scores_stops_after_one_batch(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "4", "--eval-size", "0", "--iterations", "1",
        "--max-new-tokens", "8", "--loss", "rrhf", "--judge", "rules",
        "--set", "generation.samples_per_instruction=2", "--set", "judge.batch_size=3",
    )  # fmt: skip
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: loss rrhf ranks responses by judge score"), last
    assert "'rules' returned none" in last
    # What the judge answered is kept (nothing paid is lost); nothing more was asked.
    assert len(read_jsonl(run_dir / "round-01" / "judgments.jsonl")) == 3
    assert not (run_dir / "round-01" / "train").exists()
