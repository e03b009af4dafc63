"""SparkSession with Delta Lake, and the catalog of pea-spark's tables."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from pea_spark.config import PeaConfig

__all__ = [
    "TABLES",
    "TABLE_WRITERS",
    "create_session",
    "delta_package",
    "read_table",
    "register_tables",
    "sql_string",
    "submitted_master",
    "table_exists",
    "table_path",
    "write_table",
]

logger = logging.getLogger(__name__)

# Every Delta table pea-spark writes, by its name in the catalog database.
TABLES = (
    "bronze",
    "quarantine",
    "ingest_audit",
    "silver",
    "clean_report",
    "clean_summary",
    "label_conflicts",
    "feature_ranking",
    "splits",
    "models",
    "metrics",
    "evaluation_predictions",
    "class_metrics",
    "cv_metrics",
    "predictions",
    "scored_files",
    "explanations",
)

# The pea stage that writes each table.
TABLE_WRITERS = {
    "bronze": "ingest", "quarantine": "ingest", "ingest_audit": "ingest",
    "silver": "clean", "clean_report": "clean", "clean_summary": "clean",
    "label_conflicts": "clean", "feature_ranking": "select", "splits": "split",
    "models": "train", "metrics": "evaluate", "evaluation_predictions": "evaluate",
    "class_metrics": "evaluate", "cv_metrics": "crossval", "predictions": "score",
    "scored_files": "score", "explanations": "explain",
}


def create_session(config: PeaConfig) -> SparkSession:
    """Create (or reuse) a SparkSession with Delta Lake and register the warehouse tables.

    Delta's jars are resolved from Maven Central by Spark's Ivy on first use and
    cached under ``~/.ivy2.5.2`` (Spark 4's Ivy folder); set ``spark.jars`` in
    ``spark.conf`` to use local jars.

    Under ``spark-submit`` the driver JVM already runs when this is called, so its
    master (``--master``, or spark-submit's own default ``local[*]``) is used and
    ``spark.master`` is ignored, and the Delta jars must come from spark-submit's
    ``--packages`` (see ``delta_package``).
    """
    from delta import configure_spark_with_delta_pip

    # Executors must run the driver's interpreter, which has the project installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warehouse = config.warehouse_path
    submitted = submitted_master()
    builder = SparkSession.builder
    if submitted is None:
        check_master_reachable(config.spark.master)
        builder = builder.master(config.spark.master)
    else:
        _require_delta_jars()
        logger.info("session: using spark-submit's master %s (spark.master %s applies to pea "
                    "commands only)", submitted, config.spark.master)
    builder = (
        builder.appName(config.spark.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.warehouse.dir", str(warehouse / "_spark"))
        .config("spark.sql.shuffle.partitions", str(config.spark.shuffle_partitions))
        .config("spark.driver.memory", config.spark.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in config.spark.conf.items():
        builder = builder.config(key, value)
    if "spark.jars" in config.spark.conf:
        spark = builder.getOrCreate()
    else:
        spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _quiet_codegen_fallback(spark)
    register_tables(spark, config)
    from pea_spark.transaction import recover_if_abandoned

    # An ingest killed between its commits left a journal: undo it before any stage reads.
    recover_if_abandoned(spark, config)
    return spark


def check_master_reachable(master: str) -> None:
    """Raise ValueError when ``master`` is a standalone master URL where no master listens.

    Spark would retry for about a minute and then fail with a Py4J traceback.
    """
    match = re.fullmatch(r"spark://([^:/]+):(\d+)", master)
    if not match:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=5):
            return
    except OSError as error:
        reason = error.strerror or str(error)
    raise ValueError(f"no Spark master listens at {master} ({reason}): start the cluster "
                     f"first (pea --config conf/cluster.yaml cluster start), or run locally "
                     f"with --set spark.master=local[*]")


def submitted_master() -> str | None:
    """Return spark-submit's master when spark-submit started this Python process, else None.

    spark-submit starts the driver JVM first and hands its Py4J gateway to Python in
    ``PYSPARK_GATEWAY_PORT``; its resolved master is the JVM's ``spark.master``
    system property.
    """
    from pyspark import SparkContext

    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    SparkContext._ensure_initialized()
    return SparkContext._jvm.java.lang.System.getProperty("spark.master")


def delta_package() -> str:
    """Return the Maven coordinate of the Delta jars that match the installed delta-spark.

    Pass it to ``spark-submit --packages``, because under spark-submit the driver's
    class path is fixed before pea-spark's code runs.
    """
    from importlib.metadata import version

    return f"io.delta:delta-spark_2.13:{version('delta-spark')}"


def _require_delta_jars() -> None:
    from py4j.protocol import Py4JJavaError
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    try:
        jvm.java.lang.Class.forName("io.delta.sql.DeltaSparkSessionExtension", False,
                                    jvm.java.lang.Thread.currentThread().getContextClassLoader())
    except Py4JJavaError:
        raise ValueError(
            "Delta Lake's jars are not on the spark-submit driver's class path: add "
            f"`--packages {delta_package()}` to the spark-submit command (or --jars with "
            "local copies of delta-spark and delta-storage)") from None


def _quiet_codegen_fallback(spark: SparkSession) -> None:
    # Cleaning builds one expression over 76 columns, which exceeds the JVM's 64 KB
    # method limit; Spark then falls back to interpreted evaluation with the same
    # results and logs the whole generated plan as a warning. Only errors are kept.
    jvm = spark.sparkContext._jvm
    # CodeGenerator logs the 64 KB compile failure itself at ERROR, so it is set to OFF.
    levels = {"org.apache.spark.sql.execution.WholeStageCodegenExec": "ERROR",
              "org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator": "OFF"}
    for name, level in levels.items():
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            name, jvm.org.apache.logging.log4j.Level.getLevel(level))


def sql_string(text: str) -> str:
    """Quote ``text`` as a Spark SQL string literal, escaping backslashes and quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def table_path(config: PeaConfig, name: str) -> Path:
    """Return the folder of Delta table ``name`` under the warehouse."""
    return config.warehouse_path / config.database / name


def register_tables(spark: SparkSession, config: PeaConfig) -> list[str]:
    """Register every Delta table found in the warehouse, and the analyst views over them.

    Spark's default catalog lives in memory, so each new session registers the
    tables again from their folders. ``SELECT * FROM pea.predictions`` then works
    in any session that points at the same warehouse. A folder whose
    ``_delta_log`` has no commit (a write killed before its first commit) is
    skipped with a warning.

    Returns
    -------
    list of str
        Names of the tables registered.
    """
    database = config.database
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    registered = []
    for name in TABLES:
        path = table_path(config, name)
        if (path / "_delta_log").is_dir() and not table_exists(config, name):
            logger.warning("table folder %s has no committed version (a write was interrupted "
                           "before its first commit); it is skipped: delete the folder to "
                           "clear this warning", path)
        if table_exists(config, name):
            spark.sql(f"CREATE TABLE IF NOT EXISTS {database}.{name} USING DELTA "
                      f"LOCATION {sql_string(str(path))}")
            registered.append(name)
    from pea_spark.views import create_views

    create_views(spark, config, registered)
    return registered


def write_table(
    df: DataFrame,
    config: PeaConfig,
    name: str,
    mode: str = "overwrite",
    replace_where: str | None = None,
) -> Path:
    """Write ``df`` to the Delta table ``name`` and register it in the catalog.

    Parameters
    ----------
    mode : {"overwrite", "append"}
        Delta save mode; ``overwrite`` also replaces the schema.
    replace_where : str, optional
        With ``mode="overwrite"``, replace only the rows matching this predicate.
    """
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}: expected one of {', '.join(TABLES)}")
    path = table_path(config, name)
    writer = df.write.format("delta").mode(mode)
    if replace_where is not None:
        writer = writer.option("replaceWhere", replace_where)
    elif mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    else:
        writer = writer.option("mergeSchema", "true")
    writer.save(str(path))
    register_tables(df.sparkSession, config)
    return Path(path)


def table_exists(config: PeaConfig, name: str) -> bool:
    """Tell whether Delta table ``name`` exists in the warehouse with at least one commit."""
    log = table_path(config, name) / "_delta_log"
    return log.is_dir() and any(log.glob("*.json"))


def read_table(spark: SparkSession, config: PeaConfig, name: str) -> DataFrame:
    """Read Delta table ``name``, or raise FileNotFoundError naming the stage that writes it."""
    if not table_exists(config, name):
        stage = TABLE_WRITERS.get(name, "the stage that writes it")
        raise FileNotFoundError(
            f"table {config.database}.{name} not found in warehouse {config.warehouse_path}: "
            f"run `pea {stage}` first, or point --warehouse at the folder that holds it"
        )
    return spark.read.format("delta").load(str(table_path(config, name)))

