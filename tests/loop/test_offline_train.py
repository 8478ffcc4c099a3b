"""`cutloop train` through the real CLI: a slice of the CUT authors' first round, the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from tests.loop.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory: pytest.TempPathFactory, cut_online_dir: Path) -> Path:
    """Six criticised and six accepted rows of iter1.json, as they are."""
    rows = json.loads((cut_online_dir / "iter1.json").read_text())
    picked = [r for r in rows if r["judgment"]][:6] + [r for r in rows if not r["judgment"]][:6]
    path = tmp_path_factory.mktemp("data") / "slice.json"
    path.write_text(json.dumps(picked))
    return path


def _train(data: Path, model: Path, output: Path, *extra: str):
    return run_cli(
        "train", "--data", str(data), "--model", str(model), "--output", str(output),
        "--max-steps", "3", "--set", "train.max_length=128", "--set", "train.warmup_steps=1",
        "--set", "train.micro_batch_size=2", "--set", "loss.downsample=1.0",
        "--set", "train.learning_rate=1e-3", *extra,
    )  # fmt: skip


def test_trains_prints_the_summary_and_leaves_a_model(
    data_slice: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _train(data_slice, tiny_model_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "trained 3 steps with loss cut on 12 examples (negatives 6, positives 6)" in text
    for line in ("align_loss", "misalign_loss", "flagged-token fraction on Misalign examples:"):
        assert line in text
    assert "tokens/s" in text

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3
    assert 0 <= summary["components"]["flagged_token_fraction"]["mean"] <= 1
    assert summary["tokens_per_s"] > 0
    AutoModelForCausalLM.from_pretrained(out / "model")
    assert (out / "config.yaml").is_file()
    assert not list((out / "train").glob("checkpoint-*"))  # removed once the model is saved

    # The same command again: finished, so the summary comes back without training.
    log = (out / "train" / "log.jsonl").read_text()
    again = _train(data_slice, tiny_model_dir, out)
    assert again.returncode == 0 and again.stdout == text
    assert (out / "train" / "log.jsonl").read_text() == log
    # A different loss in the same output directory is refused.
    other = _train(data_slice, tiny_model_dir, out, "--loss", "sft")
    assert other.returncode == 2 and "loss.name='cut', not 'sft'" in other.stderr


def test_bad_data_and_unusable_losses_fail_in_one_line(
    data_slice: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "output": "y"}]))
    for data, loss, message in [
        (bad, "cut", f"{bad}: row 0: missing 'judgment'"),
        (data_slice, "rrhf", "loss rrhf needs a judge that returns scores"),
        (data_slice, "dpo", "loss dpo needs generation.samples_per_instruction >= 2"),
    ]:
        result = _train(data, tiny_model_dir, tmp_path / f"out-{loss}", "--loss", loss)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
        assert not (tmp_path / f"out-{loss}" / "model").exists()
