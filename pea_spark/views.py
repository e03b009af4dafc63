"""Analyst views over the predictions and explanations tables.

The views live in the session's catalog next to the Delta tables, so ``pea sql``,
``pea serve-sql`` (the Thrift JDBC/ODBC server) and notebooks query them by name.
Each view is created only when every table it reads exists.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from pea_spark.clean import _DASH_VARIANTS
from pea_spark.config import PeaConfig

__all__ = ["VIEWS", "VIEW_SOURCES", "create_views", "label_sql"]

# Each view, the tables it reads, in the order their stages run.
VIEW_SOURCES: dict[str, tuple[str, ...]] = {
    "feature_influence": ("explanations",),
    "attack_top_features_by_file": ("predictions", "explanations"),
    "attack_top_features_by_day": ("predictions", "explanations"),
    "top_attack_flows": ("bronze", "predictions", "explanations"),
    "attack_counts": ("bronze", "predictions"),
}
VIEWS = tuple(VIEW_SOURCES)


def label_sql(raw: str) -> str:
    """SQL expression of the label that ``pea clean`` stores for the raw bronze label ``raw``.

    It mirrors :func:`pea_spark.clean.normalise_label`: trimmed, dash variants
    written as `` - ``, runs of white space as one space, BENIGN in upper case,
    and an empty label as NULL.
    """
    dash = "'" + _DASH_VARIANTS.replace("\\", "\\\\") + "'"
    text = f"regexp_replace(regexp_replace(trim({raw}), {dash}, ' - '), '\\\\s+', ' ')"
    return f"CASE WHEN upper({text}) = 'BENIGN' THEN 'BENIGN' ELSE nullif({text}, '') END"


def _labels(db: str) -> str:
    # One row per ingested line: predictions of CSV files carry the same source_file
    # and line_number, also for exact duplicates that silver stores only once.
    # NOTE: the join has no content check, so a file changed after ingest and scored
    # again gets the labels of its ingested lines until it is ingested again.
    return (f"SELECT source_file, line_number, {label_sql('label')} AS label "
            f"FROM {db}.bronze")


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
               p.flow_key, p.source_file, p.line_number, p.attack_probability, l.label,
               p.scored_at, e.top_feature, e.top_condition, e.top_weight, e.explanation
        FROM {db}.predictions p
        LEFT JOIN ({_labels(db)}) l
          ON l.source_file = p.source_file AND l.line_number = p.line_number
        LEFT JOIN explained e
          ON e.flow_key = p.flow_key AND e.model_version = p.model_version
        WHERE p.is_attack_predicted = 1"""


def _attack_counts(db: str) -> str:
    return f"""
        SELECT p.model_version, p.source_file, l.label, p.predicted_label,
               COUNT(*) AS flows,
               AVG(p.attack_probability) AS mean_attack_probability
        FROM {db}.predictions p
        LEFT JOIN ({_labels(db)}) l
          ON l.source_file = p.source_file AND l.line_number = p.line_number
        GROUP BY p.model_version, p.source_file, l.label, p.predicted_label"""


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
            if not spark.catalog.tableExists(f"{db}.{name}"):
                spark.sql(f"CREATE VIEW {db}.{name} AS {view_sql(name, db)}")
            created.append(name)
        else:
            spark.sql(f"DROP VIEW IF EXISTS {db}.{name}")
    return created
