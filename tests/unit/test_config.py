from pathlib import Path

import pytest

from cut_loop.config import (
    config_from_dict,
    defining_differences,
    resolve_run_config,
    save_config,
)
from cut_loop.errors import CutLoopError


def test_cli_overrides_win_over_yaml(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("seed: 3\ndata:\n  per_round: 10\njudge:\n  name: rules\n")
    cfg = resolve_run_config(cfg_file, {"data.per_round": 20}, ["train.learning_rate=1e-4"])
    assert cfg.seed == 3
    assert cfg.data.per_round == 20
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.judge.name == "rules"


def test_all_bad_fields_reported_in_one_line() -> None:
    with pytest.raises(CutLoopError) as e:
        resolve_run_config(None, {}, ["foo=1", "train.lr=3", "loss.name=xx", "data.per_round=abc"])
    msg = str(e.value)
    assert "\n" not in msg
    for fragment in ("'foo'", "'train.lr'", "loss.name='xx'", "data.per_round='abc'"):
        assert fragment in msg


def test_judge_extra_keys_are_judge_options() -> None:
    cfg = resolve_run_config(None, {}, ["judge.model=gpt-4o", "judge.concurrency=8"])
    assert cfg.judge.options == {"model": "gpt-4o", "concurrency": 8}
    assert cfg.to_dict()["judge"]["model"] == "gpt-4o"


def test_saved_config_round_trips_and_is_base_for_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = resolve_run_config(None, {"run_dir": str(run_dir), "seed": 7}, ["judge.model=x"])
    save_config(cfg, run_dir / "config.yaml")
    again = resolve_run_config(None, {"run_dir": str(run_dir), "iterations": 9}, [])
    assert again.seed == 7 and again.judge.options == {"model": "x"}
    assert again.iterations == 9
    assert defining_differences(cfg, again) == []


def test_defining_differences_ignore_operational_fields() -> None:
    a = config_from_dict({})
    b = config_from_dict({"iterations": 9, "generation": {"batch_size": 2}, "seed": 1})
    assert defining_differences(a, b) == [("seed", 0, 1)]


@pytest.mark.parametrize("n", ["100", "99999999999999999999"])
def test_iterations_are_bounded_by_the_round_folders_and_answer_at_once(n: str) -> None:
    with pytest.raises(CutLoopError, match=rf"iterations={n} is more than 99 \(rounds live in"):
        resolve_run_config(None, {}, [f"iterations={n}"])


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 3\ntrain:\n  epochs: 0\n")
    with pytest.raises(CutLoopError) as e:
        resolve_run_config(None, {"run_dir": str(run)}, ["train.learning_rate=-1"])
    ours, theirs = str(e.value).split("; and ")
    assert ours.startswith("command line: train.learning_rate") and "epochs" not in ours
    assert theirs.startswith(f"{run}/config.yaml: train.epochs")
    with pytest.raises(CutLoopError, match=r"^command line: unknown key 'train.lr'$"):
        resolve_run_config(None, {}, ["train.lr=1"])


def test_a_trailing_slash_does_not_make_another_model(tmp_path: Path) -> None:
    a = config_from_dict({"model": f"{tmp_path}/model/"})
    b = config_from_dict({"model": f"{tmp_path}/model"})
    assert a.model == b.model and not defining_differences(a, b)
