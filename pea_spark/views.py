"""Analyst views over the predictions and explanations tables.

The views live in the session's catalog next to the Delta tables, so ``pea sql``,
``pea serve-sql`` (the Thrift JDBC/ODBC server) and notebooks query them by name.
Each view is created only when every table it reads exists.
"""

from __future__ import annotations

import hashlib
import logging

from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from pea_spark.config import PeaConfig

__all__ = ["VIEWS", "VIEW_SOURCES", "create_views"]

logger = logging.getLogger(__name__)

# Each view, the tables it reads, in the order their stages run.
VIEW_SOURCES: dict[str, tuple[str, ...]] = {
    "feature_influence": ("explanations",),
    "attack_top_features_by_file": ("predictions", "explanations"),
    "attack_top_features_by_day": ("predictions", "explanations"),
    "top_attack_flows": ("predictions", "explanations"),
    "attack_counts": ("predictions",),
}
VIEWS = tuple(VIEW_SOURCES)
# View property that contains a digest of the view's SQL, to tell when it must be replaced.
_DIGEST_PROPERTY = "pea.definition_sha256"


def _feature_influence(db: str) -> str:
    return (f"SELECT model_version, feature, AVG(ABS(weight)) AS mean_abs_weight, "
            f"COUNT(DISTINCT flow_key) AS flows "
            f"FROM {db}.explanations GROUP BY model_version, feature")


def _attack_top_features(db: str, group: str) -> str:
    # explain writes one row per flow and rank, each rank a different feature, so
    # COUNT(*) per feature counts flows.
    return f"""
        WITH attack_weights AS (
            SELECT p.model_version, p.source_file, to_date(p.scored_at) AS scored_date,
                   e.feature, e.display_name, e.rank, e.weight
            FROM {db}.predictions p
            JOIN {db}.explanations e
              ON e.flow_key = p.flow_key AND e.model_version = p.model_version
            WHERE p.is_attack_predicted = 1
        )
        SELECT model_version, {group}, feature, display_name,
               ROW_NUMBER() OVER (PARTITION BY model_version, {group}
                                  ORDER BY AVG(ABS(weight)) DESC, feature) AS feature_rank,
               COUNT(*) AS attack_flows,
               AVG(ABS(weight)) AS mean_abs_weight,
               AVG(weight) AS mean_weight,
               COUNT_IF(rank = 1) AS top_ranked_flows
        FROM attack_weights
        GROUP BY model_version, {group}, feature, display_name"""


def _top_attack_flows(db: str) -> str:
    return f"""
        WITH explained AS (
            SELECT flow_key, model_version,
                   MIN_BY(display_name, rank) AS top_feature,
                   MIN_BY(condition, rank) AS top_condition,
                   MIN_BY(weight, rank) AS top_weight,
                   array_join(transform(array_sort(collect_list(struct(rank, condition, weight))),
                                        x -> format_string('%s (%+.4f)', x.condition, x.weight)),
                              '; ') AS explanation
            FROM {db}.explanations
            GROUP BY flow_key, model_version
        )
        SELECT p.model_version,
               ROW_NUMBER() OVER (PARTITION BY p.model_version
                                  ORDER BY p.attack_probability DESC, p.flow_key) AS flow_rank,
               p.flow_key, p.source_file, p.line_number, p.attack_probability, p.label,
               p.scored_at, e.top_feature, e.top_condition, e.top_weight, e.explanation
        FROM {db}.predictions p
        LEFT JOIN explained e
          ON e.flow_key = p.flow_key AND e.model_version = p.model_version
        WHERE p.is_attack_predicted = 1"""


def _attack_counts(db: str) -> str:
    return f"""
        SELECT model_version, source_file, label, predicted_label,
               COUNT(*) AS flows,
               AVG(attack_probability) AS mean_attack_probability
        FROM {db}.predictions
        GROUP BY model_version, source_file, label, predicted_label"""


def view_sql(name: str, db: str) -> str:
    """Return the SELECT statement that defines view ``name`` in database ``db``."""
    builders = {
        "feature_influence": lambda: _feature_influence(db),
        "attack_top_features_by_file": lambda: _attack_top_features(db, "source_file"),
        "attack_top_features_by_day": lambda: _attack_top_features(db, "scored_date"),
        "top_attack_flows": lambda: _top_attack_flows(db),
        "attack_counts": lambda: _attack_counts(db),
    }
    if name not in builders:
        raise ValueError(f"unknown view {name!r}: expected one of {', '.join(VIEWS)}")
    return builders[name]()


def _view_digest(spark: SparkSession, name: str) -> str | None:
    """Return the definition digest stored on view ``name``, or None when it does not exist."""
    if not spark.catalog.tableExists(name):
        return None
    rows = spark.sql(f"SHOW TBLPROPERTIES {name}").collect()
    return {row["key"]: row["value"] for row in rows}.get(_DIGEST_PROPERTY)


def create_views(spark: SparkSession, config: PeaConfig, tables: list[str]) -> list[str]:
    """Create each view whose source tables are all in ``tables``, unless it exists.

    The views are permanent in the session's catalog (not temporary views), so
    every session that shares the catalog, such as the Thrift server's JDBC
    sessions, can query them. Views whose tables are missing are dropped, so that a
    query names the missing view instead of failing on a missing table.

    Returns
    -------
    list of str
        Names of the views that exist after the call.
    """
    db = config.database
    created = []
    for name, sources in VIEW_SOURCES.items():
        if all(source in tables for source in sources):
            # Stages register the tables after each write, so most calls find the view.
            # A view made by an earlier pea-spark, with another definition, is replaced.
            text = view_sql(name, db)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            if _view_digest(spark, f"{db}.{name}") != digest:
                try:
                    spark.sql(f"CREATE OR REPLACE VIEW {db}.{name} "
                              f"TBLPROPERTIES ('{_DIGEST_PROPERTY}' = '{digest}') AS {text}")
                except AnalysisException as error:
                    # A table written by an earlier pea-spark can lack a column, such as
                    # predictions.label, which the next write of that stage adds.
                    logger.warning("view %s.%s is not created: %s. Run the stage that writes "
                                   "%s again.", db, name, str(error).splitlines()[0],
                                   " and ".join(sources))
                    spark.sql(f"DROP VIEW IF EXISTS {db}.{name}")
                    continue
            created.append(name)
        else:
            spark.sql(f"DROP VIEW IF EXISTS {db}.{name}")
    return created
