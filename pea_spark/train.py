"""Train the CNN-LSTM with Horovod across Spark tasks, fed by Petastorm.

Steps, all on the training split:

1. The input transform is fitted on the training rows (validation fold
   excluded): each feature's quantiles, then Spark ML's RobustScaler on the
   quantile-transformed rows.
2. SMOTE (imbalanced-learn) balances the scaled training rows inside each Spark
   partition (``mapInPandas``). There is one partition per
   ``train.smote_partition_rows`` rows, so SMOTE is exact on small tables and
   distributed on large ones.
3. Petastorm materialises the balanced rows and the validation fold as Parquet;
   each Horovod rank reads its own shard of both.
4. ``horovod.spark.run`` starts ``train.num_proc`` ranks (Gloo) that train with
   ``hvd.DistributedOptimizer`` and stop early on the rank-averaged validation loss.
5. The decision threshold that maximises F1 on the validation fold is stored in
   the artifact (``train.tune_threshold``), so the test split never picks it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.feature import RobustScaler, VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.artifact import InputTransform, ModelArtifact, build_model, package_versions
from pea_spark.config import PeaConfig
from pea_spark.schema import DISPLAY_NAMES
from pea_spark.selection import bin_index, quantile_edges, selected_features
from pea_spark.session import read_table, table_exists, table_path, write_table
from pea_spark.split import labelled_flows, splits_fingerprint

__all__ = ["train", "fit_transform", "lime_training_stats", "balance_with_smote", "run_horovod",
           "run_horovod_jobs", "best_f1_threshold", "tuned_threshold"]

logger = logging.getLogger(__name__)

# LIME adds this to every per-bin standard deviation so that sampling never divides by 0.
_LIME_STD_FLOOR = 1e-11


def training_rows(spark: SparkSession, config: PeaConfig, features: list[str]) -> DataFrame:
    """Join silver's features with the train split: ``flow_key``, features, ``label``,
    ``is_attack``, ``fold``."""
    silver = labelled_flows(spark, config)
    splits = read_table(spark, config, "splits").filter(F.col("split") == "train")
    return silver.select("flow_key", *features).join(splits, "flow_key").select(
        "flow_key", *features, "label", "is_attack", "fold"
    )


def fit_transform(rows: DataFrame, features: list[str], quantiles: int) -> InputTransform:
    """Fit the input transform on training rows: quantiles, then Spark ML's RobustScaler.

    Notes
    -----
    One pass computes ``quantiles + 1`` approximate quantiles of each feature
    (relative error 1e-4). A second pass maps the rows through them in
    ``mapInPandas`` and fits the RobustScaler (quartiles 0.25 and 0.75).
    """
    probabilities = [i / quantiles for i in range(quantiles + 1)]
    edges = rows.approxQuantile(features, probabilities, 1e-4)
    partial = InputTransform(quantiles=[[float(v) for v in e] for e in edges],
                             median=[0.0] * len(features), scale=[1.0] * len(features))
    columns = list(features)

    def to_uniform(batches):
        for frame in batches:
            yield pd.DataFrame(partial.uniform(frame[columns].to_numpy(np.float64)),
                               columns=columns)

    schema = ", ".join(f"{c} double" for c in columns)
    uniform = rows.select(*columns).mapInPandas(to_uniform, schema)
    assembled = VectorAssembler(inputCols=columns, outputCol="_raw").transform(uniform)
    model = RobustScaler(inputCol="_raw", outputCol="_scaled", withCentering=True,
                         withScaling=True, lower=0.25, upper=0.75).fit(assembled)
    partial.median = [float(v) for v in model.median.toArray()]
    partial.scale = [float(v) for v in model.range.toArray()]
    return partial


def lime_training_stats(rows: DataFrame, features: list[str]) -> dict[str, Any]:
    """LIME's ``training_data_stats`` for quartile discretisation, computed by Spark.

    Returns
    -------
    dict
        ``bins`` (quartile edges), ``means``, ``stds``, ``mins``, ``maxs``,
        ``feature_values`` and ``feature_frequencies``, each keyed by the
        feature's position, as ``lime.lime_tabular.LimeTabularExplainer`` expects.
    """
    edges = quantile_edges(rows, features, [0.25, 0.5, 0.75])
    bounds = rows.agg(*[F.min(f).alias(f"lo_{i}") for i, f in enumerate(features)],
                      *[F.max(f).alias(f"hi_{i}") for i, f in enumerate(features)]).first()
    cells = F.array(*[
        F.struct(F.lit(i).alias("feature"), bin_index(F.col(f), edges[f]).alias("bin"),
                 F.col(f).cast("double").alias("value"))
        for i, f in enumerate(features)
    ])
    moments = (
        rows.select(F.explode(cells).alias("c"))
        .groupBy("c.feature", "c.bin")
        .agg(F.count("*").alias("n"), F.avg("c.value").alias("mean"),
             F.stddev_pop("c.value").alias("std"))
        .collect()
    )
    by_cell = {(r["feature"], r["bin"]): r for r in moments}
    stats: dict[str, Any] = {k: {} for k in ["bins", "means", "stds", "mins", "maxs",
                                             "feature_values", "feature_frequencies"]}
    for i, feature in enumerate(features):
        qts = edges[feature]
        cells_of = [by_cell.get((i, b)) for b in range(len(qts) + 1)]
        stats["bins"][i] = qts
        stats["means"][i] = [float(c["mean"]) if c else 0.0 for c in cells_of]
        stats["stds"][i] = [(float(c["std"] or 0.0) if c else 0.0) + _LIME_STD_FLOOR
                            for c in cells_of]
        stats["mins"][i] = [float(bounds[f"lo_{i}"])] + qts
        stats["maxs"][i] = qts + [float(bounds[f"hi_{i}"])]
        stats["feature_values"][i] = list(range(len(qts) + 1))
        stats["feature_frequencies"][i] = [int(c["n"]) if c else 0 for c in cells_of]
    return stats


def _warn_small_smote_classes(class_rows: dict[tuple[int, str], int], k: int,
                              partitions: int) -> dict[str, int]:
    """Log the SMOTE settings that small classes force; return the small attack classes.

    ``class_rows`` maps (is_attack, label) to the number of rows given to SMOTE.
    """
    small = {label: n for (attack, label), n in sorted(class_rows.items())
             if attack == 1 and n < k + 1}
    for label, n in small.items():
        logger.warning("train: attack class %r has %d training rows, fewer than smote_k + 1 = "
                       "%d; SMOTE treats all attacks as one class, so it cannot oversample "
                       "this class on its own", label, n, k + 1)
    totals = {attack: sum(n for (a, _), n in class_rows.items() if a == attack)
              for attack in (0, 1)}
    minority = min(totals.values())
    if minority < 2:
        logger.warning("train: the smaller class (is_attack=%d) has %d training rows; SMOTE "
                       "needs 2 and is skipped", min(totals, key=totals.get), minority)
    elif minority < k + 1 and minority < max(totals.values()):
        # NOTE: with several partitions, a partition's minority can be smaller still and
        # its k lower; those per-partition values are not reported.
        logger.warning("train: the smaller class (is_attack=%d) has %d training rows, so SMOTE "
                       "uses at most %d neighbours instead of smote_k = %d (in %d partitions)",
                       min(totals, key=totals.get), minority, minority - 1, k, partitions)
    return small


def balance_with_smote(rows: DataFrame, features: list[str], transform: InputTransform,
                       config: PeaConfig) -> tuple[DataFrame, dict[str, int]]:
    """Transform rows and oversample the minority class with SMOTE inside each partition.

    SMOTE balances ``is_attack``. The multi-class ``label`` is used only to warn
    about attack classes with fewer than ``smote_k + 1`` rows, because their
    synthetic rows mix with other attack classes.

    Parameters
    ----------
    rows : DataFrame
        Training rows with ``flow_key``, ``features``, ``label`` and ``is_attack``.

    Returns
    -------
    tuple
        The balanced rows, as a DataFrame of ``features`` (array<float>, scaled)
        and ``label`` (float, the is_attack value), and the attack classes with
        fewer than ``smote_k + 1`` rows, mapped to their row counts.

    Notes
    -----
    Rows are hash-partitioned by ``flow_key`` into one partition per
    ``train.smote_partition_rows`` rows, so neighbours are searched within a
    partition. There, SMOTE uses ``min(smote_k, minority rows - 1)`` neighbours,
    and a partition whose minority class has fewer than 2 rows is passed
    through without oversampling. One aggregation counts the rows per class.
    """
    class_rows = {(r["is_attack"], r["label"]): r["count"]
                  for r in rows.groupBy("is_attack", "label").count().collect()}
    count = sum(class_rows.values())
    partitions = max(1, math.ceil(count / config.train.smote_partition_rows))
    k, seed = config.train.smote_k, config.seed
    small = _warn_small_smote_classes(class_rows, k, partitions)
    columns = list(features)

    def oversample(batches):
        from imblearn.over_sampling import SMOTE

        frame = pd.concat(list(batches), ignore_index=True)
        if frame.empty:
            return
        x = transform.apply(frame[columns].to_numpy(np.float64))
        y = frame["is_attack"].to_numpy(np.int64)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) == 2 and counts.min() >= 2 and counts.min() < counts.max():
            neighbours = int(min(k, counts.min() - 1))
            x, y = SMOTE(k_neighbors=neighbours, random_state=seed).fit_resample(x, y)
        yield pd.DataFrame({"features": list(x.astype(np.float32)),
                            "label": y.astype(np.float32)})

    shuffled = rows.repartition(partitions, F.xxhash64("flow_key", F.lit(seed)))
    return shuffled.mapInPandas(oversample, "features array<float>, label float"), small


def scale_rows(rows: DataFrame, features: list[str], transform: InputTransform) -> DataFrame:
    """Transform rows without resampling: ``features`` (array<float>) and ``label`` (float)."""
    columns = list(features)

    def to_inputs(batches):
        for frame in batches:
            x = transform.apply(frame[columns].to_numpy(np.float64))
            yield pd.DataFrame({"features": list(x), "label": frame["is_attack"]
                                .to_numpy(np.float32)})

    return rows.mapInPandas(to_inputs, "features array<float>, label float")


def _train_on_rank(pairs, settings: dict[str, Any]) -> dict[str, Any]:
    """Body of one Horovod rank: build and train one model per converter pair, in order.

    Every rank trains the same sequence of models, so their collective operations
    stay matched. Returns the weights and history of each model, by pair.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from pea_spark.artifact import build_model, set_tensorflow_threads

    set_tensorflow_threads(settings["threads"])
    hvd.init()
    steps = settings["steps"]
    # The configured batch is the global one. Each rank takes its share, so the
    # optimiser gets the same batch size and step count for any number of ranks.
    batch = max(1, settings["batch_size"] // hvd.size())

    def to_inputs(rows):
        return tf.reshape(rows.features, [-1, steps, 1]), rows.label

    models = []
    for number, (train_converter, val_converter) in enumerate(pairs):
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(settings["seed"])
        model = build_model(steps, settings["conv_filters"], settings["kernel_size"],
                            settings["lstm_units"], settings["dropout"])
        optimizer = hvd.DistributedOptimizer(
            tf.keras.optimizers.Adam(learning_rate=settings["learning_rate"]))
        model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
        callbacks = [
            hvd.callbacks.BroadcastGlobalVariablesCallback(0),
            # Averaging first makes every rank take the same early-stopping decision.
            hvd.callbacks.MetricAverageCallback(),
            tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings["patience"],
                                             restore_best_weights=True),
        ]
        steps_per_epoch = max(1, len(train_converter) // (batch * hvd.size()))
        validation_steps = max(1, len(val_converter) // (batch * hvd.size()))
        if hvd.rank() == 0 and len(pairs) > 1:
            print(f"model {number + 1} of {len(pairs)}: {len(train_converter)} training rows, "
                  f"{len(val_converter)} validation rows", flush=True)
        with train_converter.make_tf_dataset(batch_size=batch, num_epochs=None,
                                             cur_shard=hvd.rank(), shard_count=hvd.size(),
                                             workers_count=1,
                                             shuffling_queue_capacity=4096) as train_data, \
                val_converter.make_tf_dataset(batch_size=batch, num_epochs=None,
                                              cur_shard=hvd.rank(), shard_count=hvd.size(),
                                              workers_count=1) as val_data:
            history = model.fit(
                train_data.map(to_inputs), validation_data=val_data.map(to_inputs),
                epochs=settings["epochs"], steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps, callbacks=callbacks,
                verbose=2 if hvd.rank() == 0 else 0,
            )
        models.append({
            "weights": model.get_weights(),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "steps_per_epoch": steps_per_epoch,
        })
    from pea_spark.cluster import rank_process

    return {"rank": hvd.rank(), "size": hvd.size(), "pid": os.getpid(), "models": models,
            "process": rank_process()}


def _petastorm_cache(config: PeaConfig) -> Path:
    """Create this process's Petastorm cache folder and remove those of dead processes.

    Converters delete their files when training ends, but a killed process
    leaves them behind. Each process caches under ``<host>-<pid>``, so a folder
    of this host whose process no longer runs is stale.
    """
    import shutil
    import socket

    root = config.warehouse_path / config.database / "_petastorm"
    host = socket.gethostname()
    if root.is_dir():
        for folder in root.glob(f"{host}-*"):
            pid = folder.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
                logger.info("train: removing the Petastorm cache %s of a stopped process", folder)
                shutil.rmtree(folder, ignore_errors=True)
    cache = root / f"{host}-{os.getpid()}"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_horovod_jobs(spark: SparkSession, config: PeaConfig,
                     pairs: list[tuple[DataFrame, DataFrame]],
                     steps: int) -> list[list[dict[str, Any]]]:
    """Train one model per (train, validation) pair in a single ``horovod.spark.run``.

    Starting Horovod once for many models saves its start-up (tens of seconds per
    run on 2 cores), which matters for cross-validation. Every DataFrame has
    ``features`` (array<float> of length ``steps``) and ``label``.

    Returns
    -------
    list
        For each pair, each rank's result by rank: ``rank``, ``size``, ``pid``,
        ``process`` (see ``pea_spark.cluster.rank_process``), ``weights``, ``history``
        and ``steps_per_epoch``.
    """
    import horovod.spark
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    cache = _petastorm_cache(config)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache.as_uri())
    # Petastorm shards by Parquet row group: at least one file per rank keeps every shard fed.
    shards = max(2, config.train.num_proc * 2)
    converters = []
    settings = {
        "steps": steps,
        "seed": config.seed,
        "epochs": config.train.epochs,
        "batch_size": config.train.batch_size,
        "learning_rate": config.train.learning_rate,
        "patience": config.train.patience,
        "conv_filters": list(config.train.conv_filters),
        "kernel_size": config.train.kernel_size,
        "lstm_units": config.train.lstm_units,
        "dropout": config.train.dropout,
        "threads": config.train.threads_per_rank,
    }
    # petastorm 0.13 calls pyarrow APIs that pyarrow 14 marks deprecated, once per
    # reader; the ranks inherit this filter so their logs stay readable.
    env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning")
    python_path = rank_python_path(spark, env.get("PYTHONPATH", ""))
    if python_path:
        env["PYTHONPATH"] = python_path
    try:
        for train_df, val_df in pairs:
            converters.append((make_spark_converter(train_df.repartition(shards)),
                               make_spark_converter(val_df.repartition(shards))))
        results = horovod.spark.run(
            _train_on_rank, args=(converters, settings),
            num_proc=config.train.num_proc, use_gloo=True, verbose=1, env=env,
        )
    finally:
        for pair in converters:
            for converter in pair:
                converter.delete()
    ranks = sorted(results, key=lambda r: r["rank"])
    return [[{"rank": r["rank"], "size": r["size"], "pid": r["pid"], "process": r["process"],
              **r["models"][i]} for r in ranks] for i in range(len(pairs))]


def rank_python_path(spark: SparkSession, driver_path: str) -> str:
    """PYTHONPATH for the Horovod ranks: the ``--py-files`` by file name, then the driver's.

    The ranks get the driver's environment, whose PYTHONPATH names the driver's
    copy of each ``--py-files`` file, a path that other hosts lack. Each rank runs
    in its executor's folder, where Spark put that executor's copy, so a bare
    file name finds it on every host.
    """
    shipped = [uri.rstrip("/").rsplit("/", 1)[-1]
               for uri in spark.conf.get("spark.submit.pyFiles", "").split(",") if uri.strip()]
    return os.pathsep.join(part for part in [*shipped, driver_path] if part)


def run_horovod(spark: SparkSession, config: PeaConfig, train_df: DataFrame,
                val_df: DataFrame, steps: int) -> list[dict[str, Any]]:
    """Train on ``train_df`` with ``horovod.spark.run``; return each rank's result, by rank.

    Both DataFrames have ``features`` (array<float> of length ``steps``) and ``label``.
    """
    return run_horovod_jobs(spark, config, [(train_df, val_df)], steps)[0]


def _next_version(spark: SparkSession, config: PeaConfig) -> int:
    if not table_exists(config, "models"):
        return 1
    latest = read_table(spark, config, "models").agg(F.max("model_version")).first()[0]
    return int(latest or 0) + 1


def train(spark: SparkSession, config: PeaConfig) -> ModelArtifact:
    """Fit the scaler, balance with SMOTE, train with Horovod, save the artifact and
    append it to ``models``.

    Returns
    -------
    ModelArtifact
        The saved artifact, with its ``path`` set.
    """
    start = time.monotonic()
    features = selected_features(spark, config)
    rows = training_rows(spark, config, features).cache()
    fold = config.split.validation_fold
    fit_rows = rows.filter(F.col("fold") != fold)
    val_rows = rows.filter(F.col("fold") == fold)
    transform = fit_transform(fit_rows, features, config.train.quantiles)
    stats = lime_training_stats(rows, features)
    balanced, small_classes = balance_with_smote(fit_rows, features, transform, config)
    balanced = balanced.cache()
    counts = {r["label"]: r["count"] for r in balanced.groupBy("label").count().collect()}
    before = {r["is_attack"]: r["count"] for r in fit_rows.groupBy("is_attack").count().collect()}
    logger.info("train: %d rows after SMOTE (attack %d, benign %d), %d validation rows",
                sum(counts.values()), counts.get(1.0, 0), counts.get(0.0, 0), val_rows.count())
    results = run_horovod(spark, config, balanced, scale_rows(val_rows, features, transform),
                          len(features))
    balanced.unpersist()
    chief = results[0]
    model = build_model(len(features), config.train.conv_filters, config.train.kernel_size,
                        config.train.lstm_units, config.train.dropout)
    model.set_weights(chief["weights"])
    version = _next_version(spark, config)
    history = chief["history"]
    artifact = ModelArtifact(
        version=version,
        features=features,
        display_names=[DISPLAY_NAMES[f] for f in features],
        transform=transform,
        lime_stats=stats,
        threshold=config.train.threshold,
        architecture={"conv_filters": config.train.conv_filters,
                      "kernel_size": config.train.kernel_size,
                      "lstm_units": config.train.lstm_units, "dropout": config.train.dropout},
        training={"rows": int(fit_rows.count()), "rows_after_smote": int(sum(counts.values())),
                  "validation_rows": int(val_rows.count()), "epochs": len(history["loss"]),
                  "best_val_loss": float(min(history["val_loss"])), "seed": config.seed,
                  "num_proc": len(results), "history": history,
                  "ranks": [{"rank": r["rank"], **r["process"]} for r in results],
                  "smote_k": config.train.smote_k,
                  "validation_fold": fold,
                  "splits_fingerprint": splits_fingerprint(spark, config),
                  "attack_classes_below_smote_k": small_classes,
                  "class_counts_before_smote": {"benign": int(before.get(0, 0)),
                                                "attack": int(before.get(1, 0))},
                  "class_counts_after_smote": {"benign": int(counts.get(0.0, 0)),
                                               "attack": int(counts.get(1.0, 0))}},
        packages=package_versions(),
    )
    if config.train.tune_threshold:
        artifact.threshold, f1 = tune_threshold(model, artifact, val_rows, config)
        artifact.training["validation_f1"] = f1
        logger.info("train: decision threshold %.2f maximises validation F1 (%.4f)",
                    artifact.threshold, f1)
    rows.unpersist()
    folder = table_path(config, "_models") / f"v{version}"
    artifact.save(folder, model)
    _record_model(spark, config, artifact)
    logger.info("train: model v%d saved to %s after %d epochs (best val_loss %.4f) in %.1f s",
                version, folder, artifact.training["epochs"], artifact.training["best_val_loss"],
                time.monotonic() - start)
    return artifact


def best_f1_threshold(y_true: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """Threshold in 0.01 steps from 0.01 to 0.99 that maximises F1; ties go to the one
    nearest 0.5. Returns (threshold, F1)."""
    from sklearn.metrics import f1_score

    thresholds = np.round(np.arange(1, 100) / 100, 2)
    scores = np.array([f1_score(y_true, probability >= t, zero_division=0.0)
                       for t in thresholds])
    best = np.flatnonzero(scores == scores.max())
    choice = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(thresholds[choice]), float(scores[choice])


def tuned_threshold(y_true: np.ndarray, probability: np.ndarray, tune: bool,
                    default: float) -> float:
    """Return :func:`best_f1_threshold` of validation rows, or ``default`` when tuning is off
    or the rows hold one class only."""
    if not tune or len(np.unique(y_true)) < 2:
        return default
    threshold, _ = best_f1_threshold(y_true, probability)
    return threshold


def tune_threshold(model: Any, artifact: ModelArtifact, val_rows: DataFrame,
                   config: PeaConfig) -> tuple[float, float]:
    """Choose the decision threshold on the validation fold (never on the test split).

    Notes
    -----
    Collects the validation fold's features to the driver (15 doubles a row).
    """
    from pea_spark.artifact import predict_probabilities

    frame = val_rows.select(*artifact.features, "is_attack").toPandas()
    if frame["is_attack"].nunique() < 2:
        logger.warning("train: validation fold has one class only; threshold stays %.2f",
                       artifact.threshold)
        return artifact.threshold, float("nan")
    probability = predict_probabilities(model, artifact,
                                        frame[artifact.features].to_numpy(np.float64),
                                        config.score.batch_size)
    return best_f1_threshold(frame["is_attack"].to_numpy(), probability)


def _record_model(spark: SparkSession, config: PeaConfig, artifact: ModelArtifact) -> None:
    row = {
        "model_version": artifact.version,
        "created_at": datetime.now(UTC),
        "artifact_path": artifact.path,
        "features": artifact.features,
        "display_names": artifact.display_names,
        "threshold": artifact.threshold,
        "train_rows": artifact.training["rows"],
        "train_rows_after_smote": artifact.training["rows_after_smote"],
        "epochs": artifact.training["epochs"],
        "best_val_loss": artifact.training["best_val_loss"],
        "seed": artifact.training["seed"],
        "packages": artifact.packages,
    }
    schema = ("model_version int, created_at timestamp, artifact_path string, "
              "features array<string>, display_names array<string>, threshold double, "
              "train_rows long, train_rows_after_smote long, epochs int, best_val_loss double, "
              "seed int, packages map<string,string>")
    write_table(spark.createDataFrame([row], schema), config, "models", mode="append")


def latest_artifact(spark: SparkSession, config: PeaConfig,
                    version: int | None = None) -> ModelArtifact:
    """Load the artifact of ``version``, or of the newest model in ``models``."""
    from pea_spark.artifact import load_artifact

    models = read_table(spark, config, "models")
    if version is None:
        version = models.agg(F.max("model_version")).first()[0]
    if version is None:
        raise FileNotFoundError(f"table {config.database}.models is empty: run `pea train` first")
    versions = sorted(r[0] for r in models.select("model_version").distinct().collect())
    if int(version) not in versions:
        raise ValueError(f"model version {version} not found in {config.database}.models: "
                         f"the versions there are {', '.join(map(str, versions))}")
    return load_artifact(Path(table_path(config, "_models")) / f"v{int(version)}")
