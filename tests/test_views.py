"""The analyst views and ``pea sql``, checked against pandas on real pipeline output.

The tables come from the ``explained_subset`` fixture: a model trained on a
stride sample of the three real CICIDS2017 files, those files scored, and the
flows predicted as attacks explained.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pandas as pd
import pytest

from pea_spark.clean import _DASH_VARIANTS
from pea_spark.query import QueryError, display_width, format_table, run_query
from pea_spark.session import read_table
from pea_spark.views import VIEWS
from tests.conftest import make_config, run_pea

# AVG in Spark and mean in pandas add in different orders.
MEAN_TOLERANCE = 1e-12


def _view(spark, config, name: str) -> pd.DataFrame:
    return spark.sql(f"SELECT * FROM {config.database}.{name}").toPandas()


def _table(spark, config, name: str) -> pd.DataFrame:
    return read_table(spark, config, name).toPandas()


def _python_label(raw: str | None) -> str | None:
    """The label rule of ``pea clean``, written again in Python."""
    if raw is None:
        return None
    text = re.sub(r"\s+", " ", re.sub(_DASH_VARIANTS, " - ", raw.strip()))
    if text.upper() == "BENIGN":
        return "BENIGN"
    return text or None


def _labelled_predictions(spark, config) -> pd.DataFrame:
    """Predictions with the label of their bronze line, computed here instead of by Spark."""
    bronze = _table(spark, config, "bronze")[["source_file", "line_number", "label"]]
    bronze["label"] = bronze["label"].map(_python_label)
    return _table(spark, config, "predictions").drop(columns="label").merge(
        bronze, on=["source_file", "line_number"], how="left", validate="one_to_one")


def _attack_weights(spark, config) -> pd.DataFrame:
    predictions = _table(spark, config, "predictions")
    attacks = predictions[predictions["is_attack_predicted"] == 1]
    weights = attacks.merge(_table(spark, config, "explanations"),
                            on=["flow_key", "model_version"], suffixes=("", "_explained"))
    weights["scored_date"] = weights["scored_at"].dt.date
    weights["abs_weight"] = weights["weight"].abs()
    return weights


def test_views_all_created(spark, explained_subset):
    config = explained_subset
    names = {row["viewName"] for row in
             spark.sql(f"SHOW VIEWS IN {config.database}").collect()}
    assert names == set(VIEWS)


def test_attack_counts_match_pandas(spark, explained_subset):
    config = explained_subset
    view = _view(spark, config, "attack_counts")
    frame = _labelled_predictions(spark, config)
    keys = ["model_version", "source_file", "label", "predicted_label"]
    expected = (frame.groupby(keys, dropna=False)
                .agg(flows=("flow_key", "size"),
                     mean_attack_probability=("attack_probability", "mean"))
                .reset_index().sort_values(keys).reset_index(drop=True))
    got = view.sort_values(keys).reset_index(drop=True)
    assert got[keys + ["flows"]].to_dict("records") == expected[keys + ["flows"]].to_dict(
        "records")
    assert got["mean_attack_probability"].tolist() == pytest.approx(
        expected["mean_attack_probability"].tolist(), abs=MEAN_TOLERANCE)
    assert int(view["flows"].sum()) == len(frame)
    assert int(view.loc[view["predicted_label"] == "ATTACK", "flows"].sum()) == int(
        frame["is_attack_predicted"].sum())


def test_prediction_labels_equal_bronze_labels(spark, explained_subset):
    config = explained_subset
    stored = _table(spark, config, "predictions")[["source_file", "line_number", "label"]]
    expected = _labelled_predictions(spark, config)[["source_file", "line_number", "label"]]
    merged = stored.merge(expected, on=["source_file", "line_number"], validate="one_to_one",
                          suffixes=("_stored", "_bronze"))
    assert len(merged) == len(stored) > 0
    assert merged["label_stored"].tolist() == merged["label_bronze"].tolist()
    assert set(merged["label_stored"]) > {"BENIGN"}


@pytest.mark.parametrize("group", ["source_file", "scored_date"], ids=["by_file", "by_day"])
def test_attack_top_features_match_pandas(spark, explained_subset, group):
    config = explained_subset
    name = "attack_top_features_by_file" if group == "source_file" else (
        "attack_top_features_by_day")
    view = _view(spark, config, name)
    weights = _attack_weights(spark, config)
    keys = ["model_version", group, "feature", "display_name"]
    expected = (weights.groupby(keys)
                .agg(attack_flows=("flow_key", "size"), mean_abs_weight=("abs_weight", "mean"),
                     mean_weight=("weight", "mean"),
                     top_ranked_flows=("rank", lambda ranks: int((ranks == 1).sum())))
                .reset_index())
    expected = expected.sort_values(["model_version", group, "mean_abs_weight", "feature"],
                                    ascending=[True, True, False, True])
    expected["feature_rank"] = expected.groupby(["model_version", group]).cumcount() + 1
    expected = expected.sort_values(keys).reset_index(drop=True)
    got = view.sort_values(keys).reset_index(drop=True)
    assert len(got) == len(expected) > 0
    exact = keys + ["attack_flows", "top_ranked_flows"]
    assert got[exact].to_dict("records") == expected[exact].to_dict("records")
    for column in ["mean_abs_weight", "mean_weight"]:
        assert got[column].tolist() == pytest.approx(expected[column].tolist(),
                                                     abs=MEAN_TOLERANCE), column
    # Exact ranks assume that no two features of a group have means within rounding error.
    assert got["feature_rank"].tolist() == expected["feature_rank"].tolist()


def test_top_attack_flows_match_pandas(spark, explained_subset):
    config = explained_subset
    view = _view(spark, config, "top_attack_flows").sort_values("flow_rank")
    frame = _labelled_predictions(spark, config)
    attacks = frame[frame["is_attack_predicted"] == 1].sort_values(
        ["attack_probability", "flow_key"], ascending=[False, True])
    explanations = _table(spark, config, "explanations").sort_values("rank")
    by_flow = {key: group for key, group in explanations.groupby("flow_key")}
    assert view["flow_rank"].tolist() == list(range(1, len(attacks) + 1))
    assert view["flow_key"].tolist() == attacks["flow_key"].tolist()
    assert view["attack_probability"].tolist() == attacks["attack_probability"].tolist()
    assert view["label"].tolist() == attacks["label"].tolist()
    explained = 0
    for row in view.itertuples():
        group = by_flow.get(row.flow_key)
        if group is None:
            assert row.explanation is None
            continue
        explained += 1
        first = group.iloc[0]
        assert (row.top_feature, row.top_condition, row.top_weight) == (
            first["display_name"], first["condition"], first["weight"])
        text = "; ".join(f"{c} ({w:+.4f})" for c, w in zip(group["condition"], group["weight"],
                                                          strict=True))
        assert row.explanation == text
    assert explained == explanations["flow_key"].nunique()


def test_run_query_table_format(spark, explained_subset):
    config = explained_subset
    db = config.database
    out = io.StringIO()
    total = run_query(spark, config, f"SELECT model_version, predicted_label, COUNT(*) AS flows "
                      f"FROM {db}.predictions GROUP BY 1, 2 ORDER BY 2", out)
    counts = _table(spark, config, "predictions")["predicted_label"].value_counts()
    assert total == len(counts)
    lines = out.getvalue().splitlines()
    widths = {len(line) for line in lines[:-1]}
    assert len(widths) == 1
    assert lines[1].split("|")[1:4] == [" model_version ", " predicted_label ", " flows "]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[3:-2]]
    assert cells == [["1", label, str(counts[label])] for label in sorted(counts.index)]
    assert lines[-1] == f"({len(counts)} rows)"


def test_run_query_limit_counts_all_rows(spark, explained_subset):
    config = explained_subset
    stored = read_table(spark, config, "predictions").count()
    out = io.StringIO()
    total = run_query(spark, config, f"SELECT flow_key FROM {config.database}.predictions",
                      out, limit=3)
    lines = out.getvalue().splitlines()
    assert total == stored
    assert len(lines) == 4 + 3 + 1
    assert lines[-1] == f"(3 of {stored:,} rows; use --limit 0 to print all)"


def test_run_query_csv_and_json(spark, explained_subset):
    config = explained_subset
    query = (f"SELECT flow_rank, flow_key, attack_probability, label, explanation "
             f"FROM {config.database}.top_attack_flows WHERE flow_rank <= 5 ORDER BY flow_rank")
    expected = spark.sql(query).collect()
    as_csv, as_json = io.StringIO(), io.StringIO()
    run_query(spark, config, query, as_csv, fmt="csv")
    run_query(spark, config, query, as_json, fmt="json")
    rows = list(csv.DictReader(io.StringIO(as_csv.getvalue())))
    objects = [json.loads(line) for line in as_json.getvalue().splitlines()]
    assert len(rows) == len(objects) == len(expected) == 5
    for row, obj, want in zip(rows, objects, expected, strict=True):
        assert int(row["flow_key"]) == obj["flow_key"] == want["flow_key"]
        assert float(row["attack_probability"]) == obj["attack_probability"] == want[
            "attack_probability"]
        assert row["label"] == obj["label"] == want["label"]
        assert row["explanation"] == (want["explanation"] or "")
        assert obj["explanation"] == want["explanation"]


def test_format_table_writes_values_in_full():
    from pyspark.sql import Row

    text = format_table(["name", "score"], [Row(name="a\tb\nc" * 30, score=None),
                                            Row(name=None, score=0.1)])
    lines = text.splitlines()
    assert len(lines) == 6
    assert ("a\\tb\\nc" * 30) in lines[3]
    assert lines[3].endswith("|  NULL |")
    assert lines[4].startswith("| NULL ")
    assert lines[4].endswith("|   0.1 |")


def test_format_table_aligns_wide_characters():
    from pyspark.sql import Row

    text = format_table(["name", "flows"], [Row(name="攻撃", flows=1), Row(name="abcd", flows=22),
                                            Row(name="e\u0301", flows=3)])
    lines = text.splitlines()
    assert lines[3] == "| 攻撃 |     1 |"
    assert lines[4] == "| abcd |    22 |"
    assert lines[5] == "| e\u0301    |     3 |"
    assert {display_width(line) for line in lines} == {len(lines[0])}


def test_run_query_non_finite_doubles(spark, tmp_path):
    config = make_config(tmp_path / "wh")
    query = ("SELECT double('NaN') AS nan, double('Infinity') AS inf, double('-Infinity') AS "
             "neg, CAST(NULL AS DOUBLE) AS missing, array(double('NaN'), 1.5D) AS values")
    as_json, as_csv, as_table = io.StringIO(), io.StringIO(), io.StringIO()
    run_query(spark, config, query, as_json, fmt="json")
    run_query(spark, config, query, as_csv, fmt="csv")
    run_query(spark, config, query, as_table)
    assert json.loads(as_json.getvalue()) == {"nan": "NaN", "inf": "Infinity", "neg": "-Infinity",
                                              "missing": None, "values": ["NaN", 1.5]}
    assert as_csv.getvalue().splitlines()[1] == 'NaN,Infinity,-Infinity,,"[""NaN"", 1.5]"'
    cells = [cell.strip() for cell in as_table.getvalue().splitlines()[3].split("|")[1:5]]
    assert cells == ["NaN", "Infinity", "-Infinity", "NULL"]


def test_format_table_escapes_control_characters():
    from pyspark.sql import Row

    text = format_table(["label"], [Row(label="\x1b[2J\x1b[31mEVIL\x07 a\u2028b\x85")])
    assert text.splitlines()[3] == "| \\x1b[2J\\x1b[31mEVIL\\x07 a\\u2028b\\x85 |"


def test_json_rejects_repeated_columns(spark, tmp_path):
    config = make_config(tmp_path / "wh")
    with pytest.raises(QueryError) as raised:
        run_query(spark, config, "SELECT 1 AS a, 2 AS a, 3 AS b", io.StringIO(), fmt="json")
    assert "more than one column named a" in str(raised.value)
    assert "give each column its own name with AS" in str(raised.value)
    as_csv = io.StringIO()
    run_query(spark, config, "SELECT 1 AS a, 2 AS a", as_csv, fmt="csv")
    assert as_csv.getvalue() == "a,a\n1,2\n"


def test_query_intervals_and_variants(spark, tmp_path):
    config = make_config(tmp_path / "wh")
    query = ("SELECT INTERVAL '1 02:03:04.5' DAY TO SECOND AS took, "
             "parse_json('{\"ports\": [80, 443]}') AS doc, map(true, 1) AS flags")
    as_json, as_table = io.StringIO(), io.StringIO()
    run_query(spark, config, query, as_json, fmt="json")
    run_query(spark, config, query, as_table)
    assert json.loads(as_json.getvalue()) == {
        "took": "INTERVAL '1 02:03:04.5' DAY TO SECOND", "doc": {"ports": [80, 443]},
        "flags": {"true": 1}}
    cells = [cell.strip() for cell in as_table.getvalue().splitlines()[3].split("|")[1:4]]
    assert cells == ["INTERVAL '1 02:03:04.5' DAY TO SECOND", '{"ports":[80,443]}',
                     '{"true": 1}']


def test_run_query_missing_table_names_stage(spark, tmp_path):
    config = make_config(tmp_path / "wh")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {config.database}")
    db = config.database
    cases = {
        f"SELECT * FROM {db}.explanations": (f"table {db}.explanations not found",
                                             "run `pea explain` first"),
        f"SELECT * FROM {db}.top_attack_flows": (
            f"view {db}.top_attack_flows not found",
            "run `pea score`, `pea explain` first"),
        "SELECT * FROM predictions": ("qualify it with its database",
                                      f"{db}.predictions"),
        "SELECT * FROM other.predictions": ("table or view other.predictions not found",
                                            f"in database {db}"),
    }
    for query, (first, second) in cases.items():
        with pytest.raises(QueryError) as raised:
            run_query(spark, config, query, io.StringIO())
        assert first in str(raised.value), query
        assert second in str(raised.value), query


def test_run_query_syntax_error_without_stack(spark, explained_subset):
    with pytest.raises(QueryError) as raised:
        run_query(spark, explained_subset, "SELEC flow_key FROM x", io.StringIO())
    message = str(raised.value)
    assert message.startswith("syntax error in the query: [PARSE_SYNTAX_ERROR]")
    assert "'SELEC'" in message
    assert "\tat " not in message
    assert "org.apache.spark" not in message


def test_cli_sql_prints_table(spark, explained_subset):
    config = explained_subset
    query = (f"SELECT source_file, label, flows FROM {config.database}.attack_counts "
             f"WHERE predicted_label = 'ATTACK' ORDER BY source_file, label")
    expected = spark.sql(query).collect()
    result = run_pea("--warehouse", str(config.warehouse_path), "--set",
                     f"database={config.database}", "-q", "sql", query, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].replace(" ", "") == "|source_file|label|flows|"
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[3:-2]]
    assert cells == [[r["source_file"], r["label"] or "NULL", str(r["flows"])] for r in expected]
    assert lines[-1] == f"({len(expected)} rows)"
