"""Explain predictions with LIME inside Spark tasks and write the explanations table.

Each Python worker builds one ``lime.lime_tabular.LimeTabularExplainer`` per
model from the statistics stored in the artifact (quartile bins and per-bin
moments of the training split), so no training rows travel to the workers.
Perturbed samples are drawn in raw feature units, and the prediction function
scales them exactly as scoring does. Each flow's random state is seeded from
its ``flow_key``, so an explanation does not depend on partitioning.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.artifact import ModelArtifact
from pea_spark.config import PeaConfig
from pea_spark.score import load_flows, upsert
from pea_spark.session import read_table
from pea_spark.train import latest_artifact

__all__ = ["build_explainer", "explain_rows", "choose_flows", "explain"]

logger = logging.getLogger(__name__)

EXPLANATION_SCHEMA = (
    "flow_key long, model_version int, rank int, feature string, display_name string, "
    "condition string, weight double, attack_probability double"
)

_EXPLAINERS: dict[str, Any] = {}


def _stats_by_position(stats: dict[str, Any]) -> dict[str, Any]:
    # JSON turned the integer feature positions into strings; LIME indexes by int.
    return {name: {int(k): v for k, v in table.items()} for name, table in stats.items()}


def build_explainer(artifact: ModelArtifact):
    """Build (once per process and artifact) LIME's tabular explainer from the artifact."""
    explainer = _EXPLAINERS.get(artifact.path)
    if explainer is None:
        from lime.lime_tabular import LimeTabularExplainer

        stats = _stats_by_position(artifact.lime_stats)
        count = len(artifact.features)
        # LIME reads only the shape of training_data when training_data_stats is given.
        bounds = np.array([[stats["mins"][i][0] for i in range(count)],
                           [stats["maxs"][i][-1] for i in range(count)]])
        explainer = LimeTabularExplainer(
            bounds, mode="classification", feature_names=artifact.display_names,
            class_names=["BENIGN", "ATTACK"], discretize_continuous=True,
            discretizer="quartile", training_data_stats=stats, random_state=0,
        )
        _EXPLAINERS[artifact.path] = explainer
    return explainer


def explain_rows(artifact: ModelArtifact, model: Any, raw: np.ndarray, keys: np.ndarray,
                 num_features: int, num_samples: int, seed: int,
                 batch_size: int = 8192) -> pd.DataFrame:
    """Explain each row of raw features with LIME; one output row per (flow, feature).

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`EXPLANATION_SCHEMA`; ``rank`` 1 is the largest absolute weight.
    """
    from pea_spark.artifact import predict_probabilities

    explainer = build_explainer(artifact)

    def classifier(samples: np.ndarray) -> np.ndarray:
        p = predict_probabilities(model, artifact, samples, batch_size)
        return np.column_stack([1.0 - p, p])

    records = []
    for key, row in zip(keys, raw, strict=True):
        state = np.random.RandomState((int(key) ^ seed) & 0xFFFFFFFF)
        explainer.random_state = state
        explainer.discretizer.random_state = state
        explanation = explainer.explain_instance(
            row, classifier, labels=(1,), num_features=num_features, num_samples=num_samples)
        conditions = explanation.as_list(label=1)
        positions = explanation.as_map()[1]
        probability = float(explanation.predict_proba[1])
        for rank, ((condition, weight), (position, _)) in enumerate(
                zip(conditions, positions, strict=True), start=1):
            records.append((int(key), artifact.version, rank, artifact.features[position],
                            artifact.display_names[position], condition, float(weight),
                            probability))
    columns = [c.split()[0] for c in EXPLANATION_SCHEMA.split(", ")]
    return pd.DataFrame.from_records(records, columns=columns)


def choose_flows(spark: SparkSession, config: PeaConfig, flows: DataFrame,
                 artifact: ModelArtifact) -> DataFrame:
    """Select the flows to explain by ``explain.flows``: attacks, all, or a sample."""
    mode = config.explain.flows
    if mode == "all":
        return flows
    if mode == "sample":
        return flows.sample(fraction=config.explain.sample_fraction, seed=config.seed)
    predictions = read_table(spark, config, "predictions").filter(
        (F.col("model_version") == artifact.version) & (F.col("is_attack_predicted") == 1))
    return flows.join(predictions.select("flow_key"), "flow_key")


def explain_flows(flows: DataFrame, artifact: ModelArtifact, config: PeaConfig) -> DataFrame:
    """Explanations of ``flows`` as a DataFrame of :data:`EXPLANATION_SCHEMA`, computed
    by ``mapInPandas``."""
    settings = config.explain
    seed = config.seed
    batch_size = config.score.batch_size

    def explain_partition(batches):
        from pea_spark.artifact import load_keras_model, set_tensorflow_threads

        set_tensorflow_threads(1)
        model = load_keras_model(artifact.path)
        for frame in batches:
            yield explain_rows(artifact, model, frame[artifact.features].to_numpy(np.float64),
                               frame["flow_key"].to_numpy(), settings.num_features,
                               settings.num_samples, seed, batch_size)

    return flows.select("flow_key", *artifact.features).mapInPandas(
        explain_partition, EXPLANATION_SCHEMA)


def explain(spark: SparkSession, config: PeaConfig, inputs: list[str | Path] | None = None,
            version: int | None = None) -> dict[str, int]:
    """Explain the chosen flows (CSV ``inputs`` or silver) into ``explanations``.

    Re-explaining a flow with the same model version replaces its rows.

    Returns
    -------
    dict
        ``flows`` explained and explanation ``rows`` written.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    flows = load_flows(spark, config, inputs)
    chosen = choose_flows(spark, config, flows, artifact)
    explained = explain_flows(chosen, artifact, config)
    upsert(explained, config, "explanations", ["flow_key", "model_version", "rank"])
    written = read_table(spark, config, "explanations").filter(
        F.col("model_version") == artifact.version).join(chosen.select("flow_key"), "flow_key")
    counts = written.agg(F.countDistinct("flow_key").alias("flows"),
                         F.count("*").alias("rows")).first()
    result = {"flows": int(counts["flows"]), "rows": int(counts["rows"])}
    logger.info("explain: %d flows explained with model v%d (%d rows, %s flows, %d samples "
                "each) in %.1f s", result["flows"], artifact.version, result["rows"],
                config.explain.flows, config.explain.num_samples, time.monotonic() - start)
    return result
