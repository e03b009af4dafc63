"""Ingest quirks of real CICFlowMeter exports, each on a small CSV written by the test."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pea_spark.clean import clean_flows
from pea_spark.ingest import InputError, find_csv_files, ingest, inspect_source
from pea_spark.schema import FEATURES, IDENTIFIERS, map_header
from pea_spark.session import read_table, table_exists
from tests.conftest import ML_FILE, WEB_FILE, make_config, run_pea


def _lines(real_data: Path, name: str, count: int) -> tuple[bytes, list[bytes]]:
    """Header and the first ``count`` data lines of a real file, without line endings."""
    lines = (real_data / name).read_bytes().splitlines()
    return lines[0], lines[1:count + 1]


def _write_csv(path: Path, lines: list[bytes], ending: bytes = b"\n") -> None:
    """Write ``lines`` (header first) to ``path``, each followed by ``ending``."""
    path.write_bytes(ending.join(lines) + ending)


def _audit(spark, config, path: Path):
    audit = read_table(spark, config, "ingest_audit")
    return audit.filter(F.col("source_file") == str(path.resolve())).orderBy("ingested_at")


def test_header_blank_after_comma(spark, tmp_path):
    header = "Flow ID, Source IP, Destination Port, Flow Bytes/s, Label"
    mapping = map_header(header.split(","))
    assert mapping.positions == {"flow_id": 0, "source_ip": 1, "destination_port": 2,
                                 "flow_bytes_per_s": 3, "label": 4}
    assert mapping.unknown == []
    path = tmp_path / "spaced.csv"
    path.write_text(header + "\n10.0.0.1-10.0.0.2-80-5000-6, 10.0.0.1, 80, 1200.5, BENIGN\n",
                    encoding="utf-8")
    config = make_config(tmp_path / "wh")
    assert ingest(spark, config, [path])["loaded"] == 1
    row = read_table(spark, config, "bronze").first()
    assert (row["source_ip"], row["destination_port"], row["flow_bytes_per_s"], row["label"]) == (
        "10.0.0.1", "80", "1200.5", "BENIGN")


def _fwd_header_positions(header: bytes) -> list[int]:
    names = [n.strip() for n in header.decode().split(",")]
    return [i for i, n in enumerate(names) if n == "Fwd Header Length"]


def test_repeated_column_equal_values(spark, tmp_path, real_data, caplog):
    header, rows = _lines(real_data, ML_FILE, 3)
    assert _fwd_header_positions(header) == [34, 55]
    path = tmp_path / "twice.csv"
    _write_csv(path, [header, *rows])
    config = make_config(tmp_path / "wh")
    with caplog.at_level(logging.WARNING, logger="pea_spark.ingest"):
        assert ingest(spark, config, [path])["loaded"] == 3
    assert "'Fwd Header Length' at position 56 repeats the one at position 35" in caplog.text
    audit = _audit(spark, config, path).first()
    assert audit["dropped_columns"] == ["Fwd Header Length"]
    bronze = read_table(spark, config, "bronze").orderBy("line_number").collect()
    expected = [line.decode().split(",")[34].strip() for line in rows]
    assert [r["fwd_header_length"] for r in bronze] == expected


def test_repeated_column_different_values(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 3)
    fields = rows[1].split(b",")
    fields[55] = b"999"
    path = tmp_path / "differ.csv"
    _write_csv(path, [header, rows[0], b",".join(fields), rows[2]])
    config = make_config(tmp_path / "wh")
    with pytest.raises(InputError) as error:
        ingest(spark, config, [path])
    message = str(error.value)
    assert (f"{path}: 1 differing lines, the first is line 3: column 'Fwd Header Length' at "
            f"positions 35 and 56 contains different values: '{fields[34].decode()}' and '999'"
            in message)
    assert "Nothing was written" in message
    assert not table_exists(config, "bronze")
    assert not table_exists(config, "ingest_audit")


def test_partial_row_and_comma_lines(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 2)
    fields = rows[1].split(b",")
    names = [n.strip() for n in header.decode().split(",")]
    fields[names.index("Flow Bytes/s")] = b""
    commas = b"," * (len(names) - 1)
    path = tmp_path / "partial.csv"
    _write_csv(path, [header, rows[0], b",".join(fields), commas, commas, commas], b"\r\n")
    config = make_config(tmp_path / "wh")
    totals = ingest(spark, config, [path])
    assert totals == {"files": 1, "lines_read": 6, "loaded": 2, "quarantined": 0, "skipped": 4,
                      "unchanged": 0}
    audit = _audit(spark, config, path).first()
    assert audit["skip_reasons"] == {"header": 1, "empty line": 3}
    bronze = read_table(spark, config, "bronze")
    partial = bronze.filter(F.col("line_number") == 3)
    assert partial.first()["flow_bytes_per_s"] is None
    assert clean_flows(partial).first()["flow_bytes_per_s"] == 0.0


def test_identifiers_present_and_absent(spark, tmp_path, real_data):
    web_header, web_rows = _lines(real_data, WEB_FILE, 2)
    ml_header, ml_rows = _lines(real_data, ML_FILE, 2)
    _write_csv(tmp_path / "web.csv", [web_header, *web_rows])
    _write_csv(tmp_path / "ml.csv", [ml_header, *ml_rows])
    config = make_config(tmp_path / "wh")
    assert ingest(spark, config, [tmp_path / "web.csv", tmp_path / "ml.csv"])["loaded"] == 4
    bronze = read_table(spark, config, "bronze")
    web = bronze.filter(F.col("source_file").endswith("web.csv")).orderBy("line_number").first()
    ml = bronze.filter(F.col("source_file").endswith("ml.csv")).orderBy("line_number").first()
    web_fields = web_rows[0].decode().split(",")
    assert [web[c] for c in IDENTIFIERS] == [web_fields[i].strip() for i in range(7)]
    assert [ml[c] for c in IDENTIFIERS if c != "destination_port"] == [None] * 6
    assert ml["destination_port"] == ml_rows[0].decode().split(",")[0].strip()
    # Columns are matched by name: Flow Duration is field 8 in one file and field 2 in the other.
    assert web["flow_duration"] == web_fields[7]
    assert ml["flow_duration"] == ml_rows[0].decode().split(",")[1].strip()


def test_bad_rows_quarantined(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 4)
    too_many = rows[1] + b",7,8"
    too_few = b",".join(rows[2].split(b",")[:10])
    text = rows[3].split(b",")
    text[1] = b"twelve"
    path = tmp_path / "bad rows.csv"
    _write_csv(path, [header, rows[0], too_many, too_few, b",".join(text)])
    config = make_config(tmp_path / "wh")
    assert ingest(spark, config, [path])["quarantined"] == 3
    quarantine = read_table(spark, config, "quarantine").orderBy("line_number").collect()
    assert [(q["source_file"], q["line_number"], q["reason"]) for q in quarantine] == [
        (str(path), 3, "expected 79 fields as in the header, found 81"),
        (str(path), 4, "expected 79 fields as in the header, found 10"),
        (str(path), 5, "text that is not a number in column(s): flow_duration"),
    ]
    assert [q["raw_line"] for q in quarantine] == [
        too_many.decode(), too_few.decode(), b",".join(text).decode()]
    audit = _audit(spark, config, path).first()
    assert audit["quarantine_reasons"] == {
        "expected 79 fields as in the header, found 81": 1,
        "expected 79 fields as in the header, found 10": 1,
        "text that is not a number in column(s): flow_duration": 1,
    }


def test_name_with_spaces_and_quotes(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 2)
    path = tmp_path / "Friday 'DDoS' \"capture\" [1].csv"
    _write_csv(path, [header, *rows])
    config = make_config(tmp_path / "wh")
    assert ingest(spark, config, [path])["loaded"] == 2
    # A second run must find the file's earlier rows by name, quotes included.
    _write_csv(path, [header, rows[0]])
    assert ingest(spark, config, [path])["loaded"] == 1
    bronze = read_table(spark, config, "bronze").collect()
    assert [(r["source_file"], r["line_number"]) for r in bronze] == [(str(path), 2)]


def test_empty_and_binary_files(tmp_path, real_data):
    folder = tmp_path / "captures"
    folder.mkdir()
    header, rows = _lines(real_data, ML_FILE, 1)
    _write_csv(folder / "a-good.csv", [header, *rows])
    (folder / "b-empty.csv").write_bytes(b"")
    result = run_pea("--warehouse", str(tmp_path / "wh"), "ingest", "--input", str(folder))
    assert result.returncode == 2
    assert f"{folder / 'b-empty.csv'}: the file is empty" in result.stderr
    assert "Traceback" not in result.stderr
    random_bytes = folder / "b-empty.csv"
    random_bytes.write_bytes(bytes((i * 97 + 13) % 256 for i in range(4096)))
    with pytest.raises(InputError, match="b-empty.csv: line 1 .*not a CSV text file"):
        inspect_source(random_bytes)


def test_lone_carriage_return_line_numbers(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 3)
    broken = rows[1].replace(b",", b",\r", 1)  # a stray CR inside line 3
    path = tmp_path / "cr.csv"
    _write_csv(path, [header, rows[0], broken, rows[2]], b"\r\n")
    config = make_config(tmp_path / "wh")
    totals = ingest(spark, config, [path])
    assert totals["lines_read"] == 4
    assert [r["line_number"] for r in read_table(spark, config, "bronze")
            .orderBy("line_number").collect()] == [2, 4]
    quarantined = read_table(spark, config, "quarantine").first()
    assert quarantined["line_number"] == 3
    assert quarantined["reason"] == "not valid CSV: a carriage return inside the line"


def test_repeated_header_skipped(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 2)
    path = tmp_path / "concatenated.csv"
    _write_csv(path, [header, rows[0], header, rows[1]])
    config = make_config(tmp_path / "wh")
    assert ingest(spark, config, [path])["loaded"] == 2
    assert _audit(spark, config, path).first()["skip_reasons"] == {"header": 1,
                                                                  "repeated header": 1}


def test_changed_file_replaces_own_rows(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 6)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    _write_csv(first, [header, *rows[:3]])
    _write_csv(second, [header, *rows[3:5]])
    config = make_config(tmp_path / "wh")
    ingest(spark, config, [first, second])
    before = {r["line_number"]: r["run_id"] for r in read_table(spark, config, "bronze")
              .filter(F.col("source_file") == str(second)).collect()}
    _write_csv(first, [header, rows[0], rows[5]])
    totals = ingest(spark, config, [first, second])
    assert (totals["loaded"], totals["unchanged"]) == (2, 1)
    bronze = read_table(spark, config, "bronze")
    mine = bronze.filter(F.col("source_file") == str(first)).orderBy("line_number").collect()
    names = [n.strip() for n in header.decode().split(",")]
    port = names.index("Destination Port")
    assert [(r["line_number"], r["destination_port"]) for r in mine] == [
        (2, rows[0].decode().split(",")[port].strip()),
        (3, rows[5].decode().split(",")[port].strip())]
    after = {r["line_number"]: r["run_id"] for r in bronze
             .filter(F.col("source_file") == str(second)).collect()}
    assert after == before
    statuses = [r["status"] for r in _audit(spark, config, first).collect()]
    assert statuses == ["new", "replaced"]


def test_same_and_swapped_contents(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 5)
    first, second = tmp_path / "capture.csv", tmp_path / "capture (copy).csv"
    _write_csv(first, [header, *rows[:2]])
    _write_csv(second, [header, *rows[2:5]])
    config = make_config(tmp_path / "wh")
    assert ingest(spark, config, [first, second])["loaded"] == 5
    # Swapping the two files' contents reloads both, and loses no row.
    first_bytes, second_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(second_bytes)
    second.write_bytes(first_bytes)
    totals = ingest(spark, config, [first, second])
    assert (totals["loaded"], totals["unchanged"]) == (5, 0)
    counts = {Path(r["source_file"]).name: r["count"] for r in
              read_table(spark, config, "bronze").groupBy("source_file").count().collect()}
    assert counts == {"capture.csv": 3, "capture (copy).csv": 2}
    # Equal content under two names is loaded under both; clean keeps one copy of each row.
    second.write_bytes(second_bytes)
    assert ingest(spark, config, [first, second])["loaded"] == 3
    assert read_table(spark, config, "bronze").count() == 6
    assert [r["status"] for r in _audit(spark, config, second).collect()] == [
        "new", "replaced", "replaced"]


def test_python_only_numbers_quarantined(spark, tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 1)
    values = ["+nan", "-nan", "\u0661\u0662\u0663", "\uff11\uff12", "1_000", "0x10"]
    lines = []
    for value in values:
        fields = rows[0].decode().split(",")
        fields[1] = value  # Flow Duration
        lines.append(",".join(fields).encode())
    fields = rows[0].decode().split(",")
    fields[1], fields[2] = "1e999", "-Infinity"
    lines.append(",".join(fields).encode())
    path = tmp_path / "numbers.csv"
    _write_csv(path, [header, *lines])
    config = make_config(tmp_path / "wh")
    totals = ingest(spark, config, [path])
    assert (totals["loaded"], totals["quarantined"]) == (1, len(values))
    silver = clean_flows(read_table(spark, config, "bronze")).first()
    assert (silver["flow_duration"], silver["total_fwd_packets"]) == (0.0, 0.0)


def test_cr_endings_and_unreadable_names(tmp_path, real_data):
    header, rows = _lines(real_data, ML_FILE, 2)
    path = tmp_path / "classic-mac.csv"
    _write_csv(path, [header, *rows], b"\r")
    with pytest.raises(InputError, match="classic-mac.csv: line 1 contains a carriage return"):
        inspect_source(path)
    for name in ("com,ma.csv", "col:on.csv", "_hidden.csv"):
        odd = tmp_path / name
        _write_csv(odd, [header, *rows])
        with pytest.raises(InputError, match="rename the file"):
            find_csv_files([odd])
        odd.unlink()
    (tmp_path / ".hidden.csv").write_bytes(header + b"\n")
    assert find_csv_files([tmp_path]) == [path.resolve()]


def test_silver_features_across_dialects(spark, tmp_path, real_data):
    """The same flow written in the 2021 and the 2018 spellings gives one set of features."""
    header, rows = _lines(real_data, ML_FILE, 1)
    source = inspect_source(real_data / ML_FILE)
    values = dict(zip([n.strip() for n in header.decode().split(",")],
                      rows[0].decode().split(","), strict=True))
    from pea_spark.schema import CSE_CIC_IDS2018_NAMES, DISPLAY_NAMES

    renamed = {original: alias for alias, original in CSE_CIC_IDS2018_NAMES.items()}
    names = [renamed.get(DISPLAY_NAMES[c], DISPLAY_NAMES[c]) for c in FEATURES] + ["Label"]
    line = [values[DISPLAY_NAMES[c]] for c in FEATURES] + [values["Label"]]
    (tmp_path / "ids2018.csv").write_text(",".join(names) + "\n" + ",".join(line) + "\n",
                                          encoding="utf-8")
    assert source.dialect == "cicids2017-machinelearningcve"
    assert inspect_source(tmp_path / "ids2018.csv").dialect == "cse-cic-ids2018"
    _write_csv(tmp_path / "ml.csv", [header, *rows])
    config = make_config(tmp_path / "wh")
    ingest(spark, config, [tmp_path / "ids2018.csv", tmp_path / "ml.csv"])
    silver = clean_flows(read_table(spark, config, "bronze")).orderBy("source_file").collect()
    assert [silver[0][c] for c in FEATURES] == [silver[1][c] for c in FEATURES]
