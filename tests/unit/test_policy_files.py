"""Writing the round's policy: the atomic directory swap, and the models the losses refuse."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cut_loop.errors import CutLoopError
from cut_loop.training.policy_files import check_plain_head, replace_dir


def _dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_replace_dir_swaps_the_whole_directory(tmp_path: Path) -> None:
    dst = _dir(tmp_path / "policy", {"old.safetensors": "old", "config.json": "{1}"})
    src = _dir(tmp_path / ".policy.tmp", {"model.safetensors": "new", "config.json": "{2}"})
    replace_dir(src, dst)
    assert {p.name: p.read_text() for p in dst.iterdir()} == {
        "model.safetensors": "new",
        "config.json": "{2}",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no .tmp, no .old left


def test_replace_dir_copy_keeps_the_source(tmp_path: Path) -> None:
    src = _dir(tmp_path / "start", {"config.json": "{}"})
    replace_dir(src, tmp_path / "policy", copy=True)
    assert (src / "config.json").read_text() == (tmp_path / "policy" / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy", "start"]


@pytest.mark.parametrize(
    "field, value", [("final_logit_softcapping", 30.0), ("logit_scale", 0.5), ("logits_scaling", 2)]
)
def test_models_that_transform_their_logits_are_refused(field: str, value: float) -> None:
    model = SimpleNamespace(config=SimpleNamespace(**{field: value}))
    with pytest.raises(CutLoopError, match="m/: models that rescale or cap their logits"):
        check_plain_head(model, "m/")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, 1, 1.0])
def test_a_plain_head_passes(value: float | None) -> None:
    check_plain_head(SimpleNamespace(config=SimpleNamespace(logit_scale=value)), "m/")  # type: ignore[arg-type]
