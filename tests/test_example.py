"""Tests for the synthetic CICIDS2017-style example archive."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from pea_spark import example
from pea_spark.example import write_example_archive

# First line of the CICIDS2017 MachineLearningCVE CSV files, written out here
# so that the test does not trust the module's own constant.
EXPECTED_HEADER_LINE = (
    " Destination Port, Flow Duration, Total Fwd Packets, Total Backward Packets,"
    "Total Length of Fwd Packets, Total Length of Bwd Packets, Fwd Packet Length Max,"
    " Fwd Packet Length Min, Fwd Packet Length Mean, Fwd Packet Length Std,"
    "Bwd Packet Length Max, Bwd Packet Length Min, Bwd Packet Length Mean,"
    " Bwd Packet Length Std,Flow Bytes/s, Flow Packets/s, Flow IAT Mean, Flow IAT Std,"
    " Flow IAT Max, Flow IAT Min,Fwd IAT Total, Fwd IAT Mean, Fwd IAT Std, Fwd IAT Max,"
    " Fwd IAT Min,Bwd IAT Total, Bwd IAT Mean, Bwd IAT Std, Bwd IAT Max, Bwd IAT Min,"
    "Fwd PSH Flags, Bwd PSH Flags, Fwd URG Flags, Bwd URG Flags, Fwd Header Length,"
    " Bwd Header Length,Fwd Packets/s, Bwd Packets/s, Min Packet Length, Max Packet Length,"
    " Packet Length Mean, Packet Length Std, Packet Length Variance,FIN Flag Count,"
    " SYN Flag Count, RST Flag Count, PSH Flag Count, ACK Flag Count, URG Flag Count,"
    " CWE Flag Count, ECE Flag Count, Down/Up Ratio, Average Packet Size,"
    " Avg Fwd Segment Size, Avg Bwd Segment Size, Fwd Header Length,Fwd Avg Bytes/Bulk,"
    " Fwd Avg Packets/Bulk, Fwd Avg Bulk Rate, Bwd Avg Bytes/Bulk, Bwd Avg Packets/Bulk,"
    "Bwd Avg Bulk Rate,Subflow Fwd Packets, Subflow Fwd Bytes, Subflow Bwd Packets,"
    " Subflow Bwd Bytes,Init_Win_bytes_forward, Init_Win_bytes_backward, act_data_pkt_fwd,"
    " min_seg_size_forward,Active Mean, Active Std, Active Max, Active Min,Idle Mean,"
    " Idle Std, Idle Max, Idle Min, Label"
)
BENIGN = "BENIGN"
WEB_BRUTE_FORCE = "Web Attack \u2013 Brute Force"
DEFAULT_ROWS = 6000
BULK_COLUMNS = [
    "Fwd Avg Bytes/Bulk",
    " Fwd Avg Packets/Bulk",
    " Fwd Avg Bulk Rate",
    " Bwd Avg Bytes/Bulk",
    " Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate",
]
INTEGER_COLUMNS = [
    " Destination Port",
    " Flow Duration",
    " Total Fwd Packets",
    " Total Backward Packets",
    "Total Length of Fwd Packets",
    " Total Length of Bwd Packets",
    " Fwd Packet Length Max",
    " Fwd Packet Length Min",
    " Flow IAT Max",
    " Flow IAT Min",
    "Fwd IAT Total",
    " Fwd Header Length",
    " Min Packet Length",
    " SYN Flag Count",
    "Init_Win_bytes_forward",
    " Init_Win_bytes_backward",
    " act_data_pkt_fwd",
]
FLOAT_COLUMNS = [
    " Fwd Packet Length Mean",
    " Fwd Packet Length Std",
    "Flow Bytes/s",
    " Flow Packets/s",
    " Flow IAT Mean",
    "Fwd Packets/s",
    " Packet Length Variance",
]
# (max, mean, min) column triples that must be ordered max >= mean >= min.
STAT_GROUPS = [
    (" Fwd Packet Length Max", " Fwd Packet Length Mean", " Fwd Packet Length Min"),
    ("Bwd Packet Length Max", " Bwd Packet Length Mean", " Bwd Packet Length Min"),
    (" Flow IAT Max", " Flow IAT Mean", " Flow IAT Min"),
    (" Fwd IAT Max", " Fwd IAT Mean", " Fwd IAT Min"),
    (" Bwd IAT Max", " Bwd IAT Mean", " Bwd IAT Min"),
    (" Active Max", "Active Mean", " Active Min"),
    (" Idle Max", "Idle Mean", " Idle Min"),
    (" Max Packet Length", " Packet Length Mean", " Min Packet Length"),
]
# (packet count, total length, mean length) column triples of each direction.
LENGTH_GROUPS = [
    (" Total Fwd Packets", "Total Length of Fwd Packets", " Fwd Packet Length Mean"),
    (" Total Backward Packets", " Total Length of Bwd Packets", " Bwd Packet Length Mean"),
]


def _read_raw(path: Path) -> pd.DataFrame:
    """Read a CSV with every cell as its literal string."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _numeric(raw: pd.DataFrame) -> pd.DataFrame:
    """Convert every column except the label to float, keeping inf and NaN."""
    return raw.drop(columns=[" Label"]).astype(np.float64)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_example_archive(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="module")
