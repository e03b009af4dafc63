"""The pea command line: clear errors with exit status 2 for bad input."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import ML_FILE, run_pea, write_subset


def test_cli_missing_input_file(tmp_path):
    missing = tmp_path / "capture-2017-07-07.csv"
    result = run_pea("--warehouse", str(tmp_path / "wh"), "ingest", "--input", str(missing))
    assert result.returncode == 2
    assert f"input not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_csv_without_feature_columns(tmp_path):
    path = tmp_path / "assets.csv"
    path.write_text("hostname,owner\nsrv1,ops\n", encoding="utf-8")
    result = run_pea("--warehouse", str(tmp_path / "wh"), "ingest", "--input", str(path))
    assert result.returncode == 2
    assert f"{path}: no known CICFlowMeter feature column" in result.stderr
    assert "check that the file is a CICFlowMeter flow export" in result.stderr


def test_cli_training_without_label_column(tmp_path, real_data):
    unlabelled = tmp_path / "unlabelled.csv"
    write_subset(real_data / ML_FILE, unlabelled, stride=500, drop_label=True)
    warehouse = str(tmp_path / "wh")
    for stage in (["ingest", "--input", str(unlabelled)], ["clean"]):
        assert run_pea("--warehouse", warehouse, "-q", *stage).returncode == 0
    result = run_pea("--warehouse", warehouse, "select")
    assert result.returncode == 2
    assert "pea.silver has no labelled rows" in result.stderr
    assert "ingest CSV files that have a 'Label' column" in result.stderr


def test_cli_train_before_select_names_missing_stage(tmp_path):
    result = run_pea("--warehouse", str(tmp_path / "wh"), "train")
    assert result.returncode == 2
    assert "table pea.feature_ranking not found" in result.stderr
    assert "run `pea select` first" in result.stderr


def test_cli_unknown_setting_is_named(tmp_path):
    result = run_pea("--warehouse", str(tmp_path / "wh"), "--set", "train.epoch=5", "train")
    assert result.returncode == 2
    assert "unknown configuration key 'train.epoch'" in result.stderr


def test_cli_example_writes_archive(tmp_path):
    result = run_pea("example", "--output", str(tmp_path / "ex"), "--rows", "200")
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in written] == ["example-monday-benign.csv", "example-friday-mixed.csv"]
    assert all(p.is_file() for p in written)


def test_cli_sql_missing_table_names_stage(tmp_path):
    warehouse = tmp_path / "wh"
    result = run_pea("--warehouse", str(warehouse), "sql", "SELECT * FROM pea.predictions")
    assert result.returncode == 2
    assert f"table pea.predictions not found in warehouse {warehouse}" in result.stderr
    assert "run `pea score` first" in result.stderr
    assert "Traceback" not in result.stderr
    assert "\tat org.apache" not in result.stderr


def test_cli_sql_negative_limit_rejected(tmp_path):
    result = run_pea("--warehouse", str(tmp_path / "wh"), "sql", "SELECT 1", "--limit", "-1")
    assert result.returncode == 2
    assert "argument --limit: invalid row count -1: expected 0 (all rows)" in result.stderr
    result = run_pea("--warehouse", str(tmp_path / "wh"), "sql", "SELECT 1", "--limit",
                     "2147483647")
    assert result.returncode == 2
    assert "invalid row count 2147483647: at most 2,147,483,646" in result.stderr


def test_cli_unreachable_master_named(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_pea("--warehouse", str(tmp_path / "wh"), "--set",
                     f"spark.master=spark://127.0.0.1:{port}", "sql", "SELECT 1", timeout=60)
    assert result.returncode == 2
    assert f"no Spark master listens at spark://127.0.0.1:{port}" in result.stderr
    assert "pea --config conf/cluster.yaml cluster start" in result.stderr
