"""Ingest: real CICIDS2017 files into bronze, row accounting, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pea_spark.ingest import InputError, find_csv_files, ingest, inspect_source
from pea_spark.schema import FEATURES, map_header
from pea_spark.session import read_table
from tests.conftest import GROUPED_FILE, ML_FILE, REAL_FILES, WEB_FILE, make_config

REAL_ROWS = {ML_FILE: 9_998, WEB_FILE: 7_267, GROUPED_FILE: 6_311}


IMPROVED_ROWS = 25_127  # the 16 files of cicids2017_improved/sample_2500


@pytest.fixture(scope="module")
def ingested(spark, shared_data, tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("wh_ingest"))
    totals = ingest(spark, config, [shared_data])
    return config, totals


def test_ingest_real_files_row_counts(spark, ingested):
    config, totals = ingested
    assert totals["files"] == 19
    assert totals["loaded"] == sum(REAL_ROWS.values()) + IMPROVED_ROWS
    assert totals["quarantined"] == 0
    assert totals["skipped"] == 19  # one header per file
    assert totals["lines_read"] == totals["loaded"] + totals["quarantined"] + totals["skipped"]
    bronze = read_table(spark, config, "bronze")
    assert bronze.count() == 48_703


def _physical_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def test_ingest_audit_adds_up_on_every_shared_file(spark, ingested, shared_data):
    config, _ = ingested
    audit = {r["source_file"]: r for r in read_table(spark, config, "ingest_audit")
             .filter(F.col("status") == "new").collect()}
    bronze = {r["source_file"]: r["count"] for r in
              read_table(spark, config, "bronze").groupBy("source_file").count().collect()}
    files = sorted(shared_data.rglob("*.csv"))
    assert len(files) == 19
    assert set(audit) == {str(f.resolve()) for f in files}
    for path in files:
        row = audit[str(path.resolve())]
        assert row["lines_read"] == _physical_lines(path), path.name
        assert row["lines_read"] == (row["rows_loaded"] + row["rows_quarantined"]
                                     + row["lines_skipped"]), path.name
        assert row["rows_loaded"] == bronze[str(path.resolve())], path.name
        assert row["skip_reasons"] == {"header": 1}, path.name
        assert row["status"] == "new"
        assert len(row["sha256"]) == 64


def test_ingest_names_the_dialect_of_each_file(spark, ingested):
    config, _ = ingested
    audit = read_table(spark, config, "ingest_audit")
    dialects = {Path(r["source_file"]).parent.name: r["dialect"]
                for r in audit.select("source_file", "dialect").collect()}
    assert dialects == {
        "MachineLearningCVE": "cicids2017-machinelearningcve",
        "web_attacks": "cicids2017-trafficlabelling",
        "grouped_sample": "cicids2017-machinelearningcve+pandas",
        "sample_2500": "cicids2017-2021",
    }


def test_ingest_keeps_unaliased_columns_aside(spark, ingested, shared_data):
    config, _ = ingested
    path = str((shared_data / "cicids2017_improved/sample_2500/Heartbleed_11.csv").resolve())
    audit = read_table(spark, config, "ingest_audit").filter(F.col("source_file") == path).first()
    extra = ["id", "Fwd RST Flags", "Bwd RST Flags", "ICMP Code", "ICMP Type",
             "Total TCP Flow Time", "Attempted Category"]
    assert audit["extra_columns"] == extra
    row = (read_table(spark, config, "bronze")
           .filter((F.col("source_file") == path) & (F.col("line_number") == 2)).first())
    first_line = Path(path).read_text(encoding="utf-8").splitlines()[1].split(",")
    header = Path(path).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert row["extra_columns"] == {name: first_line[header.index(name)] for name in extra}
    assert row["destination_port"] == first_line[header.index("Dst Port")]
    assert row["total_fwd_packets"] == first_line[header.index("Total Fwd Packet")]
    assert row["label"] == "Heartbleed"
    assert "id" not in FEATURES
    assert "fwd_rst_flags" not in FEATURES


def test_reingest_of_the_same_files_adds_nothing(spark, ingested, shared_data):
    config, _ = ingested
    totals = ingest(spark, config, [shared_data])
    assert totals == {"files": 19, "lines_read": 0, "loaded": 0, "quarantined": 0,
                      "skipped": 0, "unchanged": 19}
    assert read_table(spark, config, "bronze").count() == 48_703
    audit = read_table(spark, config, "ingest_audit")
    assert audit.count() == 38
    assert audit.filter(F.col("status") == "unchanged").count() == 19


def test_ingest_audit_adds_up_per_file(spark, ingested, real_data):
    config, _ = ingested
    audit = {Path(r["source_file"]).name: r for r in read_table(spark, config, "ingest_audit")
             .filter(F.col("status") == "new").collect()}
    for name, rows in REAL_ROWS.items():
        row = audit[Path(name).name]
        assert row["rows_loaded"] == rows
        assert row["lines_skipped"] == 1  # the header
        assert row["lines_read"] == rows + 1
        assert row["lines_read"] == (row["rows_loaded"] + row["rows_quarantined"]
                                     + row["lines_skipped"])


def test_ingest_keeps_file_and_line(spark, ingested, real_data):
    config, _ = ingested
    bronze = read_table(spark, config, "bronze")
    path = str((real_data / ML_FILE).resolve())
    row = bronze.filter((F.col("source_file") == path) & (F.col("line_number") == 67)).first()
    # Line 67 of the original file: a zero-duration flow to port 55043.
    assert row["destination_port"] == "55043"
    assert row["flow_duration"] == "0"
    assert row["flow_bytes_per_s"] == "Infinity"
    assert row["flow_packets_per_s"] == "Infinity"
    assert row["label"] == "BENIGN"


def test_ingest_line_numbers_cover_each_file(spark, ingested):
    config, _ = ingested
    bronze = read_table(spark, config, "bronze")
    spans = bronze.groupBy("source_file").agg(
        F.min("line_number").alias("first"), F.max("line_number").alias("last"),
        F.countDistinct("line_number").alias("distinct")).collect()
    for row in spans:
        if "cicids2017_improved" in row["source_file"]:
            continue
        rows = REAL_ROWS[next(n for n in REAL_FILES if row["source_file"].endswith(n))]
        assert row["first"] == 2
        assert row["last"] == rows + 1
        assert row["distinct"] == rows


def test_ingest_resolves_all_three_headers(real_data):
    for name in REAL_FILES:
        source = inspect_source(real_data / name)
        assert source.mapping.features == FEATURES, name
    grouped = inspect_source(real_data / GROUPED_FILE).mapping
    assert grouped.repeated == [("fwd_header_length", 54)]
    assert "destination_port" not in grouped.positions
    web = inspect_source(real_data / WEB_FILE).mapping
    assert web.positions["flow_id"] == 0
    assert web.positions["timestamp"] == 6


def test_map_header_resolves_aliases():
    mapping = map_header([" Dst Port", "Tot Fwd Pkts", "Flow Byts/s", "Total Fwd Packet",
                          "Fwd Seg Size Avg", "Label", "Mystery"])
    assert mapping.positions == {"destination_port": 0, "total_fwd_packets": 1,
                                 "flow_bytes_per_s": 2, "avg_fwd_segment_size": 4, "label": 5}
    assert mapping.repeated == [("total_fwd_packets", 3)]
    assert mapping.unknown == ["Mystery"]


def test_ingest_quarantines_bad_rows_and_skips_blank_lines(spark, tmp_path, real_data):
    lines = (real_data / ML_FILE).read_bytes().splitlines(keepends=True)
    good = lines[1:3]
    short = b"80,1,2\r\n"
    path = tmp_path / "messy export.csv"
    path.write_bytes(lines[0] + good[0] + short + b",,,,\r\n" + b"\r\n" + good[1])
    config = make_config(tmp_path / "wh")
    totals = ingest(spark, config, [path])
    assert totals == {"files": 1, "lines_read": 6, "loaded": 2, "quarantined": 1, "skipped": 3,
                      "unchanged": 0}
    quarantine = read_table(spark, config, "quarantine").collect()
    assert len(quarantine) == 1
    assert quarantine[0]["line_number"] == 3
    assert quarantine[0]["raw_line"] == "80,1,2"
    assert quarantine[0]["reason"] == "expected 79 fields as in the header, found 3"
    bronze = read_table(spark, config, "bronze").orderBy("line_number").collect()
    assert [r["line_number"] for r in bronze] == [2, 6]


def test_ingest_missing_input_names_path(spark, tmp_path):
    config = make_config(tmp_path / "wh")
    missing = tmp_path / "no-such-capture.csv"
    with pytest.raises(InputError, match="input not found: .*no-such-capture.csv"):
        ingest(spark, config, [missing])


def test_ingest_csv_without_feature_column_names_file(spark, tmp_path):
    path = tmp_path / "inventory.csv"
    path.write_text("host,owner,room\nsrv1,ops,b12\n", encoding="utf-8")
    config = make_config(tmp_path / "wh")
    with pytest.raises(InputError, match=r"inventory.csv: no known CICFlowMeter feature column"):
        ingest(spark, config, [path])


def test_ingest_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.csv: the file is empty"):
        inspect_source(path)


def test_find_csv_files_folder_without_csv(tmp_path):
    (tmp_path / "notes.txt").write_text("not a capture", encoding="utf-8")
    with pytest.raises(InputError, match="no CSV file found under folder"):
        find_csv_files([tmp_path])


def test_ingest_quarantines_text_in_numeric_column(spark, tmp_path, real_data):
    lines = (real_data / WEB_FILE).read_bytes().splitlines()
    fields = lines[1].split(b",")
    fields[7] = b"abc"  # Flow Duration
    fields[20] = b"1_000"  # Flow Bytes/s
    path = tmp_path / "text.csv"
    path.write_bytes(b"\n".join([lines[0], b",".join(fields), lines[2]]) + b"\n")
    config = make_config(tmp_path / "wh")
    totals = ingest(spark, config, [path])
    assert totals["loaded"] == 1
    assert totals["quarantined"] == 1
    row = read_table(spark, config, "quarantine").first()
    assert row["line_number"] == 2
    assert row["reason"] == ("text that is not a number in column(s): flow_duration, "
                             "flow_bytes_per_s")
    assert row["raw_line"] == b",".join(fields).decode()


def test_ingest_binary_file_is_rejected(tmp_path):
    path = tmp_path / "capture.csv"
    path.write_bytes(bytes(range(128, 256)) * 4 + b"\n")
    with pytest.raises(InputError, match="capture.csv: line 1 has 512 bytes that are not UTF-8"):
        inspect_source(path)


def test_find_csv_files_reads_each_file_once(real_data):
    path = real_data / ML_FILE
    found = find_csv_files([path, path, path.parent])
    assert found == [path.resolve()]


def test_uncommitted_table_folder_is_skipped(spark, tmp_path, real_data, caplog):
    from pea_spark.session import register_tables, table_exists

    config = make_config(tmp_path / "wh")
    (tmp_path / "wh" / config.database / "bronze" / "_delta_log").mkdir(parents=True)
    assert not table_exists(config, "bronze")
    assert register_tables(spark, config) == []
    assert "has no committed version" in caplog.text
    totals = ingest(spark, config, [real_data / ML_FILE])
    assert totals["loaded"] == 9_998
    assert table_exists(config, "bronze")


def test_alias_page_matches_the_alias_table():
    from pea_spark.schema import alias_table_markdown

    page = Path(__file__).resolve().parents[1] / "docs" / "columns.md"
    assert page.read_text(encoding="utf-8") == alias_table_markdown()
