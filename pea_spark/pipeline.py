"""Run every stage in order: ingest, clean, select, split, train, evaluate, crossval (when
enabled), score, explain."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from pea_spark.clean import clean
from pea_spark.config import PeaConfig
from pea_spark.crossval import crossval
from pea_spark.evaluate import evaluate
from pea_spark.example import write_example_archive
from pea_spark.explain import explain
from pea_spark.ingest import ingest
from pea_spark.score import score
from pea_spark.selection import select
from pea_spark.split import split
from pea_spark.train import train

__all__ = ["run_pipeline", "pipeline_steps", "example_inputs"]

logger = logging.getLogger(__name__)


def example_inputs(config: PeaConfig) -> list[Path]:
    """Write the synthetic example archive under the warehouse and return its files."""
    folder = config.warehouse_path / "_example_archive"
    files = write_example_archive(folder, seed=config.seed)
    logger.warning("no --input given: running on the built-in SYNTHETIC example archive "
                   "(%d files in %s); pass --input PATH to use your own CICFlowMeter CSVs",
                   len(files), folder)
    return files


def pipeline_steps(spark: SparkSession, config: PeaConfig,
                   sources: list[str | Path]) -> list[tuple[str, Callable[[], Any]]]:
    """List the stages of ``pea run`` on ``sources``, in order, as (name, callable) pairs.

    The score and explain stages read the same CSV inputs, so every input flow
    gets a prediction, duplicates included. Crossval returns None when
    ``crossval.enabled`` is false.
    """
    return [
        ("ingest", lambda: ingest(spark, config, sources)),
        ("clean", lambda: clean(spark, config)),
        ("select", lambda: select(spark, config)),
        ("split", lambda: split(spark, config)),
        ("train", lambda: train(spark, config).version),
        ("evaluate", lambda: evaluate(spark, config)),
        ("crossval", lambda: crossval(spark, config) if config.crossval.enabled else None),
        ("score", lambda: score(spark, config, sources)),
        ("explain", lambda: explain(spark, config, sources)),
    ]


def run_pipeline(spark: SparkSession, config: PeaConfig,
                 inputs: list[str | Path] | None = None) -> dict[str, Any]:
    """Run all stages of :func:`pipeline_steps` on ``inputs`` (the example archive when None).

    Returns
    -------
    dict
        The summary each stage returned, by stage name.
    """
    start = time.monotonic()
    sources: list[str | Path] = list(inputs) if inputs else list(example_inputs(config))
    summary: dict[str, Any] = {}
    steps = pipeline_steps(spark, config, sources)
    for number, (name, step) in enumerate(steps, start=1):
        logger.info("run: step %d/%d: %s", number, len(steps), name)
        summary[name] = step()
    logger.info("run: all %d steps done in %.1f s", len(steps), time.monotonic() - start)
    return summary
