"""Typed configuration loaded from YAML profiles and ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PeaConfig", "load_config", "ConfigError"]


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


@dataclass
class SparkSettings:
    master: str = "local[*]"
    app_name: str = "pea-spark"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class IngestSettings:
    min_partitions: int = 2
    lock_timeout_s: float = 3600.0


@dataclass
class SelectSettings:
    top_k: int = 15
    vif_max: float = 2.5
    bins: int = 20


@dataclass
class SplitSettings:
    test_fraction: float = 0.2
    folds: int = 5
    validation_fold: int = 0


@dataclass
class TrainSettings:
    num_proc: int = 2
    epochs: int = 80
    batch_size: int = 64
    learning_rate: float = 0.001
    patience: int = 8
    smote_k: int = 5
    quantiles: int = 1000
    smote_partition_rows: int = 200_000
    conv_filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    lstm_units: int = 128
    dropout: float = 0.3
    threads_per_rank: int = 1
    tune_threshold: bool = True
    threshold: float = 0.5


@dataclass
class ScoreSettings:
    batch_size: int = 4096


@dataclass
class ExplainSettings:
    flows: str = "attacks"
    sample_fraction: float = 0.01
    num_features: int = 10
    num_samples: int = 1000
    engine: str = "batch"
    perturbation_sets: int = 4


@dataclass
class EvaluateSettings:
    baseline: bool = True
    baseline_trees: int = 100
    baseline_max_depth: int = 15


@dataclass
class CrossvalSettings:
    enabled: bool = True
    ablation: bool = True


@dataclass
class ClusterSettings:
    host: str = "127.0.0.1"
    master_port: int = 7077
    master_webui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "2g"
    worker_webui_port: int = 8081
    daemon_memory: str = "512m"
    folder: str = "./cluster"
    start_timeout_s: float = 90.0


@dataclass
class PeaConfig:
    """All settings of a pea-spark run; see ``conf/local.yaml`` for their meaning."""

    warehouse: str = "./warehouse"
    database: str = "pea"
    seed: int = 42
    spark: SparkSettings = field(default_factory=SparkSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    select: SelectSettings = field(default_factory=SelectSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    crossval: CrossvalSettings = field(default_factory=CrossvalSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def warehouse_path(self) -> Path:
        """Absolute path of the warehouse folder."""
        return Path(self.warehouse).expanduser().resolve()

    def validate(self) -> None:
        """Raise ConfigError on values that would fail later inside Spark or Horovod."""
        checks = [
            ("select.top_k", self.select.top_k >= 1, "an integer >= 1"),
            ("select.vif_max", self.select.vif_max > 1.0, "a number > 1"),
            ("select.bins", self.select.bins >= 2, "an integer >= 2"),
            ("split.test_fraction", 0 < self.split.test_fraction < 1, "a number in (0, 1)"),
            ("split.folds", self.split.folds >= 2, "an integer >= 2"),
            ("split.validation_fold", 0 <= self.split.validation_fold < self.split.folds,
             "an integer in [0, split.folds)"),
            ("ingest.min_partitions", self.ingest.min_partitions >= 1, "an integer >= 1"),
            ("ingest.lock_timeout_s", self.ingest.lock_timeout_s >= 0, "a number of seconds >= 0"),
            ("train.num_proc", self.train.num_proc >= 1, "an integer >= 1"),
            ("train.learning_rate", self.train.learning_rate > 0, "a number > 0"),
            ("train.dropout", 0 <= self.train.dropout < 1, "a number in [0, 1)"),
            ("train.conv_filters", len(self.train.conv_filters) >= 1
             and min(self.train.conv_filters) >= 1, "a non-empty list of integers >= 1"),
            ("train.kernel_size", self.train.kernel_size >= 1, "an integer >= 1"),
            ("train.lstm_units", self.train.lstm_units >= 1, "an integer >= 1"),
            ("explain.num_features", self.explain.num_features >= 1, "an integer >= 1"),
            ("train.epochs", self.train.epochs >= 1, "an integer >= 1"),
            ("train.batch_size", self.train.batch_size >= self.train.num_proc,
             "an integer >= train.num_proc"),
            ("train.smote_k", self.train.smote_k >= 1, "an integer >= 1"),
            ("train.quantiles", 2 <= self.train.quantiles <= 10_000,
             "an integer from 2 to 10000"),
            ("score.batch_size", self.score.batch_size >= 1, "an integer >= 1"),
            ("train.threshold", 0 < self.train.threshold < 1, "a number in (0, 1)"),
            ("explain.flows", self.explain.flows in ("attacks", "all", "sample"),
             "one of attacks, all, sample"),
            ("explain.sample_fraction", 0 < self.explain.sample_fraction <= 1,
             "a number in (0, 1]"),
            ("explain.num_samples", self.explain.num_samples >= 10, "an integer >= 10"),
            ("explain.engine", self.explain.engine in ("batch", "lime"), "one of batch, lime"),
            ("explain.perturbation_sets", self.explain.perturbation_sets >= 1,
             "an integer >= 1"),
            ("evaluate.baseline_trees", self.evaluate.baseline_trees >= 1, "an integer >= 1"),
            ("evaluate.baseline_max_depth", 1 <= self.evaluate.baseline_max_depth <= 30,
             "an integer from 1 to 30 (Spark ML's limit)"),
            ("cluster.master_port", 1 <= self.cluster.master_port <= 65535,
             "a TCP port from 1 to 65535"),
            ("cluster.master_webui_port", 0 <= self.cluster.master_webui_port <= 65535,
             "a TCP port from 0 (any free port) to 65535"),
            ("cluster.worker_webui_port", 0 <= self.cluster.worker_webui_port <= 65535
             - self.cluster.workers, "a TCP port from 0 (any free port) to 65535 - workers"),
            ("cluster.workers", self.cluster.workers >= 1, "an integer >= 1"),
            ("cluster.worker_cores", self.cluster.worker_cores >= 1, "an integer >= 1"),
            ("cluster.start_timeout_s", self.cluster.start_timeout_s > 0,
             "a number of seconds > 0"),
            ("split.folds", not self.crossval.enabled or self.split.folds >= 3,
             "an integer >= 3 when crossval.enabled is true (each fold trains on the folds "
             "that are neither evaluated nor used for early stopping)"),
        ]
        for key, ok, expected in checks:
            if not ok:
                value = _get(self, key)
                raise ConfigError(f"invalid value {value!r} for {key}: expected {expected}")
        if not self.database.isidentifier():
            raise ConfigError(
                f"invalid value {self.database!r} for database: expected a SQL identifier "
                "such as 'pea'"
            )


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _coerce(key: str, value: Any, expected: Any) -> Any:
    origin = typing.get_origin(expected)
    if expected is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if isinstance(value, bool):
            return value
    elif expected in (int, float, str):
        try:
            if expected is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return expected(value)
        except (TypeError, ValueError):
            pass
    elif origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if isinstance(value, list):
            (item_type,) = typing.get_args(expected)
            return [_coerce(key, item, item_type) for item in value]
    elif origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    name = getattr(expected, "__name__", str(expected))
    raise ConfigError(f"invalid value {value!r} for {key}: expected {name}")


def _apply(target: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise ConfigError(
                f"unknown configuration key {key!r}: expected one of "
                f"{', '.join(sorted(prefix + n for n in names))}"
            )
        expected = hints[name]
        if dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"invalid value {value!r} for {key}: expected a mapping")
            _apply(getattr(target, name), value, prefix=f"{key}.")
        elif typing.get_origin(expected) is dict:
            # Mappings merge, so that --set spark.conf.KEY=VALUE adds one entry.
            setattr(target, name, {**getattr(target, name), **_coerce(key, value, expected)})
        else:
            setattr(target, name, _coerce(key, value, expected))


def _parse_override(text: str) -> dict[str, Any]:
    if "=" not in text:
        raise ConfigError(f"invalid override {text!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    value: Any = raw
    if key.strip().startswith("spark.conf."):
        # Spark setting names contain dots themselves: spark.conf.spark.sql.x=1.
        return {"spark": {"conf": {key.strip()[len("spark.conf."):]: raw}}}
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PeaConfig:
    """Load a YAML profile, apply ``KEY=VALUE`` overrides and validate the result.

    Parameters
    ----------
    path : str or Path, optional
        YAML profile; defaults are used when omitted.
    overrides : list of str, optional
        Dotted assignments such as ``train.epochs=5``, applied after the file.

    Raises
    ------
    ConfigError
        On an unknown key, a value of the wrong type, or an out-of-range value.
    FileNotFoundError
        When ``path`` does not exist.
    """
    config = PeaConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        _apply(config, values)
    for text in overrides or []:
        _apply(config, _parse_override(text))
    config.validate()
    return config
