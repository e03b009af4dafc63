"""Every stage in order on real CICIDS2017 rows, then the tables each stage wrote.

The pipeline runs once per module on a stride sample of the three real files
(about 2,000 rows), with at most 10 training epochs. Values here are those of a
small, quickly trained model, and the full-data figures come from ``pea run``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from sklearn import metrics as skm

from pea_spark.artifact import load_artifact
from pea_spark.evaluate import evaluate
from pea_spark.explain import explain
from pea_spark.score import load_flows, score, score_flows
from pea_spark.session import read_table, table_path
from pea_spark.split import assign_splits, labelled_flows
from tests.conftest import (
    ML_FILE,
    WEB_FILE,
    copy_trained_tables,
    make_config,
    run_pea,
    write_subset,
)

TEST_FRACTION_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def pipeline(spark, real_subset, trained_subset):
    config, trained = trained_subset
    summary = dict(trained)
    summary["evaluate"] = evaluate(spark, config)
    summary["score"] = score(spark, config, [real_subset])
    summary["explain"] = explain(spark, config, [real_subset])
    return config, summary


def test_select_keeps_fifteen_low_vif_features(spark, pipeline):
    config, summary = pipeline
    ranking = read_table(spark, config, "feature_ranking").orderBy("rank").toPandas()
    chosen = ranking[ranking["selected"]]
    assert len(chosen) == 15
    assert chosen["feature"].tolist() == summary["select"]
    assert (chosen["vif"] < 2.5).all()
    assert ranking["rank"].tolist() == list(range(1, 77))
    assert (ranking["selected"] == ranking["dropped_reason"].isna()).all()
    ranked = ranking.dropna(subset=["vif"])
    gains = ranked["information_gain"].to_numpy()
    assert (np.diff(gains) <= 1e-12).all()
    assert not ranking["feature"].isin(["destination_port", "flow_id", "source_ip"]).any()


def test_split_is_stratified_and_reproducible(spark, pipeline):
    config, _ = pipeline
    splits = read_table(spark, config, "splits")
    for row in splits.groupBy("is_attack").agg(
            F.avg((F.col("split") == "test").cast("double")).alias("share")).collect():
        assert abs(row["share"] - config.split.test_fraction) < TEST_FRACTION_TOLERANCE
    # Stratified per label: each class's test rows are within one row of its share.
    for row in splits.groupBy("label").agg(
            F.sum((F.col("split") == "test").cast("int")).alias("test"),
            F.count("*").alias("rows")).collect():
        assert abs(row["test"] - config.split.test_fraction * row["rows"]) <= 1, row["label"]
    folds = splits.filter(F.col("split") == "train").groupBy("fold").count().collect()
    assert sorted(r["fold"] for r in folds) == [0, 1, 2, 3, 4]
    total = sum(r["count"] for r in folds)
    assert all(abs(r["count"] / total - 0.2) < 0.02 for r in folds)
    assert splits.filter((F.col("split") == "test") & F.col("fold").isNotNull()).count() == 0
    again = assign_splits(labelled_flows(spark, config), config).select("flow_key", "split",
                                                                        "fold")
    stored = splits.select("flow_key", "split", "fold")
    assert again.exceptAll(stored).count() == 0
    assert stored.exceptAll(again).count() == 0


def test_train_writes_artifact_and_models_row(spark, pipeline):
    config, summary = pipeline
    artifact = summary["train"]
    assert artifact.version == 1
    assert artifact.features == summary["select"]
    assert len(artifact.transform.median) == 15
    assert all(r >= 0 for r in artifact.transform.scale)
    assert [len(q) for q in artifact.transform.quantiles] == [1001] * 15
    assert artifact.training["num_proc"] == 2
    assert 1 <= artifact.training["epochs"] <= 10
    assert artifact.training["rows_after_smote"] > artifact.training["rows"]
    assert 0.01 <= artifact.threshold <= 0.99
    assert 0.0 <= artifact.training["validation_f1"] <= 1.0
    assert set(artifact.lime_stats) == {"bins", "means", "stds", "mins", "maxs",
                                        "feature_values", "feature_frequencies"}
    reloaded = load_artifact(artifact.path)
    assert reloaded.features == artifact.features
    models = read_table(spark, config, "models").collect()
    assert [m["model_version"] for m in models] == [1]
    assert models[0]["artifact_path"] == artifact.path
    assert models[0]["packages"]["horovod"] == "0.28.1"


def test_evaluate_matches_scikit_learn(spark, pipeline):
    config, summary = pipeline
    artifact = summary["train"]
    test = read_table(spark, config, "splits").filter(F.col("split") == "test")
    flows = read_table(spark, config, "silver").join(test.select("flow_key"), "flow_key")
    scored = score_flows(flows, artifact, config).join(flows.select("flow_key", "is_attack"),
                                                       "flow_key").toPandas()
    y, p = scored["is_attack"].to_numpy(), scored["attack_probability"].to_numpy()
    predicted = (p >= artifact.threshold).astype(int)
    metrics = read_table(spark, config, "metrics").filter(
        (F.col("run_id") == summary["evaluate"]["run_id"]) & (F.col("model") == "cnn_lstm")
        & (F.col("split") == "test"))
    assert {r[0] for r in metrics.select("threshold").distinct().collect()} == {
        0.5, artifact.threshold}
    stored = {r["metric"]: r["value"] for r in
              metrics.filter(F.col("threshold") == artifact.threshold).collect()}
    assert stored["rows"] == len(y)
    assert stored["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert stored["precision"] == pytest.approx(skm.precision_score(y, predicted))
    assert stored["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert stored["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert stored["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert stored["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted).ravel()
    assert (stored["true_negatives"], stored["false_positives"]) == (tn, fp)
    assert (stored["false_negatives"], stored["true_positives"]) == (fn, tp)
    assert stored["specificity"] == pytest.approx(tn / (tn + fp))
    # Ten epochs on 2,000 rows already separate the classes well.
    assert stored["roc_auc"] > 0.9


def test_score_predicts_every_input_flow(spark, pipeline):
    config, summary = pipeline
    predictions = read_table(spark, config, "predictions")
    assert summary["score"]["flows"] == summary["ingest"]["loaded"]
    assert predictions.count() == summary["ingest"]["loaded"]
    assert predictions.select("flow_key").distinct().count() == predictions.count()
    bounds = predictions.agg(F.min("attack_probability"), F.max("attack_probability")).first()
    assert 0.0 <= bounds[0] <= bounds[1] <= 1.0
    labels = {r[0] for r in predictions.select("predicted_label").distinct().collect()}
    assert labels == {"ATTACK", "BENIGN"}
    threshold = summary["train"].threshold
    mismatched = predictions.filter(
        (F.col("attack_probability") >= threshold) != (F.col("is_attack_predicted") == 1))
    assert mismatched.count() == 0


def test_score_again_skips_scored_files_unless_rescored(spark, pipeline, real_subset):
    config, summary = pipeline
    flows = summary["ingest"]["loaded"]
    assert summary["score"]["scored"] == flows
    again = score(spark, config, [real_subset])
    assert again == {**summary["score"], "scored": 0}
    forced = score(spark, config, [real_subset], rescore=True)
    assert forced == summary["score"]
    assert read_table(spark, config, "predictions").count() == flows


def test_load_flows_reads_ingested_files_from_bronze(spark, pipeline, real_subset):
    config, summary = pipeline
    reused = load_flows(spark, config, [real_subset])
    parsed = load_flows(spark, config, [real_subset], reuse_bronze=False)
    bronze = str(table_path(config, "bronze"))
    assert reused.inputFiles()
    assert all(bronze in path for path in reused.inputFiles())
    assert parsed.inputFiles() == []
    first = reused.orderBy("flow_key").toPandas()
    second = parsed.orderBy("flow_key").toPandas()
    assert len(first) == summary["ingest"]["loaded"]
    pd.testing.assert_frame_equal(first, second)


def test_explain_covers_every_predicted_attack(spark, pipeline):
    config, summary = pipeline
    explanations = read_table(spark, config, "explanations")
    attacks = read_table(spark, config, "predictions").filter("is_attack_predicted = 1")
    assert summary["explain"]["flows"] == attacks.count()
    assert explanations.select("flow_key").distinct().count() == attacks.count()
    per_flow = explanations.groupBy("flow_key").agg(
        F.count("*").alias("rows"), F.collect_set("rank").alias("ranks")).collect()
    assert all(r["rows"] == 5 and sorted(r["ranks"]) == [1, 2, 3, 4, 5] for r in per_flow)
    sample = explanations.first()
    assert sample["display_name"] in sample["condition"]
    assert sample["feature"] in summary["select"]


def test_explain_weights_are_ordered_by_magnitude(spark, pipeline):
    config, _ = pipeline
    frame = read_table(spark, config, "explanations").toPandas()
    for _, group in frame.groupby("flow_key"):
        magnitudes = group.sort_values("rank")["weight"].abs().to_numpy()
        assert (np.diff(magnitudes) <= 1e-12).all()


def test_feature_influence_view(spark, pipeline):
    config, _ = pipeline
    view = spark.sql(f"SELECT * FROM {config.database}.feature_influence").toPandas()
    frame = read_table(spark, config, "explanations").toPandas()
    expected = frame.assign(a=frame["weight"].abs()).groupby("feature")["a"].mean()
    got = view.set_index("feature")["mean_abs_weight"]
    assert got.sort_index().to_numpy() == pytest.approx(expected.sort_index().to_numpy())


def test_unlabelled_archive_scored_and_explained(spark, pipeline, unlabelled_subset):
    config, summary = pipeline
    loaded = summary["ingest"]["loaded"]
    cfg = make_config(config.warehouse_path, f"database={config.database}",
                      "explain.flows=all", "explain.num_samples=100", "explain.num_features=3")
    scored = score(spark, cfg, [unlabelled_subset])
    assert scored["flows"] == loaded
    explained = explain(spark, cfg, [unlabelled_subset])
    assert explained == {"flows": loaded, "rows": 3 * loaded}


def test_sql_command_reads_predictions(spark, pipeline):
    config, _ = pipeline
    stored = read_table(spark, config, "predictions").count()
    result = run_pea("--warehouse", str(config.warehouse_path), "--set",
                     f"database={config.database}", "-q", "sql",
                     f"SELECT model_version, COUNT(*) AS flows FROM {config.database}.predictions "
                     "GROUP BY model_version")
    assert result.returncode == 0, result.stderr
    assert f"|1|{stored}|" in result.stdout.replace(" ", "")


def test_score_quarantines_unparseable_lines(spark, pipeline, tmp_path, real_data):
    config, _ = pipeline
    lines = (real_data / "web_attacks/web_attacks_balanced.csv").read_bytes().splitlines()
    path = tmp_path / "archive.csv"
    path.write_bytes(b"\n".join([lines[0], lines[1], b"1,2,3", lines[2]]) + b"\n")
    result = score(spark, config, [path])
    assert result["flows"] == 2
    quarantine = read_table(spark, config, "quarantine").filter(
        F.col("source_file") == str(path.resolve())).collect()
    assert len(quarantine) == 1
    assert quarantine[0]["line_number"] == 3
    assert quarantine[0]["run_id"].startswith("score-")


def test_score_scores_only_new_and_changed_files(spark, pipeline, real_subset, tmp_path,
                                                 real_data):
    config, summary = pipeline
    archive = tmp_path / "archive"
    shutil.copytree(real_subset, archive)
    first = score(spark, config, [archive])
    assert first["scored"] == summary["ingest"]["loaded"]
    new_file = archive / "monday" / "new.csv"
    rows = write_subset(real_data / ML_FILE, new_file, stride=97)
    second = score(spark, config, [archive])
    assert second["scored"] == rows
    assert second["flows"] == first["flows"] + rows
    # A changed file replaces its own predictions, including lines it no longer has.
    fewer = write_subset(real_data / ML_FILE, new_file, stride=500)
    third = score(spark, config, [archive])
    assert third["scored"] == fewer
    assert third["flows"] == first["flows"] + fewer
    mine = read_table(spark, config, "predictions").filter(
        F.col("source_file") == str(new_file.resolve()))
    assert mine.count() == fewer


def test_explain_fewer_features_replaces_ranks(spark, pipeline, real_subset):
    config, summary = pipeline
    fewer = make_config(config.warehouse_path, f"database={config.database}",
                        "explain.num_features=2")
    result = explain(spark, fewer, [real_subset])
    assert result == {"flows": summary["explain"]["flows"],
                      "rows": 2 * summary["explain"]["flows"]}
    chosen = read_table(spark, config, "predictions").filter(
        F.col("source_file").startswith(str(real_subset.resolve()))
        & (F.col("is_attack_predicted") == 1)).select("flow_key")
    ranks = (read_table(spark, config, "explanations").join(chosen, "flow_key")
             .groupBy("rank").count().collect())
    assert {r["rank"]: r["count"] for r in ranks} == {1: result["flows"], 2: result["flows"]}


def test_changed_file_rescored_consistently(
        spark, trained_subset, real_data, tmp_path, caplog):
    from pea_spark.clean import clean
    from pea_spark.ingest import ingest
    from pea_spark.session import register_tables

    source, _ = trained_subset
    config = make_config(tmp_path / "wh")
    copy_trained_tables(source, config)
    register_tables(spark, config)
    capture = tmp_path / "capture.csv"
    lines_written = write_subset(real_data / WEB_FILE, capture, stride=24)
    ingest(spark, config, [capture])
    clean(spark, config)
    score(spark, config)
    explain(spark, config)
    path = str(capture.resolve())
    before = read_table(spark, config, "predictions").filter(
        F.col("source_file") == path).toPandas()
    assert before["is_attack_predicted"].sum() > 0
    assert read_table(spark, config, "explanations").join(
        spark.createDataFrame(before[["flow_key"]]), "flow_key").count() > 0

    # The same lines in reverse order: data line k now contains what line N + 3 - k contained.
    lines = capture.read_bytes().splitlines(keepends=True)
    capture.write_bytes(lines[0] + b"".join(reversed(lines[1:])))
    assert score(spark, config, [capture])["scored"] == lines_written

    after = read_table(spark, config, "predictions").filter(
        F.col("source_file") == path).toPandas().set_index("line_number")
    mirrored = before.assign(line_number=lines_written + 3 - before["line_number"])
    mirrored = mirrored.set_index("line_number")
    assert len(after) == lines_written
    assert after.loc[mirrored.index, "label"].tolist() == mirrored["label"].tolist()
    assert after.loc[mirrored.index, "attack_probability"].tolist() == pytest.approx(
        mirrored["attack_probability"].tolist(), abs=1e-6)
    keys = spark.createDataFrame(after.reset_index()[["flow_key", "attack_probability"]])
    assert read_table(spark, config, "explanations").join(keys, "flow_key").count() == 0

    every_flow = make_config(config.warehouse_path, f"database={config.database}",
                             "explain.flows=all")
    with caplog.at_level("WARNING", logger="pea_spark.explain"):
        assert explain(spark, config)["flows"] == 0
        assert explain(spark, every_flow)["flows"] == 0
    assert f"silver: {path}. Explain them with --input" in caplog.text
    # Scoring silver again keeps the predictions of the newer content.
    assert score(spark, config, rescore=True)["scored"] == 0
    assert score(spark, config, [capture])["scored"] == 0
    current = read_table(spark, config, "predictions").filter(F.col("source_file") == path)
    assert current.toPandas().set_index("line_number").loc[mirrored.index, "label"].tolist() == (
        mirrored["label"].tolist())

    explained = explain(spark, config, [capture])
    assert explained["flows"] == int(after["is_attack_predicted"].sum())
    assert _explained_as_scored(spark, config) == explained["flows"]

    # Back to the first order, which silver contains: the predictions are of other
    # content than the file now, so explain waits for score, which replaces them.
    capture.write_bytes(b"".join(lines))
    ingest(spark, config, [capture])
    clean(spark, config)
    caplog.clear()
    with caplog.at_level("WARNING", logger="pea_spark.explain"):
        assert explain(spark, config)["flows"] == 0
    assert "skipping 1 file whose predictions are of other content than silver" in caplog.text
    assert score(spark, config)["scored"] == read_table(spark, config, "silver").count()
    silver = read_table(spark, config, "silver").select("flow_key", "label").toPandas()
    stored = read_table(spark, config, "predictions").select("flow_key", "label").toPandas()
    merged = silver.merge(stored, on="flow_key", suffixes=("_silver", "_stored"))
    assert len(merged) == len(silver)
    assert merged["label_silver"].tolist() == merged["label_stored"].tolist()
    assert explain(spark, config)["flows"] == read_table(spark, config, "predictions").filter(
        "is_attack_predicted = 1").count()
    assert _explained_as_scored(spark, config) == read_table(
        spark, config, "explanations").select("flow_key").distinct().count()

    # A changed file ingested without pea clean: silver is older than bronze.
    capture.write_bytes(lines[0] + b"".join(reversed(lines[1:])))
    ingest(spark, config, [capture])
    for stage in (score, explain):
        with pytest.raises(ValueError, match="silver is older than bronze: pea ingest loaded"):
            stage(spark, config)


def _explained_as_scored(spark, config) -> int:
    """Count the explained flows, checking that each explanation's attack probability
    equals its flow's prediction."""
    pairs = (read_table(spark, config, "explanations").filter("rank = 1")
             .join(read_table(spark, config, "predictions")
                   .select("flow_key", "model_version", F.col("attack_probability")
                           .alias("scored")), ["flow_key", "model_version"], "left")
             .select("attack_probability", "scored").toPandas())
    assert pairs["attack_probability"].tolist() == pytest.approx(pairs["scored"].tolist(),
                                                                 abs=1e-6)
    return len(pairs)
