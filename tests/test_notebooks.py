"""The notebooks under notebooks/, executed with nbclient in a real Python kernel.

Each notebook runs in a kernel of this interpreter (the project's venv), from the
``notebooks/`` folder, and prints a summary line with a JSON object of the values
it found. A notebook is one more entry in ``CASES``: the environment it runs
with, and a check that compares its summary with the tables or the input files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO, WEB_FILE

pytestmark = pytest.mark.timeout(3600)

NOTEBOOKS = REPO / "notebooks"
# Seconds one cell may run: the cluster notebook's stage cell runs six spark-submits.
CELL_TIMEOUT_S = 3000


def execute_notebook(path: Path) -> str:
    """Run every cell of the notebook at ``path`` and return the text of all its outputs."""
    notebook = nbformat.read(path, as_version=4)
    # The kernelspec that ipykernel installs into this venv starts this interpreter.
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or "".join(output.get("data", {}).get(
                "text/plain", "")))
    return "\n".join(texts)


def summary_of(output: str, prefix: str) -> dict:
    """Parse the one output line that starts with ``prefix`` and a space."""
    lines = [line for line in output.splitlines() if line.startswith(prefix + " ")]
    assert len(lines) == 1, output[-3000:]
    return json.loads(lines[0][len(prefix) + 1:])


def _analyst_sql_environment(request) -> dict[str, str]:
    config = request.getfixturevalue("explained_subset")
    return {"PEA_WAREHOUSE": str(config.warehouse_path), "PEA_DATABASE": config.database}


def _check_analyst_sql(spark, request, output: str) -> None:
    summary = summary_of(output, "NOTEBOOK_SUMMARY")
    config = request.getfixturevalue("explained_subset")
    db = config.database
    predictions = spark.table(f"{db}.predictions")
    assert summary["predictions"] == predictions.count()
    assert summary["attack_predictions"] == predictions.filter("is_attack_predicted = 1").count()
    assert summary["explained_flows"] == spark.table(f"{db}.explanations").select(
        "flow_key").distinct().count()
    false_alarms = spark.sql(
        f"SELECT COALESCE(SUM(flows), 0) AS n FROM {db}.attack_counts "
        f"WHERE label = 'BENIGN' AND predicted_label = 'ATTACK'").first()["n"]
    assert summary["false_alarms"] == false_alarms
    features = spark.table(f"{db}.explanations").select("display_name").distinct()
    assert summary["strongest_feature"] in {row[0] for row in features.collect()}


def _platform_engineer_environment(request) -> dict[str, str]:
    # The notebook writes its cluster, warehouse and zip under this folder.
    return {"PEA_NOTEBOOK_WORK": str(request.getfixturevalue("tmp_path"))}


def _check_platform_engineer(spark, request, output: str) -> None:
    summary = summary_of(output, "SUMMARY")
    real_data = request.getfixturevalue("real_data")
    lines = len((real_data / WEB_FILE).read_bytes().splitlines()) - 1
    assert summary["input_lines"] == lines
    assert summary["predictions"] == lines
    assert summary["distinct_lines"] == lines
    assert 0 < summary["predicted_attacks"] < lines
    assert summary["rank_executors"] == ["0", "1"]
    assert 0 < summary["threshold"] < 1
    assert "stopped 3 daemons" in output
    assert "running" not in output.split("stopped 3 daemons", 1)[1]


# Each notebook: a function returning the environment it runs with, and its check.
CASES: dict[str, tuple[Callable, Callable]] = {
    "analyst_sql.ipynb": (_analyst_sql_environment, _check_analyst_sql),
    "platform_engineer.ipynb": (_platform_engineer_environment, _check_platform_engineer),
}


def test_every_notebook_has_a_case():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs(spark, request, monkeypatch, name):
    environment, check = CASES[name]
    for key, value in environment(request).items():
        monkeypatch.setenv(key, value)
    output = execute_notebook(NOTEBOOKS / name)
    check(spark, request, output)
