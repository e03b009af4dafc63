"""Benchmark scripts at tiny sizes: the archive generator's output, and that each script
runs end to end and prints its table. Timings are not asserted."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ORIGINAL, REAL_FILES, REPO, SHARED_DATA

BENCHMARKS = REPO / "benchmarks"
ARCHIVE_ROWS = 3000
MAX_FILE_ROWS = 700
# Relative difference allowed between the methods' sums of probabilities (float32 models).
SUM_TOLERANCE = 1e-4


def run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a benchmark script in this interpreter and capture its output."""
    env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning")
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_archive(output: Path, rows: int = ARCHIVE_ROWS,
                 max_file_rows: int = MAX_FILE_ROWS) -> subprocess.CompletedProcess:
    return run_script("make_archive.py", "--rows", str(rows), "--output", str(output),
                      "--max-file-rows", str(max_file_rows), "--seed", "7", timeout=120)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def data_lines(folder: Path, stem: str) -> list[bytes]:
    """Data lines of the files drawn from the source ``stem``, in part order."""
    lines = []
    for path in sorted(folder.glob(f"{stem}-part-*.csv")):
        lines += path.read_bytes().splitlines(keepends=True)[1:]
    return lines


def test_make_archive_same_seed_same_bytes(real_data: Path, tmp_path: Path) -> None:
    first = make_archive(tmp_path / "first")
    second = make_archive(tmp_path / "second")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert file_hashes(tmp_path / "first") == file_hashes(tmp_path / "second")
    assert f"wrote {ARCHIVE_ROWS} rows in" in first.stdout


def test_make_archive_row_counts_and_headers(real_data: Path, tmp_path: Path) -> None:
    result = make_archive(tmp_path / "archive")
    assert result.returncode == 0, result.stderr
    total = 0
    for name in REAL_FILES:
        source = real_data / name
        header = source.read_bytes().split(b"\n", 1)[0] + b"\n"
        parts = sorted((tmp_path / "archive").glob(f"{source.stem}-part-*.csv"))
        assert parts, f"no file drawn from {name}"
        for part in parts:
            lines = part.read_bytes().splitlines(keepends=True)
            assert lines[0] == header, part.name
            assert 1 <= len(lines) - 1 <= MAX_FILE_ROWS, part.name
            total += len(lines) - 1
            assert part.name in result.stdout
    assert total == ARCHIVE_ROWS


def test_make_archive_split_keeps_lines(real_data: Path, tmp_path: Path) -> None:
    whole = make_archive(tmp_path / "whole", max_file_rows=ARCHIVE_ROWS)
    split = make_archive(tmp_path / "split", max_file_rows=MAX_FILE_ROWS)
    assert whole.returncode == 0, whole.stderr
    assert split.returncode == 0, split.stderr
    assert len(list((tmp_path / "whole").iterdir())) == len(REAL_FILES)
    for name in REAL_FILES:
        stem = Path(name).stem
        assert data_lines(tmp_path / "whole", stem) == data_lines(tmp_path / "split", stem)


def test_make_archive_rejects_non_empty_output(real_data: Path, tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "old.csv").write_text("x\n")
    result = make_archive(tmp_path / "archive")
    assert result.returncode == 1
    assert "is not empty" in result.stderr


def table_row(stdout: str, method: str) -> list[str]:
    """Fields of the table line that starts with ``method``."""
    for line in stdout.splitlines():
        if line.startswith(method + " "):
            return line[len(method):].split()
    pytest.fail(f"no table row for {method!r} in the output:\n{stdout}")


def test_score_speed_prints_table(spark, trained_subset, real_subset: Path) -> None:
    from pea_spark.train import latest_artifact

    config, _ = trained_subset
    model = latest_artifact(spark, config).path
    result = run_script("score_speed.py", "--rows", "2000", "--model", model,
                        "--data", str(real_subset), "--cores", "2", "--no-warm-up")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MFLOP per flow" in result.stdout
    assert "Ceiling (estimate)" in result.stdout
    methods = ["Keras model.predict", "pea-spark score_flows", "predict_batch_udf"]
    for method in methods:
        rows, seconds, rate, ratio, ceiling = table_row(result.stdout, method)
        assert rows == "2000"
        assert float(seconds) > 0
        assert 0 < float(ceiling) < 1
    sums = [float(re.search(rf"^  {re.escape(m)}\s+(\S+)", result.stdout, re.M).group(1))
            for m in methods]
    assert max(sums) - min(sums) <= SUM_TOLERANCE * max(sums)


def test_ingest_speed_prints_table(real_data: Path) -> None:
    result = run_script("ingest_speed.py", "--rows", "2000", "--files", "4", "--cores", "2",
                        "--no-warm-up")
    assert result.returncode == 0, result.stderr[-3000:]
    for method, files in [("pyarrow, one file", "1"), ("pyarrow, many files", "4"),
                          ("pea ingest, one file", "1"), ("pea ingest, many files", "4")]:
        assert table_row(result.stdout, method)[:2] == [files, "2000"]
    assert "pea ingest, one file: 2000 rows loaded, 0 quarantined" in result.stdout
    assert "pea ingest, many files: 2000 rows loaded, 0 quarantined" in result.stdout


def test_benchmarks_default_to_shared_data() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import make_archive
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert make_archive.DATA.resolve() == SHARED_DATA / ORIGINAL
    assert make_archive.ORIGINAL_FILES == REAL_FILES


def test_pipeline_speed_prints_tables(real_data: Path) -> None:
    result = run_script("pipeline_speed.py", "--rows", "2000", "--set", "train.epochs=1",
                        "--set", "evaluate.baseline=false", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "### 2,000 flows (3 files" in result.stdout
    stages = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] not in ("stage", "---"):
            stages[cells[0]] = cells
    assert list(stages) == ["spark start", "ingest", "clean", "select", "split", "train",
                            "evaluate", "crossval", "score", "explain", "all"]
    assert stages["ingest"][6] == "2000 lines loaded, 0 quarantined"
    assert stages["crossval"][6] == "skipped"
    attacks = re.fullmatch(r"2000 flows, (\d+) predicted attacks", stages["score"][6]).group(1)
    assert stages["explain"][6] == f"{attacks} flows explained"
    for name, cells in stages.items():
        seconds, driver, jvm, _, total = (float(cell) for cell in cells[1:6])
        assert seconds >= 0, name
        assert 0 < driver <= total, name
        assert 0 < jvm <= total, name
    assert "2,000 flows: score + explain took" in result.stdout


def test_pipeline_speed_growth_ratios() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pipeline_speed
    finally:
        sys.path.remove(str(BENCHMARKS))

    def result(rows: int, ingest: float, crossval_figure: str) -> dict:
        return {"rows": rows, "stages": [
            {"stage": "ingest", "seconds": ingest, "figure": ""},
            {"stage": "crossval", "seconds": 0.01, "figure": crossval_figure}]}

    table = pipeline_speed.growth_table([result(1000, 2.0, "skipped"),
                                         result(10000, 15.0, "skipped")])
    assert table.splitlines() == ["| stage | 1,000 s | 10,000 s | ratio 10x rows |",
                                  "| --- | --- | --- | --- |",
                                  "| ingest | 2.0 | 15.0 | 7.50 |"]
