"""Cleaning, selection, split and SMOTE quirks of real CICFlowMeter exports.

Each fixture writes a small CSV with the header of the real MachineLearningCVE
file and real rows from it. Rows are changed only where a case needs it (a
label, a rate, a placeholder). The tests run the stages on it and check exact
values.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql.types import DataType
from pyspark.testing import assertDataFrameEqual

from pea_spark.clean import (
    LABEL_CONFLICT_SCHEMA,
    SILVER_COLUMNS,
    clean,
    clean_flows,
    flag_training_rows,
    label_conflicts,
    label_votes,
)
from pea_spark.config import PeaConfig
from pea_spark.ingest import ingest
from pea_spark.schema import FEATURES, IDENTIFIERS
from pea_spark.score import load_flows
from pea_spark.selection import CONSTANT, select, selected_features
from pea_spark.session import read_table
from pea_spark.split import labelled_flows, split
from pea_spark.train import balance_with_smote, fit_transform, scale_rows, training_rows
from tests.conftest import ML_FILE, make_config

# Lines of the real MachineLearningCVE file with zero-duration flows. Line 67 has
# Flow Bytes/s and Flow Packets/s = Infinity, and line 6798 has NaN and Infinity.
# The tests write line 1892 with -Infinity in both, a value the real file lacks.
INFINITY_LINE, NAN_LINE, ZERO_DURATION_LINE = 67, 6798, 1892
BULK_RATE_FEATURES = ["fwd_avg_bytes_per_bulk", "fwd_avg_packets_per_bulk", "fwd_avg_bulk_rate",
                      "bwd_avg_bytes_per_bulk", "bwd_avg_packets_per_bulk", "bwd_avg_bulk_rate"]
BRUTE_FORCE = "Web Attack - Brute Force"
SMOTE_K = 5
NEGATIVE_INFINITY = {"Flow Bytes/s": "-Infinity", "Flow Packets/s": "-Infinity"}


@cache
def _real_lines(path: Path) -> tuple[list[str], dict[int, list[str]]]:
    """Header fields and the data lines of a real file as fields, by line number."""
    lines = path.read_bytes().decode("utf-8").splitlines()
    return lines[0].split(","), {n: line.split(",") for n, line in enumerate(lines[1:], start=2)}


def _position(header: list[str], name: str) -> int:
    return next(i for i, h in enumerate(header) if h.strip() == name)


def _real_row(real_data: Path, line: int, changes: dict[str, str] | None = None) -> list[str]:
    """Fields of a real line, with the values of some columns (by header name) replaced."""
    header, rows = _real_lines(real_data / ML_FILE)
    fields = list(rows[line])
    for name, value in (changes or {}).items():
        fields[_position(header, name)] = value
    return fields


def _distinct_lines(real_data: Path, count: int, skip: int = 0) -> list[int]:
    """Line numbers of real rows with finite rates and pairwise different feature values."""
    _, rows = _real_lines(real_data / ML_FILE)
    seen, found = set(), []
    for number, fields in rows.items():
        features = tuple(fields[1:-1])
        if features in seen or any(v in ("Infinity", "NaN") for v in features):
            continue
        seen.add(features)
        found.append(number)
    return found[skip:skip + count]


def _write_csv(path: Path, real_data: Path, rows: list[tuple[list[str], bytes]]) -> Path:
    """Write the real header and ``(fields, label)`` rows, the label given as raw bytes."""
    header_line = (real_data / ML_FILE).read_bytes().split(b"\r\n", 1)[0]
    lines = [header_line]
    for fields, label in rows:
        lines.append(",".join(fields[:-1]).encode("utf-8") + b"," + label)
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


class LogCollector(logging.Handler):
    """Collect pea_spark log records at INFO and above inside a ``with`` block.

    pytest's caplog is function-scoped, so module-scoped fixtures use this.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger("pea_spark")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> LogCollector:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING]


@dataclass
class StageRun:
    """What a module fixture ran: its configuration, stage results and log records."""

    config: PeaConfig
    counts: dict[str, int]
    logs: LogCollector
    path: Path | None = None
    silver: dict[int, Row] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)
    chosen: list[str] = field(default_factory=list)


