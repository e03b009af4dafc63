"""Random Forest baseline: Spark ML's RandomForestClassifier on the CNN-LSTM's rows and features.

Tree ensembles reach about 0.99 F1 on CICIDS2017 in published detection work.
So the CNN-LSTM is reported next to one trained on exactly its inputs: the
same selected features, the same training rows (the train split less the
validation fold) and the same test split. Trees need no scaling and no SMOTE,
so the forest reads the raw feature values.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
from pyspark.ml.classification import RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.train import training_rows

__all__ = ["random_forest_predictions"]

logger = logging.getLogger(__name__)


def random_forest_predictions(spark: SparkSession, config: PeaConfig, features: list[str],
                              flows: DataFrame, validation_fold: int) -> pd.DataFrame:
    """Train the forest on the training folds and return its attack probability for ``flows``.

    Parameters
    ----------
    flows : DataFrame
        Rows to predict, with ``flow_key``, ``features``, ``split``, ``label``
        and ``is_attack``.
    validation_fold : int
        The fold the CNN-LSTM validated on, left out of the forest's training rows too.

    Returns
    -------
    pandas.DataFrame
        ``flow_key``, ``split``, ``label``, ``is_attack`` and ``probability``.
    """
    start = time.monotonic()
    rows = training_rows(spark, config, features)
    fit_rows = rows.filter(F.col("fold") != validation_fold)
    assembler = VectorAssembler(inputCols=list(features), outputCol="_features")
    forest = RandomForestClassifier(
        featuresCol="_features", labelCol="is_attack", probabilityCol="_probability",
        numTrees=config.evaluate.baseline_trees, maxDepth=config.evaluate.baseline_max_depth,
        seed=config.seed)
    model = forest.fit(assembler.transform(fit_rows.withColumn("is_attack",
                                                               F.col("is_attack").cast("double"))))
    predicted = model.transform(assembler.transform(flows)).select(
        "flow_key", "split", "label", "is_attack",
        vector_to_array("_probability")[1].alias("probability"))
    frame = predicted.toPandas()
    logger.info("evaluate: Random Forest baseline (%d trees, depth %d) trained and applied to "
                "%d flows in %.1f s", config.evaluate.baseline_trees,
                config.evaluate.baseline_max_depth, len(frame), time.monotonic() - start)
    return frame
