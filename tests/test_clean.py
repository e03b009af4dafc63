"""Clean: exact cleaned values of real rows, labels, duplicates and rejected text."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from pea_spark.clean import clean, clean_flows
from pea_spark.ingest import ingest, read_flows
from pea_spark.schema import FEATURES
from pea_spark.session import read_table
from tests.conftest import ML_FILE, make_config


@pytest.fixture(scope="module")
def cleaned(spark, real_data, tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("wh_clean"))
    ingest(spark, config, [real_data])
    counts = clean(spark, config, run_id="test-run")
    return config, counts


def test_clean_real_counts(cleaned):
    _, counts = cleaned
    assert counts == {"bronze": 23_576, "silver": 22_488, "duplicates": 1_088, "unlabelled": 0,
                      "training": 21_417, "training_attacks": 6_474, "label_conflicts": 738,
                      "conflict_rows_dropped": 772}


def test_clean_real_training_labels(spark, cleaned):
    config, _ = cleaned
    training = read_table(spark, config, "silver").filter("training_row")
    labels = {r["label"]: r["count"] for r in training.groupBy("label").count().collect()}
    # The grouped sample repeats flows of the web attack file under the coarser
    # label WebAttack; each such tie keeps the finer label, which sorts first.
    assert labels == {"BENIGN": 14_943, "Bot": 1_441, "BruteForce": 436, "DoS": 850,
                      "Infiltration": 36, "PortScan": 163, "Web Attack - Brute Force": 1_470,
                      "Web Attack - Sql Injection": 21, "Web Attack - XSS": 652,
                      "WebAttack": 1_405}


def test_clean_real_label_conflicts(spark, cleaned):
    config, _ = cleaned
    conflicts = read_table(spark, config, "label_conflicts")
    pairs = {r["pair"]: r["count"] for r in conflicts.groupBy(
        F.array_join(F.transform("labels", lambda v: v["label"]), " | ").alias("pair"))
        .count().collect()}
    assert pairs == {"Web Attack - Brute Force | WebAttack": 507,
                     "Web Attack - XSS | WebAttack": 225,
                     "Web Attack - Sql Injection | WebAttack": 6}
    assert conflicts.filter(F.col("chosen_is_attack") != 1).count() == 0


def test_clean_real_labels(spark, cleaned):
    config, _ = cleaned
    silver = read_table(spark, config, "silver")
    labels = {(r["label"], r["is_attack"]): r["count"]
              for r in silver.groupBy("label", "is_attack").count().collect()}
    assert labels[("BENIGN", 0)] == 15_239
    assert labels[("Web Attack - XSS", 1)] == 652
    assert labels[("Web Attack - Brute Force", 1)] == 1_507
    assert labels[("Web Attack - Sql Injection", 1)] == 21
    assert sum(v for (label, _), v in labels.items() if label != "BENIGN") == 7_249
    assert silver.filter(F.col("is_attack").isNull()).count() == 0


def test_clean_zero_duration_row_exact_values(spark, cleaned, real_data):
    config, _ = cleaned
    silver = read_table(spark, config, "silver")
    path = str((real_data / ML_FILE).resolve())
    row = silver.filter((F.col("source_file") == path) & (F.col("line_number") == 67)).first()
    assert row["flow_duration"] == 0.0
    assert row["flow_bytes_per_s"] == 0.0  # was Infinity
    assert row["flow_packets_per_s"] == 0.0  # was Infinity
    assert row["total_length_of_fwd_packets"] == 12.0
    assert row["fwd_packet_length_mean"] == 6.0
    assert row["destination_port"] == "55043"
    assert row["is_attack"] == 0


def test_clean_regular_row_exact_values(spark, cleaned, real_data):
    config, _ = cleaned
    silver = read_table(spark, config, "silver")
    path = str((real_data / ML_FILE).resolve())
    row = silver.filter((F.col("source_file") == path) & (F.col("line_number") == 2)).first()
    assert row["flow_duration"] == 3.0
    assert row["flow_bytes_per_s"] == 4_000_000.0
    assert row["flow_packets_per_s"] == pytest.approx(666_666.6667, abs=1e-4)


def test_clean_no_non_finite_values(spark, cleaned):
    config, _ = cleaned
    silver = read_table(spark, config, "silver")
    bad = silver.select([F.sum((F.isnan(c) | F.col(c).isNull() | (F.abs(c) == math.inf))
                               .cast("int")).alias(c) for c in FEATURES]).first()
    assert all(bad[c] == 0 for c in FEATURES)


def test_clean_report_counts_policy(spark, cleaned):
    config, _ = cleaned
    report = {r["feature"]: r for r in read_table(spark, config, "clean_report")
              .filter(F.col("run_id") == "test-run").collect()}
    assert report["flow_bytes_per_s"]["non_finite_to_zero"] == 17
    assert report["flow_packets_per_s"]["non_finite_to_zero"] == 17
    assert report["init_win_bytes_forward"]["placeholder_minus_one"] == 7_215
    assert report["init_win_bytes_backward"]["placeholder_minus_one"] == 9_558
    assert report["flow_iat_min"]["placeholder_minus_one"] == 18


def test_clean_unifies_dash_encodings(spark, tmp_path, real_data):
    lines = (real_data / ML_FILE).read_bytes().splitlines()
    header, row = lines[0], lines[1].rsplit(b",", 1)[0]
    labels = [b" Web Attack \x96 Brute Force", "Web Attack – Brute Force".encode(),
              "Web Attack ï¿½ Brute Force".encode(), b"benign "]
    path = tmp_path / "dashes.csv"
    path.write_bytes(b"\r\n".join([header] + [row + b"," + label for label in labels]) + b"\r\n")
    parsed = read_flows(spark, [path]).filter(F.col("status") == "loaded")
    flows = clean_flows(parsed.drop("status", "reason", "raw_line"))
    got = [r["label"] for r in flows.orderBy("line_number").collect()]
    assert got == ["Web Attack - Brute Force"] * 3 + ["BENIGN"]


