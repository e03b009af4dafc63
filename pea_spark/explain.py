"""Explain predictions with LIME inside Spark tasks and write the explanations table.

Two engines compute LIME explanations, chosen by ``explain.engine``:

* ``batch`` (the default) uses :class:`pea_spark.lime_engine.BatchExplainer`.
  Each flow uses one of ``explain.perturbation_sets`` shared perturbation sets,
  chosen by a hash of its ``flow_key`` and the seed. A Python worker draws each
  set once, from a random state seeded with the seed and the set's index,
  predicts it once and caches it, so that each explanation costs one weighted
  ridge regression.
* ``lime`` calls lime's own ``explain_instance`` per flow, with a random state
  seeded from the flow's ``flow_key``. It costs one model call of
  ``num_samples`` rows per flow and is kept for comparison.

Both engines build on the statistics stored in the artifact (quartile bins and
per-bin moments of the training split), so no training rows travel to the
workers. Perturbed samples are drawn in raw feature units, and the prediction
function scales them exactly as scoring does. With either engine an
explanation does not depend on partitioning.
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

from pea_spark.artifact import ModelArtifact, predict_probabilities
from pea_spark.config import PeaConfig
from pea_spark.ingest import file_sha256, find_csv_files
from pea_spark.lime_engine import BatchExplainer, Perturbations
from pea_spark.score import (
    check_contents,
    count_files,
    file_list,
    load_flows,
    predicted_contents,
    require_current_silver,
)
from pea_spark.session import read_table, table_exists, table_path, write_table
from pea_spark.train import latest_artifact

__all__ = ["build_explainer", "build_batch_explainer", "flow_random_state",
           "perturbation_set_of", "explain_rows", "choose_flows", "without_changed_files",
           "explain", "ENGINES"]

logger = logging.getLogger(__name__)

EXPLANATION_SCHEMA = (
    "flow_key long, model_version int, rank int, feature string, display_name string, "
    "condition string, weight double, attack_probability double"
)
EXPLANATION_COLUMNS = [c.split()[0] for c in EXPLANATION_SCHEMA.split(", ")]
ENGINES = ("batch", "lime")

# Perturbation sets cached per Python worker. Each takes about
# num_samples * n_features * 16 bytes (1.2 MB at 5,000 samples and 15 features).
# NOTE: flows of one set share its sampling noise, so an average over many flows,
# such as the feature_influence view, keeps that noise. More sets reduce it at
# the cost of one model call of num_samples rows each.
_MAX_CACHED_SETS = 64

_EXPLAINERS: dict[str, Any] = {}
_BATCH_EXPLAINERS: dict[tuple[str, int], BatchExplainer] = {}
_PERTURBATION_SETS: dict[tuple[str, int, int, int], tuple[Perturbations, np.ndarray]] = {}


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


def build_batch_explainer(artifact: ModelArtifact, num_features: int) -> BatchExplainer:
    """Build (once per process, artifact and ``num_features``) the batch engine's explainer."""
    key = (artifact.path, num_features)
    explainer = _BATCH_EXPLAINERS.get(key)
    if explainer is None:
        explainer = BatchExplainer(artifact.lime_stats, artifact.display_names,
                                   num_features=num_features)
        _BATCH_EXPLAINERS[key] = explainer
    return explainer


def flow_random_state(key: int, seed: int) -> np.random.RandomState:
    """Random state of one flow under the ``lime`` engine: seeded with ``flow_key XOR seed``."""
    return np.random.RandomState((int(key) ^ seed) & 0xFFFFFFFF)


def perturbation_set_of(keys: np.ndarray, seed: int, sets: int) -> np.ndarray:
    """Index in ``[0, sets)`` of the shared perturbation set that each flow uses.

    The index is the splitmix64 hash of ``flow_key XOR seed``, modulo ``sets``,
    so it does not depend on partitioning, and a new seed regroups the flows.
    """
    mixed = np.asarray(keys, dtype=np.int64).view(np.uint64) ^ np.uint64(seed & (2 ** 64 - 1))
    mixed = mixed + np.uint64(0x9E3779B97F4A7C15)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed = mixed ^ (mixed >> np.uint64(31))
    return (mixed % np.uint64(sets)).astype(np.int64)


def clear_perturbation_cache() -> None:
    """Forget the perturbation sets and predictions this process cached (for benchmarks)."""
    _PERTURBATION_SETS.clear()


