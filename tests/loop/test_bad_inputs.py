"""Bad inputs to `cutloop run` (and `train`, `eval`, `status`): each fails with a non-zero exit
and exactly one `error:` line naming the file or field at fault, and leaves the run directory
byte for byte as it was (one that did not exist still does not).

Most cases run in-process with typer's CliRunner (stderr captured apart from stdout; an uncaught
exception is turned into the traceback a user would see): a subprocess pays ~6 s of torch import
per case. The cases marked `subprocess=True` run the real CLI, so the in-process runner is held
to what a user sees. A judge that breaks its contract only shows it in a round, after the run
directory exists: those cases have their own table and check what was written before the judge.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _pytest.mark import ParameterSet
from typer.testing import CliRunner

from cut_loop.cli import app
from cut_loop.config import load_yaml
from cut_loop.rundir import read_jsonl
from tests.loop.conftest import ENV, ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.fault("bad inputs")]

EXAMPLE_JUDGE = f"{ROOT}/judges/example_judge.py"
LENGTH_JUDGE = f"{EXAMPLE_JUDGE}:LengthJudge"

# Files a case writes under its tmp dir before the command: text, bytes, or None for a folder.
Files = dict[str, str | bytes | None]


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    """CLI arguments; {run}, {tmp} and {model} are filled in."""
    expect: str
    """A substring of the one error line (placeholders filled in too)."""
    files: Files = field(default_factory=dict)
    base: bool = True
    """Prepend base_args({run}): a `cutloop run` of the tiny model on the demo set."""
    existing: bool = False
    """{run} starts as a copy of a finished one-round run (before `files` are written)."""
    readonly: bool = False
    """Make {run} and everything in it read-only before the command."""
    subprocess: bool = False
    """Run the real CLI in a subprocess instead of in-process."""


def case(id: str, *args: str, expect: str, xfail: str | None = None, **kw: object) -> ParameterSet:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(args, expect, **kw), id=id, marks=marks)  # type: ignore[arg-type]


def judge_plugin(name: str, body: str) -> str:
    """Source of a plugin judge class `name` whose judge(items) runs the statement `body`."""
    return (
        "from cut_loop.judging.base import Judgment\n"
        f"class {name}:\n"
        "    def judge(self, items):\n"
        f"        {body}\n"
    )


NOT_A_JUDGE = "class Scorer:\n    def score(self, items):\n        return []\nVALUE = 3\n"
ROW = '{"instruction": "Name a colour."}\n'
ROUND_1_BARS = ("generate round 1 ", "judge round 1 ")

CASES = [
    # --- the config file and --set ---------------------------------------------------------------
    case("config-missing", "--config", "{tmp}/missing.yaml",
         expect="{tmp}/missing.yaml: config file not found", subprocess=True),
    case("config-yaml-syntax", "--config", "{tmp}/bad.yaml",
         files={"bad.yaml": "seed: 1\ndata: [\n"},
         expect="{tmp}/bad.yaml:3: invalid YAML"),
    case("config-not-a-mapping", "--config", "{tmp}/list.yaml", files={"list.yaml": "- 1\n- 2\n"},
         expect="{tmp}/list.yaml: a config must be a YAML mapping"),
    case("config-unknown-key", "--config", "{tmp}/c.yaml", files={"c.yaml": "iteratons: 2\n"},
         expect="unknown key 'iteratons'"),
    case("config-unknown-nested-key", "--config", "{tmp}/c.yaml",
         files={"c.yaml": "train:\n  learning_rat: 0.1\n"},
         expect="unknown key 'train.learning_rat'"),
    case("config-moved-key", "--config", "{tmp}/c.yaml",
         files={"c.yaml": "data:\n  eval_size: 4\n"},
         expect="'data.eval_size' is now 'eval.size'"),
    case("config-section-not-a-mapping", "--config", "{tmp}/c.yaml", files={"c.yaml": "loss: 3\n"},
         expect="loss must be a mapping"),
    case("config-is-a-directory", "--config", "{tmp}/conf", files={"conf": None},
         expect="{tmp}/conf: a folder, not a YAML config file"),
    case("set-string-for-int", "--set", "data.per_round=many",
         expect="data.per_round='many' is not a valid int"),
    case("set-string-for-bool", "--set", "generation.include_reference=maybe",
         expect="generation.include_reference='maybe' is not a valid bool"),
    case("set-without-equals", "--set", "train.learning_rate",
         expect="--set 'train.learning_rate': expected key=value"),
    case("set-into-a-non-section", "--set", "iterations.count=1",
         expect="--set iterations.count: 'iterations' is not a section"),
    case("per-round-negative", "--per-round", "-1", expect="data.per_round must be >= 1"),
    case("iterations-zero", "--iterations", "0", expect="iterations must be >= 1"),
    case("iterations-over-99", "--iterations", "100", expect="iterations=100 is more than 99"),
    case("learning-rate-negative", "--set", "train.learning_rate=-1e-5",
         expect="train.learning_rate must be > 0"),
    case("temperature-negative", "--set", "generation.temperature=-0.5",
         expect="generation.temperature must be >= 0"),
    case("top-p-above-one", "--set", "generation.top_p=1.5",
         expect="generation.top_p must be in (0, 1]"),
    case("eval-size-negative", "--eval-size", "-1", expect="eval.size must be >= 0"),
    case("eval-temperature-negative", "--set", "eval.temperature=-1",
         expect="eval.temperature must be >= 0"),
    case("max-failed-fraction-above-one", "--set", "judge.max_failed_fraction=2",
         expect="judge.max_failed_fraction must be in [0, 1]"),
    case("max-new-tokens-zero", "--max-new-tokens", "0",
         expect="generation.max_new_tokens must be >= 1"),
    case("micro-batch-zero", "--set", "train.micro_batch_size=0",
         expect="train.micro_batch_size must be >= 1"),
    case("dpo-beta-zero", "--set", "loss.beta=0", expect="loss.beta must be > 0"),
    case("bootstrap-resamples-too-few", "--set", "eval.bootstrap_resamples=10",
         expect="eval.bootstrap_resamples must be >= 100"),
    case("eval-judge-not-a-name", "--set", "eval.judges=[3]",
         expect="eval.judges[0]: expected a judge name"),
    case("unknown-loss", "--loss", "ppo", expect="loss.name='ppo' is not one of"),
    case("unknown-generator-backend", "--generator", "tpu",
         expect="generation.backend='tpu' is not one of"),
    case("unknown-trainer-backend", "--trainer", "jax", expect="train.backend='jax' is not one of"),
    case("zero-stage-5", "--set", "train.deepspeed.zero_stage=5",
         expect="train.deepspeed.zero_stage=5 is not one of"),
    case("offload-params-without-zero-3", "--set", "train.deepspeed.offload_params=true",
         expect="train.deepspeed.offload_params needs train.deepspeed.zero_stage=3"),
    case("dpo-with-one-sample", "--loss", "dpo",
         expect="loss dpo needs generation.samples_per_instruction >= 2"),
    case("unknown-template", "--set", "generation.template=nosuch",
         expect="generation.template: no template 'nosuch'"),
    case("template-unknown-keys", "--set", "generation.template={tmp}/t.yaml",
         files={"t.yaml": "plain: '{instruction}'\njudged: '{instruction}'\nplian: x\n"},
         expect="{tmp}/t.yaml: unknown template keys"),
    # --- the instruction file ------------------------------------------------------------------
    case("instructions-missing", "--instructions", "{tmp}/missing.jsonl",
         expect="{tmp}/missing.jsonl: no such file"),
    case("instructions-empty", "--instructions", "{tmp}/empty.jsonl", files={"empty.jsonl": ""},
         expect="{tmp}/empty.jsonl: file is empty"),
    case("instructions-blank-lines-only", "--instructions", "{tmp}/blank.jsonl",
         files={"blank.jsonl": "\n\n"}, expect="{tmp}/blank.jsonl: file has no rows"),
    case("instructions-invalid-json", "--instructions", "{tmp}/bad.json",
         files={"bad.json": '[{"instruction": "a"},\n'}, expect="{tmp}/bad.json:2: malformed JSON"),
    case("instructions-json-not-a-list", "--instructions", "{tmp}/obj.json",
         files={"obj.json": '{"instruction": "a"}'},
         expect="{tmp}/obj.json: top level must be a JSON list of rows, got dict"),
    case("instructions-jsonl-line-3-malformed", "--instructions", "{tmp}/broken.jsonl",
         files={"broken.jsonl": ROW + "\n" + '{"instruction": "b",\n'},
         expect="{tmp}/broken.jsonl:3: malformed JSON", subprocess=True),
    case("instructions-row-without-instruction", "--instructions", "{tmp}/noinstr.jsonl",
         files={"noinstr.jsonl": ROW + '{"prompt": "b"}\n'},
         expect="{tmp}/noinstr.jsonl:2: row has no 'instruction' field"),
    case("instructions-non-string-instruction", "--instructions", "{tmp}/int.json",
         files={"int.json": '[{"instruction": "a"}, {"instruction": 3}]'},
         expect="{tmp}/int.json: row 1: 'instruction' must be a string, got int"),
    case("instructions-blank-instruction", "--instructions", "{tmp}/blank.jsonl",
         files={"blank.jsonl": '{"instruction": "  "}\n'},
         expect="{tmp}/blank.jsonl:1: row has an empty 'instruction'"),
    case("instructions-row-not-an-object", "--instructions", "{tmp}/list.jsonl",
         files={"list.jsonl": ROW + '["a", "b"]\n'},
         expect="{tmp}/list.jsonl:2: expected an object with an 'instruction', got list"),
    case("instructions-non-string-input", "--instructions", "{tmp}/input.jsonl",
         files={"input.jsonl": '{"instruction": "a", "input": 5}\n'},
         expect="{tmp}/input.jsonl:1: 'input' must be a string or null, got int"),
    case("instructions-unknown-constraint", "--instructions", "{tmp}/cons.jsonl",
         files={"cons.jsonl": '{"instruction": "a", "constraints": [{"id": "no_such_check"}]}\n'},
         expect="{tmp}/cons.jsonl:1:"),
    case("instructions-not-utf8", "--instructions", "{tmp}/latin1.jsonl",
         files={"latin1.jsonl": b'{"instruction": "caf\xe9"}\n'},
         expect="{tmp}/latin1.jsonl: not UTF-8 text (byte 20)"),
    case("instructions-is-a-directory", "--instructions", "{tmp}/data.jsonl",
         files={"data.jsonl": None}, expect="{tmp}/data.jsonl: is a directory"),
    case("instructions-corrupt-parquet", "--instructions", "{tmp}/bad.parquet",
         files={"bad.parquet": b"PAR1 this is not parquet PAR1"},
         expect="{tmp}/bad.parquet: not a readable parquet file"),
    case("instructions-csv-without-column", "--instructions", "{tmp}/q.csv",
         files={"q.csv": "question,input\nName a colour.,\n"},
         expect="{tmp}/q.csv:1: header has no 'instruction' column"),
    case("instructions-unknown-extension", "--instructions", "{tmp}/data.txt",
         files={"data.txt": "Name a colour.\n"}, expect="{tmp}/data.txt: unknown extension '.txt'"),
    case("instructions-too-few-for-the-plan", "--per-round", "200",
         expect="but 2 more rounds x data.per_round=200 need 400"),
    # --- the model -----------------------------------------------------------------------------
    case("model-missing", "--model", "{tmp}/no-such-model",
         expect="model: {tmp}/no-such-model does not exist"),
    case("model-dir-without-config", "--model", "{tmp}/empty-model", files={"empty-model": None},
         expect="model: {tmp}/empty-model is not a Hugging Face model directory (no config.json)"),
    case("model-unknown-architecture", "--model", "{tmp}/odd-model",
         files={"odd-model/config.json": '{"model_type": "no-such-architecture"}'},
         expect="model: {tmp}/odd-model: cannot read its config", subprocess=True),
    # --- the judge -----------------------------------------------------------------------------
    case("judge-unknown-name", "--judge", "gpt5", expect="unknown judge 'gpt5'; known:"),
    case("judge-module-missing", "--judge", "no_such_pkg.judges:Judge",
         expect="no module named 'no_such_pkg.judges'"),
    case("judge-file-missing", "--judge", "{tmp}/nowhere.py:Judge",
         expect="file {tmp}/nowhere.py does not exist"),
    case("judge-file-import-raises", "--judge", "{tmp}/broken_judge.py:Judge",
         files={"broken_judge.py": "raise RuntimeError('broken at import')\n"},
         expect="{tmp}/broken_judge.py raised RuntimeError: broken at import", subprocess=True),
    case("judge-attribute-missing", "--judge", f"{EXAMPLE_JUDGE}:WordJudge",
         expect="has no attribute 'WordJudge'"),
    case("judge-object-not-a-judge", "--judge", "{tmp}/scorer.py:Scorer",
         files={"scorer.py": NOT_A_JUDGE},
         expect="Scorer has no judge(items) method"),
    case("judge-attribute-not-callable", "--judge", "{tmp}/value.py:VALUE",
         files={"value.py": NOT_A_JUDGE},
         expect="3 is neither a class nor a factory"),
    case("judge-unknown-option", "--judge", LENGTH_JUDGE, "--set", "judge.max_words=3",
         expect="unknown option(s) max_words; it accepts: min_words"),
    case("judge-bad-option-value", "--judge", LENGTH_JUDGE, "--set", "judge.min_words=0",
         expect="bad option: min_words must be >= 1"),
    case("judge-builtin-bad-option", "--set", "judge.sentence_repeats=1",
         expect="judge 'rules': bad option: sentence_repeats and loop_repeats must be >= 2"),
    case("judge-openai-typo-option", "--judge", "openai", "--set", "judge.modle=gpt-4o",
         expect="judge 'openai': unknown option(s) modle"),
    case("judge-rubric-missing", "--judge", "{tmp}/strict.yaml",
         expect="rubric file {tmp}/strict.yaml does not exist"),
    case("eval-judge-unknown", "--set", "eval.judges=[nosuch]",
         expect="eval.judges (nosuch): unknown judge 'nosuch'"),
    # --- an existing run -----------------------------------------------------------------------
    case("resume-with-another-model", "run", "--run-dir", "{run}", "--model", "smollm2-135m",
         base=False, existing=True, expect="{run}/config.yaml: this run was made with model="),
    case("resume-with-another-seed", "run", "--run-dir", "{run}", "--seed", "5",
         base=False, existing=True, expect="{run}/config.yaml: this run was made with seed=0"),
    case("resume-with-a-corrupt-saved-config", "run", "--run-dir", "{run}",
         files={"run/config.yaml": "seed: [\n"}, base=False, existing=True,
         expect="{run}/config.yaml:2: invalid YAML"),
    case("resume-with-an-unknown-saved-key", "run", "--run-dir", "{run}", "--iterations", "2",
         files={"run/config.yaml": "seeed: 3\n"}, base=False, existing=True,
         expect="{run}/config.yaml: unknown key 'seeed'"),
    case("run-dir-is-a-file", files={"run": "not a run\n"}, subprocess=True,
         expect="{run}: the run directory is a file, not a folder"),
    case("run-dir-under-a-file", "--run-dir", "{tmp}/afile/run", files={"afile": "a file\n"},
         expect="{tmp}/afile: a part of its path is a file, not a folder"),
    case("run-dir-read-only", "run", "--run-dir", "{run}", "--iterations", "2",
         base=False, existing=True, readonly=True, expect="{run}/lock: Operation not permitted"),
    # --- status, eval, train -------------------------------------------------------------------
    case("status-missing-dir", "status", "{run}", base=False, subprocess=True,
         expect="{run}: not a cut_loop run directory (no config.yaml)"),
    case("status-corrupt-config", "status", "{run}", files={"run/config.yaml": "seed: [\n"},
         base=False, existing=True, expect="{run}/config.yaml:2: invalid YAML"),
    case("status-corrupt-done-marker", "status", "{run}",
         files={"run/round-01/DONE.train": '{"steps": 3,'}, base=False, existing=True,
         expect="{run}/round-01/DONE.train: corrupt stage marker"),
    case("eval-not-a-run", "eval", "{run}", "--judge", "rules", files={"run": None}, base=False,
         expect="{run}: not a cut_loop run directory (no config.yaml)"),
    case("eval-unknown-judge", "eval", "{run}", "--judge", "gpt5", base=False, existing=True,
         expect="unknown judge 'gpt5'"),
    case("eval-decoding-without-generate", "eval", "{run}", "--judge", "rules",
         "--set", "eval.temperature=0.7", base=False, existing=True,
         expect="--set eval.<decoding>: only with --generate"),
    case("eval-pairwise-with-generate", "eval", "{run}", "--judge", "rules", "--pairwise", "start",
         "--generate", base=False, existing=True, expect="--pairwise compares the stored answers"),
    case("train-data-missing", "train", "--data", "{tmp}/missing.json", "--output", "{run}",
         "--model", "{model}", base=False, expect="{tmp}/missing.json: data file not found"),
    case("train-output-is-a-file", "train", "--data", "{tmp}/d.json", "--output", "{tmp}/out",
         "--model", "{model}", files={"out": "a file\n", "d.json": "[]"}, base=False,
         expect="{tmp}/out: the run directory is a file, not a folder"),
    case("train-data-is-a-directory", "train", "--data", "{tmp}/data", "--output", "{run}",
         "--model", "{model}", files={"data": None}, base=False,
         expect="{tmp}/data: --data is a folder"),
    case("train-data-invalid-json", "train", "--data", "{tmp}/cut.json", "--output", "{run}",
         "--model", "{model}", files={"cut.json": '[{"instruction": "a",\n'}, base=False,
         expect="{tmp}/cut.json:2:1: invalid JSON"),
    case("train-data-row-without-judgment", "train", "--data", "{tmp}/cut.json",
         "--output", "{run}", "--model", "{model}", base=False,
         files={"cut.json": '[{"instruction": "a", "output": "b"}]'},
         expect="{tmp}/cut.json: row 0: missing 'judgment'"),
    case("train-deepspeed-backend", "train", "--data", "{tmp}/cut.json", "--output", "{run}",
         "--model", "{model}", "--set", "train.backend=deepspeed", base=False,
         files={"cut.json": '[{"instruction": "a", "output": "b", "judgment": null}]'},
         expect="train.backend=deepspeed: offline training runs the torch trainer"),
]  # fmt: skip

# A plugin judge that loads fine but breaks the contract in its first batch: its class name
# and the statement its judge(items) runs.
CONTRACT_BREAKERS = [
    pytest.param("Raises", "raise RuntimeError('the judge crashed')", id="raises"),
    pytest.param("OneShort", "return [Judgment.accept(i.id) for i in items][:-1]",
                 id="wrong-count"),
    pytest.param("OtherIds", "return [Judgment.accept('x' + i.id) for i in items]",
                 id="wrong-ids"),
    pytest.param("Dicts", "return [{'id': i.id, 'verdict': 'acceptable'} for i in items]",
                 id="dicts"),
    pytest.param("Strings", "return ['acceptable' for i in items]", id="strings"),
    pytest.param("Nothing", "return None", id="none"),
    pytest.param("StrVerdict", "return [Judgment(i.id, 'acceptable') for i in items]",
                 id="string-verdict"),
]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str


def cutloop(*argv: str, in_subprocess: bool = False) -> Outcome:
    """`cutloop ARGV`: in-process by default, else a real subprocess (`run_cli`)."""
    if in_subprocess:
        proc = run_cli(*argv)
        return Outcome(proc.returncode, proc.stderr)
    result = CliRunner(env=ENV).invoke(app, list(argv))
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the interpreter prints for an exception nothing caught.
        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, stderr)


def the_error_line(out: Outcome) -> str:
    """The one non-blank stderr line of a failed command, which must start with `error:`."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.code != 0, f"exit 0; stderr: {out.stderr[-2000:]}"
    assert len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def snapshot(path: Path) -> dict[str, bytes | None] | None:
    """Every path under `path` with its bytes (None for a folder); a regular file is {".":
    bytes}; None when nothing is there."""
    if not path.exists():
        return None
    if not path.is_dir():
        return {".": path.read_bytes()}
    return {
        p.relative_to(path).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(path.rglob("*"))
    }


