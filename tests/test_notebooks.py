"""Execute the notebooks in ``notebooks/`` with nbclient and check the values they print.

Each notebook runs in a kernel of this interpreter (the project's venv), from the
``notebooks/`` folder. A notebook is one more entry in ``NOTEBOOKS``: its file
name and a function that checks the text of its outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, WEB_FILE

pytestmark = pytest.mark.timeout(3600)

# Seconds one cell may run: the cluster notebook's stage cell runs six spark-submits.
CELL_TIMEOUT_S = 3000


def check_platform_engineer(output: str, real_data: Path) -> None:
    summary_lines = [line for line in output.splitlines() if line.startswith("SUMMARY ")]
    assert len(summary_lines) == 1, output[-3000:]
    summary = json.loads(summary_lines[0][len("SUMMARY "):])
    lines = len((real_data / WEB_FILE).read_bytes().splitlines()) - 1
    assert summary["input_lines"] == lines
    assert summary["predictions"] == lines
    assert summary["distinct_lines"] == lines
    assert 0 < summary["predicted_attacks"] < lines
    assert summary["rank_executors"] == ["0", "1"]
    assert 0 < summary["threshold"] < 1
    assert "stopped 3 daemons" in output
    assert "running" not in output.split("stopped 3 daemons", 1)[1]


NOTEBOOKS: list[tuple[str, Callable[[str, Path], None]]] = [
    ("platform_engineer.ipynb", check_platform_engineer),
]


def run_notebook(path: Path) -> str:
    """Execute ``path`` in a kernel of this interpreter; return the text of all outputs."""
    import nbformat
    from nbclient import NotebookClient

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


@pytest.mark.parametrize(("name", "check"), NOTEBOOKS, ids=[name for name, _ in NOTEBOOKS])
def test_notebook_runs(name: str, check: Callable[[str, Path], None], real_data: Path,
                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The kernel inherits this environment; the notebook writes under this folder.
    monkeypatch.setenv("PEA_NOTEBOOK_WORK", str(tmp_path))
    output = run_notebook(REPO / "notebooks" / name)
    check(output, real_data)
