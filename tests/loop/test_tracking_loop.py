"""MLflow and W&B tracking of a real tiny run: each point sent once, an extended run
continuing the same tracker run (a local MLflow file store and W&B's offline mode stand in for
the services)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cut_loop.rundir import read_jsonl
from tests.loop.conftest import run_cli

pytestmark = pytest.mark.slow


def test_mlflow_and_wandb_get_every_point_once_across_an_extension(
    tmp_path: Path, base_args: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="mlflow-skinny is a dev dependency (setup.sh installs it)")
    pytest.importorskip("wandb", reason="wandb is a dev dependency (setup.sh installs it)")
    from mlflow.tracking import MlflowClient

    from tests.helpers.wandb_log import history as wandb_history

    store = f"file://{tmp_path / 'mlruns'}"
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client here too
    run_dir = tmp_path / "run"
    args = base_args(
        run_dir, "--iterations", "1", "--set", "tracking.mlflow.experiment=cut-loop-test",
        "--set", f"tracking.mlflow.tracking_uri={store}",
        "--set", "tracking.wandb.project=cut-loop-test", "--set", "tracking.wandb.mode=offline",
    )  # fmt: skip
    assert (result := run_cli(*args, env=env)).returncode == 0, result.stderr[-3000:]
    state = json.loads((run_dir / "tracking" / "mlflow.json").read_text())
    more = run_cli("run", "--run-dir", str(run_dir), "--iterations", "2", env=env)
    assert more.returncode == 0, more.stderr[-3000:]
    again = json.loads((run_dir / "tracking" / "mlflow.json").read_text())
    assert again["run_id"] == state["run_id"] and again["round"] == 2

    client = MlflowClient(tracking_uri=store)
    run = client.get_run(state["run_id"])
    assert run.data.params["loss.name"] == "cut" and run.data.params["judge.name"] == "rules"
    history = client.get_metric_history(state["run_id"], "eval/rules/acceptance_rate")
    assert [m.step for m in history] == [0, 1, 2]
    evals = [r["acceptance_rate"] for r in read_jsonl(run_dir / "metrics.jsonl")
             if r["kind"] == "eval"]  # fmt: skip
    assert [m.value for m in history] == pytest.approx(evals)
    steps = [m.step for m in client.get_metric_history(state["run_id"], "train/loss")]
    trained = [r["steps"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert sorted(steps) == list(range(1, sum(trained) + 1))  # each once, on one axis

    # W&B: one run id over both rounds (an offline folder per send), every point once.
    wb = json.loads((run_dir / "tracking" / "wandb.json").read_text())
    files = sorted((run_dir / "tracking" / "wandb").glob(f"offline-run-*-{wb['run_id']}/*.wandb"))
    assert len(files) == 2
    rows = [row for f in files for row in wandb_history(f)]
    rounds = [r["round"] for r in rows if "eval/rules/acceptance_rate" in r]
    assert rounds == [0, 1, 2]
    assert [r["eval/rules/acceptance_rate"] for r in rows if "eval/rules/acceptance_rate" in r] \
        == pytest.approx(evals)  # fmt: skip
    train_steps = [r["train_step"] for r in rows if "train/loss" in r]
    assert train_steps == list(range(1, sum(trained) + 1))
