"""pea-spark: explainable CNN-LSTM intrusion detection on Apache Spark.

Each stage is a function of its own module taking a SparkSession and a
:class:`PeaConfig`: ``ingest.ingest``, ``clean.clean``, ``selection.select``,
``split.split``, ``train.train``, ``evaluate.evaluate``, ``score.score`` and
``explain.explain``; :func:`run_pipeline` runs them in order. Heavy libraries
(TensorFlow, Horovod, LIME) load only when a stage needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

__all__ = ["PeaConfig", "load_config", "create_session", "run_pipeline"]

_LOCATIONS = {
    "PeaConfig": "pea_spark.config",
    "load_config": "pea_spark.config",
    "create_session": "pea_spark.session",
    "run_pipeline": "pea_spark.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'pea_spark' has no attribute {name!r}")