def raw(archive: list[Path]) -> pd.DataFrame:
    return pd.concat([_read_raw(path) for path in archive], ignore_index=True)


@pytest.fixture(scope="module")
def numeric(raw: pd.DataFrame) -> pd.DataFrame:
    return _numeric(raw)


def test_archive_file_names(archive: list[Path]) -> None:
    assert [path.name for path in archive] == [
        "example-monday-benign.csv",
        "example-friday-mixed.csv",
    ]
    for path in archive:
        assert path.is_file()


def test_header_matches_cicids2017(archive: list[Path]) -> None:
    names = EXPECTED_HEADER_LINE.split(",")
    assert len(names) == 79
    assert names.count(" Fwd Header Length") == 2
    assert example.HEADER == tuple(names)
    for path in archive:
        first_line = path.read_bytes().split(b"\r\n", 1)[0]
        assert first_line.decode("utf-8") == EXPECTED_HEADER_LINE


def test_line_endings_are_crlf(archive: list[Path]) -> None:
    for path in archive:
        data = path.read_bytes()
        assert data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n")
        assert data.count(b"\r") == data.count(b"\r\n")


def test_default_row_counts(archive: list[Path]) -> None:
    monday, friday = (len(_read_raw(path)) for path in archive)
    assert monday == 1800
    assert friday == 4200
    assert monday + friday == DEFAULT_ROWS


@pytest.mark.parametrize("rows", [example.MIN_ROWS, 333, 1001])
def test_row_counts_sum_to_rows(tmp_path: Path, rows: int) -> None:
    paths = write_example_archive(tmp_path, rows=rows, seed=3)
    frames = [_read_raw(path) for path in paths]
    assert sum(len(frame) for frame in frames) == rows
    assert set(frames[1][" Label"]) == set(example.LABELS)


def test_same_seed_same_bytes(archive: list[Path], tmp_path: Path) -> None:
    again = write_example_archive(tmp_path)
    for first, second in zip(archive, again, strict=True):
        assert first.read_bytes() == second.read_bytes()


def test_other_seed_other_bytes(tmp_path: Path) -> None:
    first = write_example_archive(tmp_path / "seed7", rows=600, seed=7)
    second = write_example_archive(tmp_path / "seed8", rows=600, seed=8)
    for first_path, second_path in zip(first, second, strict=True):
        assert first_path.read_bytes() != second_path.read_bytes()


