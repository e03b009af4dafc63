"""The notebooks under notebooks/, executed with nbclient in a real Python kernel.

Each notebook ends by printing ``NOTEBOOK_SUMMARY`` and a JSON object of the
values it found; the test compares them with the tables read here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
# Seconds one cell may run: starting a SparkSession in the kernel takes most of a minute.
CELL_TIMEOUT_S = 600


def execute_notebook(path: Path) -> dict:
    """Run every cell of the notebook at ``path`` and return its NOTEBOOK_SUMMARY object."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("NOTEBOOK_SUMMARY "):
                    return json.loads(line.split(" ", 1)[1])
    pytest.fail(f"{path.name} printed no NOTEBOOK_SUMMARY line")


def _analyst_sql_environment(request) -> dict[str, str]:
    config = request.getfixturevalue("explained_subset")
    return {"PEA_WAREHOUSE": str(config.warehouse_path), "PEA_DATABASE": config.database}


def _check_analyst_sql(spark, request, summary: dict) -> None:
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


# Each notebook: a function returning the environment it runs with, and its check.
CASES: dict[str, tuple[Callable, Callable]] = {
    "analyst_sql.ipynb": (_analyst_sql_environment, _check_analyst_sql),
}


def test_every_notebook_has_a_case():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs(spark, request, monkeypatch, name):
    environment, check = CASES[name]
    for key, value in environment(request).items():
        monkeypatch.setenv(key, value)
    summary = execute_notebook(NOTEBOOKS / name)
    check(spark, request, summary)
