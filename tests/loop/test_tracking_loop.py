"""MLflow tracking of a real tiny run: each point sent once, a resumed or extended run
continuing the same MLflow run (a local file store stands in for a tracking server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cut_loop.rundir import read_jsonl
from tests.loop.conftest import run_cli

pytestmark = pytest.mark.slow


def test_mlflow_gets_every_point_once_across_an_extension(
    tmp_path: Path, base_args: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="mlflow-skinny is a dev dependency (setup.sh installs it)")
    from mlflow.tracking import MlflowClient

    store = f"file://{tmp_path / 'mlruns'}"
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client here too
    run_dir = tmp_path / "run"
    args = base_args(
        run_dir, "--iterations", "1", "--set", "tracking.mlflow.experiment=cut-loop-test",
        "--set", f"tracking.mlflow.tracking_uri={store}",
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