def test_label_sets(archive: list[Path]) -> None:
    monday, friday = (_read_raw(path) for path in archive)
    assert set(monday[" Label"]) == {BENIGN}
    assert set(friday[" Label"]) == {BENIGN, "DDoS", "PortScan", WEB_BRUTE_FORCE}
    # The en dash must be UTF-8 encoded, not a hyphen or a cp1252 byte.
    assert b"Web Attack \xe2\x80\x93 Brute Force" in archive[1].read_bytes()


def test_attack_fraction(raw: pd.DataFrame) -> None:
    attack_fraction = (raw[" Label"] != BENIGN).mean()
    assert 0.35 <= attack_fraction <= 0.45


def test_infinity_only_at_zero_duration(raw: pd.DataFrame) -> None:
    zero_duration = raw[" Flow Duration"] == "0"
    bytes_infinite = raw["Flow Bytes/s"] == "Infinity"
    packets_infinite = raw[" Flow Packets/s"] == "Infinity"
    assert bytes_infinite.sum() > 0
    assert zero_duration[bytes_infinite].all()
    assert (packets_infinite == zero_duration).all()
    assert 0.005 <= packets_infinite.mean() <= 0.02


def test_nan_flow_bytes_for_empty_flows(raw: pd.DataFrame) -> None:
    nan_bytes = raw["Flow Bytes/s"] == "NaN"
    assert nan_bytes.sum() >= 1
    assert nan_bytes.mean() <= 0.01
    assert (raw.loc[nan_bytes, " Flow Duration"] == "0").all()
    assert (raw.loc[nan_bytes, "Total Length of Fwd Packets"] == "0").all()
    assert (raw.loc[nan_bytes, " Total Length of Bwd Packets"] == "0").all()
    for column in raw.columns.drop(["Flow Bytes/s", " Label"]):
        assert not raw[column].eq("NaN").any(), column


def test_negative_init_windows(numeric: pd.DataFrame) -> None:
    for column in ("Init_Win_bytes_forward", " Init_Win_bytes_backward"):
        assert (numeric[column] == -1).any(), column
        assert (numeric[column] >= -1).all(), column
    no_backward = numeric[" Total Backward Packets"] == 0
    assert (numeric.loc[no_backward, " Init_Win_bytes_backward"] == -1).all()


def test_fwd_header_length_columns_equal(raw: pd.DataFrame) -> None:
    # pandas renames the second of two equal column names with a ".1" suffix.
    assert (raw[" Fwd Header Length"] == raw[" Fwd Header Length.1"]).all()


def test_bulk_columns_zero(raw: pd.DataFrame) -> None:
    for column in BULK_COLUMNS:
        assert (raw[column] == "0").all(), column


def test_number_notation(raw: pd.DataFrame) -> None:
    for column in INTEGER_COLUMNS:
        assert raw[column].str.fullmatch(r"-?\d+").all(), column
    for column in FLOAT_COLUMNS:
        assert raw[column].str.contains(".", regex=False).any(), column
    exponent = re.compile(r"\d[eE][-+]?\d")
    for column in raw.columns.drop(" Label"):
        assert not raw[column].str.contains(exponent).any(), column


def test_length_totals_match_means(numeric: pd.DataFrame) -> None:
    for packets, total, mean in LENGTH_GROUPS:
        np.testing.assert_allclose(
            numeric[total], numeric[packets] * numeric[mean], rtol=1e-8, atol=1e-6
        )
    assert (numeric["Subflow Fwd Packets"] == numeric[" Total Fwd Packets"]).all()
    assert (numeric[" Subflow Fwd Bytes"] == numeric["Total Length of Fwd Packets"]).all()
    assert (numeric[" Subflow Bwd Packets"] == numeric[" Total Backward Packets"]).all()
    assert (numeric[" Subflow Bwd Bytes"] == numeric[" Total Length of Bwd Packets"]).all()