# Non-finite rates, dash variants of one label, -1 placeholders and an empty label.
@pytest.fixture(scope="module")
def policy(spark, real_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quirks_policy")
    lines = _distinct_lines(real_data, 3)
    # Placeholder columns get set values, so that only the -1 written here is counted.
    keep = {"Init_Win_bytes_forward": "8192", "Init_Win_bytes_backward": "0", "Flow IAT Min": "3"}
    rows = [
        (_real_row(real_data, INFINITY_LINE, {**keep, "Init_Win_bytes_forward": "-1"}),
         b"BENIGN"),
        (_real_row(real_data, NAN_LINE, keep), b"BENIGN"),
        (_real_row(real_data, ZERO_DURATION_LINE, {**keep, **NEGATIVE_INFINITY}), b"BENIGN"),
        (_real_row(real_data, lines[0], {**keep, "Init_Win_bytes_forward": "-1"}),
         b"Web Attack \x96 Brute Force"),
        (_real_row(real_data, lines[1], {**keep, "Flow IAT Min": "-1"}),
         "Web Attack – Brute Force".encode()),
        (_real_row(real_data, lines[2], keep), "Web Attack ï¿½ Brute Force".encode()),
        (_real_row(real_data, lines[0], {**keep, "Init_Win_bytes_backward": "-1",
                                         "Flow Duration": "5"}), b""),
    ]
    path = _write_csv(folder / "policy.csv", real_data, rows)
    config = make_config(folder / "wh")
    ingest(spark, config, [path])
    with LogCollector() as logs:
        counts = clean(spark, config, run_id="policy")
    silver = {r["line_number"]: r for r in read_table(spark, config, "silver").collect()}
    return StageRun(config, counts, logs, path=path, silver=silver)


def test_clean_non_finite_rates_become_zero(policy):
    silver = policy.silver
    for line in (2, 3, 4):
        assert silver[line]["flow_duration"] == 0.0
        assert silver[line]["flow_bytes_per_s"] == 0.0
        assert silver[line]["flow_packets_per_s"] == 0.0
    assert silver[2]["total_length_of_fwd_packets"] == 12.0  # real line 67, unchanged
    assert silver[4]["fwd_header_length"] == 20.0  # real line 1892, unchanged


def test_clean_report_counts_non_finite_values(spark, policy):
    config = policy.config
    report = {r["feature"]: r for r in read_table(spark, config, "clean_report").collect()}
    assert report["flow_bytes_per_s"]["non_finite_to_zero"] == 3
    assert report["flow_packets_per_s"]["non_finite_to_zero"] == 3
    others = [f for f in FEATURES if f not in ("flow_bytes_per_s", "flow_packets_per_s")]
    assert sum(report[f]["non_finite_to_zero"] for f in others) == 0


@pytest.mark.parametrize(("raw", "expected"), [
    ("Infinity", 0.0), ("-Infinity", 0.0), ("NaN", 0.0), ("inf", 0.0), ("1e400", 0.0),
    ("-1e400", 0.0), (None, 0.0), ("-1", -1.0), ("3.5", 3.5), ("-0.25", -0.25),
], ids=["infinity", "minus_infinity", "nan", "inf", "overflow", "minus_overflow", "empty",
        "placeholder", "number", "negative"])
def test_clean_flows_feature_value(spark, raw, expected):
    columns = ["source_file", "line_number", *IDENTIFIERS, *FEATURES, "label"]
    row = ["values.csv", 2, *[None] * len(IDENTIFIERS), *[raw] * len(FEATURES), "BENIGN"]
    schema = ", ".join(f"{c} {'long' if c == 'line_number' else 'string'}" for c in columns)
    cleaned = clean_flows(spark.createDataFrame([row], schema)).first()
    assert [cleaned[f] for f in FEATURES] == [expected] * len(FEATURES)


def test_score_load_flows_same_policy(spark, policy):
    config = policy.config
    path = policy.path
    scored = load_flows(spark, config, [path])
    assert scored.count() == 7
    rates = {r["line_number"]: (r["flow_bytes_per_s"], r["flow_packets_per_s"])
             for r in scored.collect()}
    assert rates[2] == rates[3] == rates[4] == (0.0, 0.0)
    columns = ["flow_key", *FEATURES, "label", "is_attack"]
    assertDataFrameEqual(scored.select(*columns),
                         read_table(spark, config, "silver").select(*columns))


def test_clean_dash_variants_become_one_class(spark, policy):
    config = policy.config
    silver = policy.silver
    assert [silver[line]["label"] for line in (5, 6, 7)] == [BRUTE_FORCE] * 3
    assert [silver[line]["is_attack"] for line in (5, 6, 7)] == [1, 1, 1]
    attacks = read_table(spark, config, "silver").filter(F.col("is_attack") == 1)
    assert [r["label"] for r in attacks.select("label").distinct().collect()] == [BRUTE_FORCE]


def test_clean_placeholders_kept_and_counted(spark, policy):
    config = policy.config
    silver = policy.silver
    report = {r["feature"]: r["placeholder_minus_one"]
              for r in read_table(spark, config, "clean_report").collect()}
    assert report["init_win_bytes_forward"] == 2
    assert report["init_win_bytes_backward"] == 1
    assert report["flow_iat_min"] == 1
    assert silver[2]["init_win_bytes_forward"] == -1.0
    assert silver[5]["init_win_bytes_forward"] == -1.0
    assert silver[6]["flow_iat_min"] == -1.0
    assert silver[8]["init_win_bytes_backward"] == -1.0


def test_clean_excludes_unlabelled_row(spark, policy):
    config = policy.config
    counts = policy.counts
    silver = policy.silver
    logs = policy.logs
    assert silver[8]["label"] is None
    assert silver[8]["is_attack"] is None
    assert silver[8]["training_row"] is False
    assert counts["unlabelled"] == 1
    assert counts["training"] == 6
    summary = read_table(spark, config, "clean_summary").first()
    assert summary["run_id"] == "policy"
    assert summary["unlabelled_rows"] == 1
    assert summary["training_rows"] == 6
    assert summary["silver_rows"] == 7
    assert labelled_flows(spark, config).filter(F.col("line_number") == 8).count() == 0
    assert read_table(spark, config, "label_conflicts").count() == 0
    assert ("clean: 1 silver rows have no label; they stay in silver for scoring and are not "
            "used for training") in logs.warnings()


# Training set: 24 BENIGN and 10 DDoS feature vectors, one BENIGN row three times,
# one DDoS row twice plus once as BENIGN, an Infiltration class of 1 row and a
# Heartbleed class of 3 rows.
@pytest.fixture(scope="module")
def training(spark, real_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quirks_training")
    lines = _distinct_lines(real_data, 35)
    benign = [(_real_row(real_data, n), b"BENIGN") for n in lines[:20]]
    benign += [(_real_row(real_data, INFINITY_LINE), b"BENIGN"),
               (_real_row(real_data, NAN_LINE), b"BENIGN"),
               (_real_row(real_data, ZERO_DURATION_LINE, NEGATIVE_INFINITY), b"BENIGN")]
    repeated = [(_real_row(real_data, lines[20]), b"BENIGN")] * 3
    conflict = [(_real_row(real_data, lines[21]), b"DDoS")] * 2
    conflict.append((_real_row(real_data, lines[21]), b"BENIGN"))
    ddos = [(_real_row(real_data, n), b"DDoS") for n in lines[22:31]]
    small = [(_real_row(real_data, lines[31]), b"Infiltration")]
    small += [(_real_row(real_data, n), b"Heartbleed") for n in lines[32:35]]
    path = _write_csv(folder / "training.csv", real_data,
                      benign + repeated + conflict + ddos + small)
    config = make_config(folder / "wh", "select.top_k=5", f"train.smote_k={SMOTE_K}")
    ingest(spark, config, [path])
    with LogCollector() as logs:
        counts = clean(spark, config, run_id="training")
        splits = split(spark, config)
        chosen = select(spark, config)
    return StageRun(config, counts, logs, split_counts=splits, chosen=chosen)


def test_clean_counts_duplicates_and_conflicts(training):
    counts = training.counts
    logs = training.logs
    assert counts == {"bronze": 42, "silver": 39, "duplicates": 3, "unlabelled": 0,
                      "training": 38, "training_attacks": 14, "label_conflicts": 1,
                      "conflict_rows_dropped": 1}
    assert "clean: 1 feature vectors carry more than one label" in " ".join(logs.warnings())


def test_clean_keeps_one_copy_with_copies(spark, training):
    config = training.config
    silver = read_table(spark, config, "silver")
    assert silver.columns == SILVER_COLUMNS
    copies = {(r["line_number"], r["label"]): r["copies"]
              for r in silver.filter(F.col("copies") > 1).collect()}
    assert copies == {(25, "BENIGN"): 3, (28, "DDoS"): 2}
    assert silver.filter(F.col("line_number").isin(26, 27, 29)).count() == 0


def test_clean_resolves_conflict_by_copies(spark, training):
    config = training.config
    table = read_table(spark, config, "label_conflicts")
    expected = DataType.fromDDL(LABEL_CONFLICT_SCHEMA)
    assert table.schema.simpleString() == expected.simpleString()
    rows = table.collect()
    assert len(rows) == 1
    conflict = rows[0]
    assert conflict["chosen_label"] == "DDoS"
    assert conflict["chosen_is_attack"] == 1
    assert [(v["label"], v["copies"], v["line_number"]) for v in conflict["labels"]] == [
        ("DDoS", 2, 28), ("BENIGN", 1, 30)]
    assert (conflict["line_number"], conflict["copies"], conflict["dropped_copies"]) == (28, 3, 1)
    silver = read_table(spark, config, "silver")
    kept = silver.filter(F.col("flow_key") == conflict["kept_flow_key"]).first()
    assert (kept["line_number"], kept["label"], kept["training_row"]) == (28, "DDoS", True)
    dropped = silver.filter(F.col("line_number") == 30).first()
    assert (dropped["label"], dropped["training_row"]) == ("BENIGN", False)


def test_split_vector_on_one_side(spark, training):
    config = training.config
    splits = read_table(spark, config, "splits")
    assert splits.count() == 38
    vectors = labelled_flows(spark, config).select("flow_key", *FEATURES).join(
        splits, "flow_key")
    sides = vectors.groupBy(*FEATURES).agg(F.countDistinct("split").alias("sides"),
                                           F.count("*").alias("rows"))
    assert sides.filter((F.col("sides") > 1) | (F.col("rows") > 1)).count() == 0


def test_split_stratifies_per_label(spark, training):
    config = training.config
    counts = training.split_counts
    logs = training.logs
    per_class = {(r["label"], r["split"]): r["count"] for r in read_table(
        spark, config, "splits").groupBy("label", "split").count().collect()}
    assert per_class == {("BENIGN", "test"): 5, ("BENIGN", "train"): 19,
                         ("DDoS", "test"): 2, ("DDoS", "train"): 8,
                         ("Heartbleed", "test"): 1, ("Heartbleed", "train"): 2,
                         ("Infiltration", "train"): 1}
    assert counts == {"test_benign": 5, "train_benign": 19, "test_attack": 3,
                      "train_attack": 11}
    untested = [m for m in logs.warnings() if m.startswith("split:")]
    assert untested == ["split: class 'Infiltration' has 1 rows, too few for a test row at "
                        "test_fraction 0.20; all go to train, so its recall cannot be measured"]


def test_select_drops_constant_bulk_rates(spark, training):
    config = training.config
    chosen = training.chosen
    logs = training.logs
    ranking = {r["feature"]: r for r in read_table(spark, config, "feature_ranking").collect()}
    for feature in BULK_RATE_FEATURES:
        assert ranking[feature]["dropped_reason"] == CONSTANT, feature
        assert ranking[feature]["selected"] is False, feature
        assert ranking[feature]["vif"] is None, feature
    warning = next(m for m in logs.warnings() if m.startswith("select: ") and "constant" in m)
    for feature in BULK_RATE_FEATURES:
        assert feature in warning, feature
    assert not set(chosen) & set(BULK_RATE_FEATURES)
    assert selected_features(spark, config) == chosen
    assert all(ranking[f]["dropped_reason"] is None for f in chosen)


def test_select_statistics_are_finite(spark, training):
    config = training.config
    chosen = training.chosen
    ranking = read_table(spark, config, "feature_ranking").collect()
    assert len(ranking) == len(FEATURES)
    assert all(math.isfinite(r["information_gain"]) for r in ranking)
    assert all(math.isfinite(r["vif"]) for r in ranking if r["selected"])
    assert len(chosen) >= 1


def test_scaled_training_input_is_finite(spark, training):
    config = training.config
    chosen = training.chosen
    features = list(dict.fromkeys([*chosen, "flow_bytes_per_s", "flow_packets_per_s"]))
    rows = training_rows(spark, config, features)
    transform = fit_transform(rows, features, config.train.quantiles)
    raw = rows.select(*features).toPandas().to_numpy(np.float64)
    assert np.isfinite(raw).all()
    assert np.isfinite(transform.apply(raw)).all()
    scaled = np.stack(scale_rows(rows, features, transform).toPandas()["features"])
    assert scaled.shape == (30, len(features))
    assert np.isfinite(scaled).all()


def test_smote_warns_small_attack_classes(spark, training, caplog):
    config = training.config
    chosen = training.chosen
    rows = training_rows(spark, config, chosen)
    transform = fit_transform(rows, chosen, config.train.quantiles)
    with caplog.at_level(logging.WARNING, logger="pea_spark"):
        balanced, small = balance_with_smote(rows, chosen, transform, config)
        labels = balanced.toPandas()["label"].value_counts().to_dict()
    assert small == {"Heartbleed": 2, "Infiltration": 1}
    assert labels == {0.0: 19, 1.0: 19}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for label, rows_left in small.items():
        assert (f"train: attack class '{label}' has {rows_left} training rows, fewer than "
                f"smote_k + 1 = {SMOTE_K + 1}") in " ".join(messages)
    assert not any("'DDoS'" in m for m in messages)


def test_smote_reduces_k_small_minority(spark, training, caplog):
    config = training.config
    chosen = training.chosen
    rows = training_rows(spark, config, chosen).filter(F.col("label") != "DDoS")
    transform = fit_transform(rows, chosen, config.train.quantiles)
    with caplog.at_level(logging.WARNING, logger="pea_spark"):
        balanced, small = balance_with_smote(rows, chosen, transform, config)
        frame = balanced.toPandas()
    assert small == {"Heartbleed": 2, "Infiltration": 1}
    assert frame["label"].value_counts().to_dict() == {0.0: 19, 1.0: 19}
    assert np.isfinite(np.stack(frame["features"])).all()
    assert ("train: the smaller class (is_attack=1) has 3 training rows, so SMOTE uses at most "
            "2 neighbours instead of smote_k = 5 (in 1 partitions)") in caplog.text


# Tie rules of the label vote, on flows built directly: one feature vector per case.
VOTE_CASES = {
    # case: ([(label, copies, line_number)], chosen label, kept line, dropped copies)
    "most_copies_beats_attack": ([("BENIGN", 3, 10), ("DDoS", 2, 11)], "BENIGN", 10, 2),
    "attack_wins_tie": ([("BENIGN", 1, 20), ("DDoS", 1, 21)], "DDoS", 21, 1),
    "first_label_wins_attack_tie": ([("PortScan", 1, 30), ("DDoS", 1, 31)], "DDoS", 31, 1),
    "copies_add_over_rows": ([("BENIGN", 1, 40), ("DDoS", 1, 45), ("DDoS", 1, 42)],
                             "DDoS", 42, 1),
    "single_label_no_conflict": ([("DDoS", 4, 50)], "DDoS", 50, 0),
}
VOTE_SCHEMA = ", ".join(["flow_key long", "source_file string", "line_number long",
                         *[f"{c} string" for c in IDENTIFIERS], *[f"{c} double" for c in FEATURES],
                         "label string", "is_attack int", "copies long"])


@pytest.fixture(scope="module")
def votes(spark):
    records = []
    for case_number, (copies_by_label, *_) in enumerate(VOTE_CASES.values()):
        for label, copies, line in copies_by_label:
            records.append((line, "votes.csv", line, *[None] * len(IDENTIFIERS),
                            *[float(case_number)] * len(FEATURES), label,
                            int(label != "BENIGN"), copies))
    flows = spark.createDataFrame(records, VOTE_SCHEMA).repartition(3)
    counted = label_votes(flows).cache()
    flagged = {r["line_number"]: r["training_row"]
               for r in flag_training_rows(flows, counted).collect()}
    conflicts = {r["line_number"]: r for r in label_conflicts(counted, "votes").collect()}
    counted.unpersist()
    return flagged, conflicts


@pytest.mark.parametrize("case", list(VOTE_CASES), ids=list(VOTE_CASES))
def test_label_votes_rule(votes, case):
    flagged, conflicts = votes
    copies_by_label, label, kept_line, dropped = VOTE_CASES[case]
    lines = [line for _, _, line in copies_by_label]
    assert {line: flagged[line] for line in lines} == {line: line == kept_line for line in lines}
    first_line = min(lines)
    if dropped:
        assert conflicts[first_line]["chosen_label"] == label
        assert conflicts[first_line]["dropped_copies"] == dropped
        assert conflicts[first_line]["labels"][0]["line_number"] == kept_line
    else:
        assert first_line not in conflicts