def write_files(root: Path, files: Files) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@contextmanager
def read_only(root: Path) -> Iterator[None]:
    """`root` and everything in it read-only for the block. Root ignores permission bits, so
    there the files are made immutable (chattr +i) instead; skips where neither holds."""
    paths = [root, *root.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    immutable = can_write(root) and shutil.which("chattr") is not None
    if immutable:
        subprocess.run(["chattr", "-R", "+i", str(root)], capture_output=True, check=False)
    try:
        if can_write(root):
            pytest.skip("cannot make a read-only folder here (root without chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", str(root)], capture_output=True, check=False)
        for p in paths:
            p.chmod(modes[p])


def can_write(folder: Path) -> bool:
    probe = folder / ".write-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A finished one-round run of the tiny model (base_args' settings, one small round);
    cases copy it and must leave their copy as they found it."""
    run_dir = tmp_path_factory.mktemp("bad-inputs") / "run"
    out = cutloop(
        "run", "--run-dir", str(run_dir), "--model", str(tiny_model_dir),
        "--instructions", "demo", "--per-round", "4", "--eval-size", "2",
        "--max-new-tokens", "8", "--iterations", "1", "--judge", "rules",
        "--set", "generation.template=alpaca", "--set", "train.warmup_steps=1",
        "--set", "train.micro_batch_size=2", "--set", "train.grad_accum=1",
    )  # fmt: skip
    assert out.code == 0, out.stderr[-3000:]
    assert (run_dir / "round-01" / "DONE.round").is_file()
    return run_dir


@pytest.mark.parametrize("c", CASES)
def test_bad_input_fails_in_one_line_and_leaves_the_run_dir_alone(
    c: Case,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tiny_model_dir: Path,
    base_args: Callable[..., list[str]],
) -> None:
    run_dir = tmp_path / "run"

    def fill(text: str) -> str:
        for key, value in (("{run}", run_dir), ("{tmp}", tmp_path), ("{model}", tiny_model_dir)):
            text = text.replace(key, str(value))
        return text

    if c.existing:
        shutil.copytree(request.getfixturevalue("finished_run"), run_dir)
    write_files(tmp_path, c.files)
    argv = [fill(a) for a in c.args]
    if c.base:
        argv = base_args(run_dir, *argv)
    with read_only(run_dir) if c.readonly else nullcontext():
        before = snapshot(run_dir)
        out = cutloop(*argv, in_subprocess=c.subprocess)
        line = the_error_line(out)
        assert fill(c.expect) in line, line
        assert snapshot(run_dir) == before, "the run directory changed"


@pytest.mark.parametrize(("name", "body"), CONTRACT_BREAKERS)
def test_a_judge_that_breaks_its_contract_stops_the_round_in_one_line(
    name: str, body: str, tmp_path: Path, base_args: Callable[..., list[str]]
) -> None:
    """The judge loads, so the round starts: its instructions and answers are written, then the
    judge's first batch fails in one line naming it. What was written before the judge stays
    complete (a re-run resumes at the judge), and nothing the judge returned was recorded."""
    plugin = tmp_path / "contract_judge.py"
    plugin.write_text(judge_plugin(name, body))
    run_dir = tmp_path / "run"
    argv = base_args(
        run_dir, "--per-round", "4", "--eval-size", "0", "--iterations", "1",
        "--max-new-tokens", "8", "--judge", f"{plugin}:{name}",
    )  # fmt: skip
    out = cutloop(*argv)
    # Beside the error: the bars of the stages that ran (stderr is not a terminal here, so
    # each bar is left as one final line). Any other line fails the_error_line.
    lines = [x for x in out.stderr.splitlines() if not x.startswith(ROUND_1_BARS)]
    line = the_error_line(Outcome(out.code, "\n".join(lines)))
    assert f"judge {name} " in line, line
    load_yaml(run_dir / "config.yaml")
    round_dir = run_dir / "round-01"
    sample = [r["id"] for r in read_jsonl(round_dir / "instructions.jsonl")]
    shards = sorted((round_dir / "responses").glob("*.jsonl"))
    responses = [r for p in shards for r in read_jsonl(p)]
    assert len(sample) == 4 and [r["id"] for r in responses] == sample
    assert (round_dir / "DONE.generate").is_file()
    assert {r["id"] for r in read_jsonl(run_dir / "ledger.jsonl")} == set(sample)
    assert read_jsonl(round_dir / "judgments.jsonl") == []
    assert not (round_dir / "DONE.judge").exists() and not (round_dir / "train").exists()