def test_rates_match_duration(numeric: pd.DataFrame) -> None:
    timed = numeric[numeric[" Flow Duration"] > 0]
    seconds = timed[" Flow Duration"] / 1e6
    packets = timed[" Total Fwd Packets"] + timed[" Total Backward Packets"]
    flow_bytes = timed["Total Length of Fwd Packets"] + timed[" Total Length of Bwd Packets"]
    np.testing.assert_allclose(timed[" Flow Packets/s"], packets / seconds, rtol=1e-8)
    np.testing.assert_allclose(timed["Flow Bytes/s"], flow_bytes / seconds, rtol=1e-8)
    np.testing.assert_allclose(
        timed["Fwd Packets/s"], timed[" Total Fwd Packets"] / seconds, rtol=1e-8
    )


def test_stat_columns_ordered(numeric: pd.DataFrame) -> None:
    for maximum, mean, minimum in STAT_GROUPS:
        assert (numeric[maximum] >= numeric[mean] * (1 - 1e-9)).all(), maximum
        assert (numeric[mean] >= numeric[minimum] * (1 - 1e-9)).all(), minimum
    duration = numeric[" Flow Duration"]
    assert (numeric[" Flow IAT Max"] <= duration).all()
    assert (numeric["Fwd IAT Total"] <= duration).all()
    assert (numeric["Bwd IAT Total"] <= duration).all()
    np.testing.assert_allclose(
        numeric[" Packet Length Variance"], numeric[" Packet Length Std"] ** 2, rtol=1e-8
    )


def test_flow_iat_min_below_direction_min(numeric: pd.DataFrame) -> None:
    for packets, minimum in (
        (" Total Fwd Packets", " Fwd IAT Min"),
        (" Total Backward Packets", " Bwd IAT Min"),
    ):
        with_gaps = numeric[numeric[packets] >= 2]
        # Every gap between two packets of one direction contains a flow gap.
        assert (with_gaps[" Flow IAT Min"] <= with_gaps[minimum]).all(), minimum


def test_forward_only_flow_spans_duration(numeric: pd.DataFrame) -> None:
    forward_only = numeric[
        (numeric[" Total Backward Packets"] == 0) & (numeric[" Total Fwd Packets"] >= 2)
    ]
    assert len(forward_only) > 0
    assert (forward_only["Fwd IAT Total"] == forward_only[" Flow Duration"]).all()


def _attack_split(raw: pd.DataFrame, numeric: pd.DataFrame) -> list[pd.DataFrame | np.ndarray]:
    features = numeric.replace([np.inf, -np.inf], np.nan).fillna(0.0)
    is_attack = (raw[" Label"] != BENIGN).to_numpy()
    return train_test_split(features, is_attack, test_size=0.3, random_state=0, stratify=is_attack)


def test_random_forest_f1_in_range(raw: pd.DataFrame, numeric: pd.DataFrame) -> None:
    train_x, test_x, train_y, test_y = _attack_split(raw, numeric)
    forest = RandomForestClassifier(n_estimators=50, random_state=0, n_jobs=-1)
    forest.fit(train_x, train_y)
    score = f1_score(test_y, forest.predict(test_x))
    assert 0.93 <= score <= 0.999


def test_no_single_feature_separates(raw: pd.DataFrame, numeric: pd.DataFrame) -> None:
    train_x, test_x, train_y, test_y = _attack_split(raw, numeric)
    for column in train_x.columns:
        tree = DecisionTreeClassifier(max_depth=3, random_state=0)
        tree.fit(train_x[[column]], train_y)
        score = f1_score(test_y, tree.predict(test_x[[column]]))
        assert score < 0.9, column


def test_rows_below_minimum_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows must be at least"):
        write_example_archive(tmp_path, rows=example.MIN_ROWS - 1)


def test_missing_folder_created(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "archive"
    paths = write_example_archive(str(folder), rows=100)
    assert all(path.parent == folder for path in paths)
    assert all(path.is_file() for path in paths)
