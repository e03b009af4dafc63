"""Shared fixtures: one local SparkSession with Delta, and real CICIDS2017 rows.

Tests that read the real flow records fail, and never skip, when the folder
``../shared/data`` beside the repository is missing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pea_spark.config import PeaConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
ORIGINAL = "cicids2017"
ML_FILE = "MachineLearningCVE/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv"
WEB_FILE = "web_attacks/web_attacks_balanced.csv"
GROUPED_FILE = "grouped_sample/CICIDS2017_sample.csv"
REAL_FILES = [ML_FILE, WEB_FILE, GROUPED_FILE]

# Every SUBSET_STRIDE-th data line of each real file goes into the small real subset.
SUBSET_STRIDE = 12
SEED = 42


def require_shared_data() -> Path:
    """Return the real data folder, failing the test when it is absent."""
    folder = SHARED_DATA / ORIGINAL
    if not folder.is_dir():
        pytest.fail(f"real CICIDS2017 data not found at {folder}: these tests need the "
                    "shared data folder beside the repository (../shared/data)")
    return folder


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of the three real CICIDS2017 files."""
    return require_shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """All of ../shared/data: the original release in three layouts and the 2021 release."""
    require_shared_data()
    return SHARED_DATA


def write_subset(source: Path, target: Path, stride: int, drop_label: bool = False) -> int:
    """Copy the header and every ``stride``-th data line of a real file, byte for byte.

    Lines with a non-finite rate are copied too. Returns the number of data lines written.
    """
    lines = source.read_bytes().splitlines(keepends=True)
    kept = [line for number, line in enumerate(lines[1:], start=1)
            if number % stride == 0 or b"Infinity" in line or b"NaN" in line]
    if drop_label:
        lines = [line.rstrip(b"\r\n").rsplit(b",", 1)[0] + b"\n" for line in lines]
        kept = [line.rstrip(b"\r\n").rsplit(b",", 1)[0] + b"\n" for line in kept]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(lines[0] + b"".join(kept))
    return len(kept)


@pytest.fixture(scope="session")
def real_subset(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a stride sample of the three real files (about 2,000 real rows)."""
    folder = tmp_path_factory.mktemp("real_subset")
    for name in REAL_FILES:
        write_subset(real_data / name, folder / name, SUBSET_STRIDE)
    return folder


@pytest.fixture(scope="session")
def unlabelled_subset(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same real rows as ``real_subset`` with the label column cut off."""
    folder = tmp_path_factory.mktemp("unlabelled_subset")
    for name in REAL_FILES:
        write_subset(real_data / name, folder / name, SUBSET_STRIDE, drop_label=True)
    return folder


def make_config(warehouse: Path, *overrides: str) -> PeaConfig:
    """Test configuration: a fresh catalog database per call, small and fast settings."""
    # pytest imports this file as both ``conftest`` and ``tests.conftest``, so a counter
    # here would exist twice and repeat names; a random name is unique in the catalog.
    database = f"t{uuid.uuid4().hex[:12]}"
    return load_config(None, [
        f"warehouse={warehouse}", f"database={database}", f"seed={SEED}",
        "spark.master=local[2]", "spark.shuffle_partitions=4", "spark.driver_memory=3g",
        "train.epochs=3", "explain.num_samples=200", "explain.num_features=5",
        *overrides,
    ])


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """One local SparkSession with Delta for the whole test run."""
    from pea_spark.session import create_session

    config = make_config(tmp_path_factory.mktemp("warehouse_session"))
    session = create_session(config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def trained_subset(spark, real_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """``real_subset`` ingested, cleaned, selected, split and trained for 10 epochs.

    Training takes most of a minute on 2 cores, so the modules that only need
    a trained model share this one. Returns the config and each stage's summary.
    """
    from pea_spark.clean import clean
    from pea_spark.ingest import ingest
    from pea_spark.selection import select
    from pea_spark.split import split
    from pea_spark.train import train

    config = make_config(tmp_path_factory.mktemp("wh_trained"), "train.epochs=10")
    summary = {
        "ingest": ingest(spark, config, [real_subset]),
        "clean": clean(spark, config),
        "select": select(spark, config),
        "split": split(spark, config),
        "train": train(spark, config),
    }
    return config, summary


# Tables that training leaves, copied to start another database from the trained subset.
TRAINED_TABLES = ["ingest_audit", "silver", "feature_ranking", "splits", "models", "_models"]
# Cross-validation models train this many epochs in the tests: enough to check the tables.
CV_EPOCHS = 2


def copy_trained_tables(source: PeaConfig, target: PeaConfig) -> None:
    """Copy the trained subset's tables into another warehouse database.

    Delta paths are relative, so a copied table folder is a complete table.
    """
    from pea_spark.session import table_path

    for name in TRAINED_TABLES:
        shutil.copytree(table_path(source, name), table_path(target, name))


@pytest.fixture(scope="session")
def evaluated_subset(spark, trained_subset, tmp_path_factory: pytest.TempPathFactory):
    """A copy of ``trained_subset`` evaluated (with the Random Forest baseline),
    cross-validated with and without SMOTE for ``CV_EPOCHS`` epochs, scored and explained.

    Returns the config and the evaluate and crossval summaries.
    """
    from pea_spark.crossval import crossval
    from pea_spark.evaluate import evaluate
    from pea_spark.explain import explain
    from pea_spark.score import score

    source, _ = trained_subset
    config = make_config(tmp_path_factory.mktemp("wh_evaluated"), "evaluate.baseline=true",
                         "crossval.ablation=true")
    copy_trained_tables(source, config)
    summary = {"evaluate": evaluate(spark, config)}
    short = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=CV_EPOCHS))
    summary["crossval"] = crossval(spark, short)
    score(spark, config)
    explain(spark, config)
    return config, summary


@pytest.fixture(scope="session")
def explained_subset(spark, trained_subset, real_subset: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> PeaConfig:
    """A copy of ``trained_subset`` with bronze, the real subset's CSV files scored
    and the predicted attacks explained: the tables the analyst views read.

    Returns the config.
    """
    from pea_spark.explain import explain
    from pea_spark.score import score
    from pea_spark.session import register_tables, table_path

    source, _ = trained_subset
    config = make_config(tmp_path_factory.mktemp("wh_explained"))
    copy_trained_tables(source, config)
    shutil.copytree(table_path(source, "bronze"), table_path(config, "bronze"))
    register_tables(spark, config)
    score(spark, config, [real_subset])
    explain(spark, config, [real_subset])
    return config


def pea_command(*args: str) -> list[str]:
    """The command line that runs ``pea`` with ``args`` in this interpreter."""
    return [sys.executable, "-m", "pea_spark.cli", *args]


def run_pea(*args: str, cwd: Path | None = None, timeout: int = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the ``pea`` command line in a new process and capture its output."""
    env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning", **(env or {}))
    return subprocess.run(pea_command(*args), cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
