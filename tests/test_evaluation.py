"""Evaluate, the Random Forest baseline and cross-validation on real CICIDS2017 rows.

Every stored metric is recomputed here with scikit-learn's own functions from
the predictions the same run stored, so a wrong formula or a mixed-up row fails.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn import metrics as skm

from pea_spark import split as split_stage
from pea_spark.crossval import SUMMARY_METRICS, crossval
from pea_spark.evaluate import CNN_LSTM, METRIC_ORDER, RANDOM_FOREST, evaluate
from pea_spark.session import read_table
from pea_spark.split import check_splits_unchanged
from pea_spark.train import best_f1_threshold, latest_artifact
from tests.conftest import CV_EPOCHS, SEED, copy_trained_tables, make_config


@pytest.fixture(scope="module")
def evaluated(spark, evaluated_subset):
    config, summary = evaluated_subset
    return config, latest_artifact(spark, config), summary["evaluate"], summary["crossval"]


def _run_rows(spark, config, table, run_id):
    return read_table(spark, config, table).filter(F.col("run_id") == run_id).toPandas()


def _stored_metrics(metrics, model, split, threshold):
    chosen = metrics[(metrics["model"] == model) & (metrics["split"] == split)
                     & np.isclose(metrics["threshold"], threshold)]
    return dict(zip(chosen["metric"], chosen["value"], strict=True))


def _expected(y, p, threshold):
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    return {
        "accuracy": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted, zero_division=0.0),
        "recall": skm.recall_score(y, predicted, zero_division=0.0),
        "f1": skm.f1_score(y, predicted, zero_division=0.0),
        "specificity": tn / (tn + fp),
        "roc_auc": skm.roc_auc_score(y, p),
        "average_precision": skm.average_precision_score(y, p),
        "log_loss": skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
        "true_positives": tp, "false_positives": fp, "true_negatives": tn,
        "false_negatives": fn, "rows": len(y),
    }


def test_metrics_match_scikit_learn(spark, evaluated):
    config, artifact, summary, _ = evaluated
    metrics = _run_rows(spark, config, "metrics", summary["run_id"])
    predictions = _run_rows(spark, config, "evaluation_predictions", summary["run_id"])
    thresholds = {CNN_LSTM: artifact.threshold, RANDOM_FOREST: summary["baseline"]["threshold"]}
    checked = 0
    for (model, split), part in predictions.groupby(["model", "split"]):
        y, p = part["is_attack"].to_numpy(), part["probability"].to_numpy()
        for threshold in {0.5, thresholds[model]}:
            stored = _stored_metrics(metrics, model, split, threshold)
            assert sorted(stored) == sorted(METRIC_ORDER), (model, split, threshold)
            for name, value in _expected(y, p, threshold).items():
                assert stored[name] == pytest.approx(value, abs=1e-12), (model, split, name)
            checked += 1
    assert checked >= 6


def test_evaluate_summary_is_test_split_at_threshold(spark, evaluated):
    config, artifact, summary, _ = evaluated
    metrics = _run_rows(spark, config, "metrics", summary["run_id"])
    stored = _stored_metrics(metrics, CNN_LSTM, "test", artifact.threshold)
    for name in METRIC_ORDER:
        assert summary[name] == pytest.approx(stored[name]), name
    assert summary["f1_at_0.5"] == pytest.approx(
        _stored_metrics(metrics, CNN_LSTM, "test", 0.5)["f1"])


def test_evaluated_flows_are_test_split_and_validation_fold(spark, evaluated):
    config, _, summary, _ = evaluated
    predictions = _run_rows(spark, config, "evaluation_predictions", summary["run_id"])
    splits = read_table(spark, config, "splits").toPandas()
    test_keys = set(splits.loc[splits["split"] == "test", "flow_key"])
    validation_keys = set(splits.loc[(splits["split"] == "train")
                                     & (splits["fold"] == config.split.validation_fold),
                                     "flow_key"])
    for model in (CNN_LSTM, RANDOM_FOREST):
        part = predictions[predictions["model"] == model]
        assert set(part.loc[part["split"] == "test", "flow_key"]) == test_keys, model
        assert set(part.loc[part["split"] == "validation", "flow_key"]) == validation_keys, model
        assert part["flow_key"].is_unique, model
        assert part["probability"].between(0.0, 1.0).all(), model


def test_baseline_threshold_tuned_on_validation(spark, evaluated):
    config, _, summary, _ = evaluated
    predictions = _run_rows(spark, config, "evaluation_predictions", summary["run_id"])
    validation = predictions[(predictions["model"] == RANDOM_FOREST)
                             & (predictions["split"] == "validation")]
    threshold, _ = best_f1_threshold(validation["is_attack"].to_numpy(),
                                     validation["probability"].to_numpy())
    assert summary["baseline"]["threshold"] == threshold
    # A 100-tree forest separates these real flows almost perfectly.
    assert summary["baseline"]["roc_auc"] > 0.97


def test_class_recall_matches_predictions(spark, evaluated):
    config, artifact, summary, _ = evaluated
    classes = _run_rows(spark, config, "class_metrics", summary["run_id"])
    predictions = _run_rows(spark, config, "evaluation_predictions", summary["run_id"])
    test = predictions[(predictions["model"] == CNN_LSTM) & (predictions["split"] == "test")]
    mine = classes[classes["model"] == CNN_LSTM].set_index("label")
    assert set(mine.index) == set(test["label"])
    assert {"BENIGN", "Bot", "DoS", "PortScan", "Web Attack - Brute Force"} <= set(mine.index)
    assert int(mine["rows"].sum()) == len(test)
    for label, part in test.groupby("label"):
        predicted = (part["probability"] >= artifact.threshold).astype(int)
        correct = int((predicted == part["is_attack"]).sum())
        assert mine.loc[label, "rows"] == len(part), label
        assert mine.loc[label, "correct"] == correct, label
        assert mine.loc[label, "recall"] == pytest.approx(correct / len(part)), label
        assert mine.loc[label, "is_attack"] == int(label != "BENIGN"), label


def test_crossval_covers_every_fold_twice(spark, evaluated):
    config, artifact, _, folds = evaluated
    table = _run_rows(spark, config, "cv_metrics", folds["run_id"])
    assert set(table["model_version"]) == {artifact.version}
    arms = table.groupby("smote")["fold"].apply(lambda s: sorted(set(s))).to_dict()
    assert arms == {True: [0, 1, 2, 3, 4], False: [0, 1, 2, 3, 4]}
    assert table["epochs"].between(1, CV_EPOCHS).all()
    splits = read_table(spark, config, "splits").filter(F.col("split") == "train")
    fold_rows = {r["fold"]: r["count"] for r in splits.groupBy("fold").count().collect()}
    rows = table[table["metric"] == "rows"]
    for row in rows.itertuples():
        assert row.value == fold_rows[row.fold], (row.fold, row.smote)


def test_crossval_summary_matches_table(spark, evaluated):
    config, _, _, folds = evaluated
    table = _run_rows(spark, config, "cv_metrics", folds["run_id"])
    for arm, smote in [("smote", True), ("no_smote", False)]:
        per_fold = folds[arm]["folds"]
        assert [f["fold"] for f in per_fold] == [0, 1, 2, 3, 4]
        for name in SUMMARY_METRICS:
            values = []
            for fold in per_fold:
                row = table[(table["smote"] == smote) & (table["fold"] == fold["fold"])
                            & np.isclose(table["threshold"], fold["threshold"])
                            & (table["metric"] == name)]
                assert len(row) == 1, (arm, fold["fold"], name)
                values.append(row["value"].iloc[0])
            assert folds[arm][f"{name}_mean"] == pytest.approx(np.mean(values)), (arm, name)
            assert folds[arm][f"{name}_std"] == pytest.approx(np.std(values, ddof=1)), (arm, name)


def test_crossval_rejects_fold_mismatch(spark, evaluated):
    config, _, _, _ = evaluated
    for folds in (3, 7):
        other = dataclasses.replace(config, split=dataclasses.replace(config.split, folds=folds))
        with pytest.raises(ValueError, match=rf"split.folds is {folds} but table .* has 5 folds"):
            crossval(spark, other)


def test_unknown_model_version_lists_versions(spark, evaluated):
    config, _, _, _ = evaluated
    with pytest.raises(ValueError, match=r"version 99 not found .*: the versions there are 1$"):
        evaluate(spark, config, version=99)


def test_changed_splits_stop_evaluation(spark, trained_subset, tmp_path_factory):
    source, _ = trained_subset
    config = make_config(tmp_path_factory.mktemp("wh_resplit"))
    copy_trained_tables(source, config)
    # The same split again keeps the content, so evaluation may go on.
    split_stage.split(spark, config)
    assert check_splits_unchanged(spark, config, latest_artifact(spark, config).training) is None
    split_stage.split(spark, dataclasses.replace(config, seed=SEED + 1))
    for stage in (evaluate, crossval):
        with pytest.raises(ValueError, match=r"splits changed after this model was trained"):
            stage(spark, config)