def _perturbation_set(artifact: ModelArtifact, model: Any, explainer: BatchExplainer,
                      num_samples: int, seed: int, index: int,
                      batch_size: int) -> tuple[Perturbations, np.ndarray]:
    """Draw and predict shared perturbation set ``index``, once per process."""
    key = (artifact.path, num_samples, seed, index)
    cached = _PERTURBATION_SETS.get(key)
    if cached is None:
        state = np.random.RandomState([seed & 0xFFFFFFFF, index])
        perturbations = explainer.sample(num_samples, state)
        predictions = predict_probabilities(model, artifact, perturbations.values, batch_size)
        if len(_PERTURBATION_SETS) >= _MAX_CACHED_SETS:
            _PERTURBATION_SETS.clear()
        cached = (perturbations, predictions)
        _PERTURBATION_SETS[key] = cached
    return cached


def explain_rows(artifact: ModelArtifact, model: Any, raw: np.ndarray, keys: np.ndarray,
                 num_features: int, num_samples: int, seed: int,
                 batch_size: int = 8192, engine: str = "batch",
                 perturbation_sets: int = 4) -> pd.DataFrame:
    """Explain each row of raw features with LIME; one output row per (flow, feature).

    Parameters
    ----------
    raw : ndarray, shape (flows, features)
        Raw values of ``artifact.features``.
    keys : ndarray of int64, shape (flows,)
        ``flow_key`` of each row; it seeds the row's sampling (``lime``) or
        chooses its perturbation set (``batch``).
    engine : {"batch", "lime"}
        The batch engine, or lime's own ``explain_instance`` per flow.
    perturbation_sets : int
        Shared perturbation sets of the batch engine.

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`EXPLANATION_SCHEMA`; ``rank`` 1 is the largest absolute weight.
    """
    if engine == "lime":
        return _explain_rows_lime(artifact, model, raw, keys, num_features, num_samples, seed,
                                  batch_size)
    if engine == "batch":
        return _explain_rows_batch(artifact, model, raw, keys, num_features, num_samples, seed,
                                   batch_size, perturbation_sets)
    raise ValueError(f"invalid engine {engine!r}: expected one of {', '.join(ENGINES)}")


def _explain_rows_lime(artifact: ModelArtifact, model: Any, raw: np.ndarray, keys: np.ndarray,
                       num_features: int, num_samples: int, seed: int,
                       batch_size: int) -> pd.DataFrame:
    explainer = build_explainer(artifact)

    def classifier(samples: np.ndarray) -> np.ndarray:
        p = predict_probabilities(model, artifact, samples, batch_size)
        return np.column_stack([1.0 - p, p])

    records = []
    for key, row in zip(keys, raw, strict=True):
        state = flow_random_state(key, seed)
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
    return pd.DataFrame.from_records(records, columns=EXPLANATION_COLUMNS)


def _explain_rows_batch(artifact: ModelArtifact, model: Any, raw: np.ndarray, keys: np.ndarray,
                        num_features: int, num_samples: int, seed: int, batch_size: int,
                        perturbation_sets: int) -> pd.DataFrame:
    explainer = build_batch_explainer(artifact, num_features)
    width = min(num_features, len(artifact.features))
    features = np.zeros((len(raw), width), dtype=np.int64)
    weights = np.zeros((len(raw), width))
    probabilities = predict_probabilities(model, artifact, raw, batch_size)
    set_of_flow = perturbation_set_of(keys, seed, perturbation_sets)
    for index in np.unique(set_of_flow):
        members = np.flatnonzero(set_of_flow == index)
        perturbations, predictions = _perturbation_set(artifact, model, explainer, num_samples,
                                                       seed, int(index), batch_size)
        result = explainer.explain(perturbations, predictions, raw[members],
                                   probabilities[members])
        features[members] = result.features
        weights[members] = result.weights
    bins = np.take_along_axis(explainer.stats.discretize(raw), features, axis=1)
    return pd.DataFrame({
        "flow_key": np.repeat(np.asarray(keys, dtype=np.int64), width),
        "model_version": np.full(len(raw) * width, artifact.version, dtype=np.int32),
        "rank": np.tile(np.arange(1, width + 1, dtype=np.int32), len(raw)),
        "feature": np.asarray(artifact.features, dtype=object)[features.ravel()],
        "display_name": np.asarray(artifact.display_names, dtype=object)[features.ravel()],
        "condition": [explainer.conditions[f][b]
                      for f, b in zip(features.ravel(), bins.ravel(), strict=True)],
        "weight": weights.ravel(),
        "attack_probability": np.repeat(probabilities, width),
    }, columns=EXPLANATION_COLUMNS)


