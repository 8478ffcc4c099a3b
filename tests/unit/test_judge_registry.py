"""load_judge: built-in names, module:Name, file.py:Name, rubric YAML, and one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.judging.base import Judge, JudgeItem
from cut_loop.judging.openai_judge import OpenAIJudge
from cut_loop.judging.registry import BUILTINS, known_judges, load_judge
from cut_loop.judging.rules import RulesJudge

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "judges" / "example_judge.py"
ITEMS = [
    JudgeItem("a", "Explain gravity.", "", "Masses attract each other."),
    JudgeItem("b", "Hi", "", "Hi"),
]


@contextlib.contextmanager
def one_line(match: str) -> Iterator[None]:
    """Expect a CutLoopError whose message matches `match` and is a single line."""
    with pytest.raises(CutLoopError, match=match) as e:
        yield
    assert "\n" not in str(e.value)


def assert_length_judge_works(judge: Judge) -> None:
    assert isinstance(judge, Judge)
    out = judge.judge(ITEMS)
    assert [j.id for j in out] == ["a", "b"]
    assert out[0].acceptable and not out[1].acceptable
    assert out[1].critique.startswith("The response is too short")


def test_builtin_names():
    assert set(BUILTINS) <= set(known_judges())
    assert isinstance(load_judge("rules", {}), RulesJudge)
    judge = load_judge("openai", {"model": "gpt-4o", "base_url": "http://127.0.0.1:9/v1"})
    assert isinstance(judge, OpenAIJudge) and judge.model == "gpt-4o"


def test_module_colon_name(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    assert_length_judge_works(load_judge("example_judge:LengthJudge", {"min_words": 3}))


def test_file_colon_name():
    judge = load_judge(f"{EXAMPLE}:LengthJudge", {"min_words": 3})
    assert_length_judge_works(judge)
    again = load_judge(f"{EXAMPLE}:LengthJudge", {})
    assert type(again) is type(judge)  # the file is loaded once, not once per call


def test_relative_file_path(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert_length_judge_works(load_judge("judges/example_judge.py:LengthJudge", {"min_words": 3}))


def test_a_factory_function_works_too(tmp_path):
    plugin = tmp_path / "factory_judge.py"
    plugin.write_text(
        "from cut_loop.judging.base import Judgment\n"
        "class _Strict:\n"
        "    def __init__(self, word): self.word = word\n"
        "    def judge(self, items):\n"
        "        return [Judgment.accept(i.id) if self.word in i.response\n"
        "                else Judgment.reject(i.id, f'The response does not say {self.word}.')\n"
        "                for i in items]\n"
        "def make(word='Hi'):\n"
        "    return _Strict(word)\n"
    )
    out = load_judge(f"{plugin}:make", {"word": "Masses"}).judge(ITEMS)
    assert out[0].acceptable and out[1].critique == "The response does not say Masses."


def test_a_rubric_yaml_means_the_openai_judge(tmp_path):
    rubric = tmp_path / "strict.yaml"
    rubric.write_text("system: Be strict.\nuser: 'Judge: {response}'\n")
    judge = load_judge(str(rubric), {"base_url": "http://127.0.0.1:9/v1"})
    assert isinstance(judge, OpenAIJudge) and judge.rubric.user == "Judge: {response}"
    with one_line("rubric file .*missing.yaml does not exist"):
        load_judge(str(tmp_path / "missing.yaml"), {})


def test_unknown_name_lists_the_known_ones():
    with one_line(r"unknown judge 'gpt5'; known: .*openai.*rules"):
        load_judge("gpt5", {})


def test_missing_module():
    with one_line(r"no module named 'no_such_pkg\.judges'"):
        load_judge("no_such_pkg.judges:Judge", {})


def test_a_module_whose_own_import_fails_says_so(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with one_line("importing broken_plugin failed: No module named 'not_installed_dependency_xyz'"):
        load_judge("broken_plugin:Judge", {})


def test_missing_attribute(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    with one_line("has no attribute 'WordJudge'"):
        load_judge("example_judge:WordJudge", {})
    with one_line("has no attribute 'WordJudge'"):
        load_judge(f"{EXAMPLE}:WordJudge", {})


def test_missing_file(tmp_path):
    with one_line("file .*nowhere.py does not exist"):
        load_judge(f"{tmp_path}/nowhere.py:Judge", {})


def test_not_a_judge(tmp_path):
    plugin = tmp_path / "not_a_judge.py"
    plugin.write_text("class Scorer:\n    def score(self, items):\n        return []\nVALUE = 3\n")
    with one_line("Scorer has no judge\\(items\\) method"):
        load_judge(f"{plugin}:Scorer", {})
    with one_line("neither a class nor a factory"):
        load_judge(f"{plugin}:VALUE", {})


def test_bad_options():
    with one_line(r"judge '.*LengthJudge': unknown option\(s\) max_words; it accepts: min_words"):
        load_judge(f"{EXAMPLE}:LengthJudge", {"max_words": 3})
    with one_line("judge 'openai': unknown option.*modle"):
        load_judge("openai", {"modle": "gpt-4o"})
    with one_line("judge 'rules': bad option: sentence_repeats and loop_repeats must be >= 2"):
        load_judge("rules", {"sentence_repeats": 1})
    with one_line("bad option: min_words must be >= 1"):
        load_judge(f"{EXAMPLE}:LengthJudge", {"min_words": 0})


def installed_plugin(root: Path, entry: str) -> None:
    """What `pip install` leaves behind for a package declaring judges: a module on sys.path
    and a dist-info whose entry_points.txt lists them under group cut_loop.judges."""
    (root / "shouty_judge.py").write_text(
        "from cut_loop.judging.base import Judgment\n"
        "class ShoutyJudge:\n"
        "    '''Rejects responses that are not in capitals.'''\n"
        "    def __init__(self, strict=True): self.strict = strict\n"
        "    def judge(self, items):\n"
        "        return [Judgment.accept(i.id) if i.response.isupper()\n"
        "                else Judgment.reject(i.id, 'The response is not in capitals.')\n"
        "                for i in items]\n"
    )
    dist = root / "shouty_judge-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shouty-judge\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[cut_loop.judges]\n{entry}\n")


def test_entry_point_group(tmp_path, monkeypatch):
    installed_plugin(tmp_path, "shouty = shouty_judge:ShoutyJudge")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert known_judges()["shouty"] == "shouty_judge:ShoutyJudge"
    judge = load_judge("shouty", {"strict": False})
    assert isinstance(judge, Judge) and judge.strict is False
    out = judge.judge([JudgeItem("a", "Shout.", "", "HELLO"), JudgeItem("b", "Shout.", "", "hi")])
    assert out[0].acceptable and out[1].critique == "The response is not in capitals."
    with one_line(r"judge 'shouty': unknown option\(s\) loud; it accepts: strict"):
        load_judge("shouty", {"loud": True})


def test_an_entry_point_to_a_missing_module(tmp_path, monkeypatch):
    installed_plugin(tmp_path, "ghost = ghost_judge_pkg.judges:Ghost")
    monkeypatch.syspath_prepend(str(tmp_path))
    with one_line(r"judge 'ghost': no module named 'ghost_judge_pkg\.judges'"):
        load_judge("ghost", {})


def test_every_builtin_is_declared_as_an_entry_point():
    """pyproject.toml's entry points and the fallback table must name the same built-ins."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["cut_loop.judges"]
    assert declared == BUILTINS
    for target in BUILTINS.values():  # and every target imports
        module, _, attr = target.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr))


def test_composites_by_name():
    for name in ("all", "chain", "vote"):
        judge = load_judge(name, {"judges": [{"name": "rules"}, {"name": "rules"}]})
        assert [j.acceptable for j in judge.judge(ITEMS)] == [True, True]