def without_changed_files(spark: SparkSession, config: PeaConfig, flows: DataFrame,
                          hashes: dict[str, str] | None, version: int) -> DataFrame:
    """Drop the flows of files whose predictions by model ``version`` were made from
    other content than ``flows`` were read from, and name those files in a warning.

    ``hashes`` maps each input file to its SHA-256, and is None when ``flows``
    come from silver. ``flow_key`` is the path and line number, so an explanation
    of such a line would be stored next to a prediction of a different line.
    """
    if hashes is not None:
        predicted = predicted_contents(spark, config, version)
        changed = sorted(path for path, sha in hashes.items()
                         if path in predicted and predicted[path][0] != {sha})
        if changed:
            logger.warning("explain: skipping %s changed after pea score scored them: %s. "
                           "Score them again first (pea score --input FILE).",
                           count_files(len(changed)), file_list(changed))
    else:
        require_current_silver(spark, config, "explain")
        check = check_contents(spark, config, version)
        changed = check.files
        if check.predictions_current:
            logger.warning("explain: skipping %s scored with --input after a change, because "
                           "silver contains their earlier content, so they are not explained "
                           "from silver: %s. Explain them with --input FILE, or ingest them "
                           "again and run pea clean.", count_files(len(check.predictions_current)),
                           file_list(check.predictions_current))
        if check.silver_current:
            logger.warning("explain: skipping %s whose predictions are of other content than "
                           "silver, which matches the files now, until pea score scores them "
                           "again: %s.", count_files(len(check.silver_current)),
                           file_list(check.silver_current))
    if not changed:
        return flows
    return flows.filter(~F.col("source_file").isin(changed))


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
    if settings.engine not in ENGINES:
        raise ValueError(f"invalid explain.engine {settings.engine!r}: expected one of "
                         f"{', '.join(ENGINES)}")

    def explain_partition(batches):
        from pea_spark.artifact import load_keras_model, set_tensorflow_threads

        set_tensorflow_threads(1)
        model = load_keras_model(artifact.path)
        for frame in batches:
            yield explain_rows(artifact, model, frame[artifact.features].to_numpy(np.float64),
                               frame["flow_key"].to_numpy(), settings.num_features,
                               settings.num_samples, seed, batch_size, settings.engine,
                               settings.perturbation_sets)

    return flows.select("flow_key", *artifact.features).mapInPandas(
        explain_partition, EXPLANATION_SCHEMA)


def _delete_explanations(spark: SparkSession, config: PeaConfig, chosen: DataFrame,
                         version: int) -> None:
    """Delete every rank of the chosen flows' explanations by model ``version``.

    All ranks go, so that a run with a lower ``explain.num_features`` leaves no
    rows of an earlier run behind. A run stopped between this delete and the
    append leaves those flows without explanations until explain runs again.
    """
    from delta.tables import DeltaTable

    if not table_exists(config, "explanations"):
        return
    target = DeltaTable.forPath(spark, str(table_path(config, "explanations")))
    keys = chosen.select("flow_key").distinct()
    (target.alias("t").merge(keys.alias("s"),
                             f"t.flow_key = s.flow_key AND t.model_version = {int(version)}")
     .whenMatchedDelete().execute())


def explain(spark: SparkSession, config: PeaConfig, inputs: list[str | Path] | None = None,
            version: int | None = None) -> dict[str, int]:
    """Explain the chosen flows (CSV ``inputs`` or silver) into ``explanations``.

    Re-explaining a flow with the same model version replaces all its rows.

    Returns
    -------
    dict
        ``flows`` explained and explanation ``rows`` written.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    # Each input file is hashed once, for both the bronze check and the content check.
    hashes = {str(f): file_sha256(f) for f in find_csv_files(inputs)} if inputs else None
    flows = load_flows(spark, config, inputs, hashes=hashes)
    flows = without_changed_files(spark, config, flows, hashes, artifact.version)
    flows = flows.select("flow_key", *artifact.features)
    # The chosen flows are cached, so that the inputs are read once for the
    # explanations and the count of written rows.
    chosen = choose_flows(spark, config, flows, artifact).persist()
    try:
        explained = explain_flows(chosen, artifact, config)
        _delete_explanations(spark, config, chosen, artifact.version)
        write_table(explained, config, "explanations", mode="append")
        written = read_table(spark, config, "explanations").filter(
            F.col("model_version") == artifact.version).join(chosen.select("flow_key"),
                                                             "flow_key")
        counts = written.agg(F.countDistinct("flow_key").alias("flows"),
                             F.count("*").alias("rows")).first()
    finally:
        chosen.unpersist()
    result = {"flows": int(counts["flows"]), "rows": int(counts["rows"])}
    logger.info("explain: %d flows explained with model v%d by the %s engine (%d rows, "
                "explain.flows %s, %d samples each) in %.1f s", result["flows"], artifact.version,
                config.explain.engine, result["rows"], config.explain.flows,
                config.explain.num_samples, time.monotonic() - start)
    return result
