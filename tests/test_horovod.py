"""Horovod on Spark: two real ranks (Gloo), each fed its own Petastorm shard."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pyspark.sql import functions as F

from pea_spark.artifact import build_model
from pea_spark.clean import clean
from pea_spark.ingest import ingest
from pea_spark.selection import select
from pea_spark.split import split
from pea_spark.train import fit_transform, run_horovod, scale_rows, training_rows
from tests.conftest import SEED, make_config


@pytest.fixture(scope="module")
def rank_results(spark, real_subset, tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("wh_horovod"), "train.epochs=2",
                         "select.top_k=8")
    ingest(spark, config, [real_subset])
    clean(spark, config)
    features = select(spark, config)
    split(spark, config)
    rows = training_rows(spark, config, features)
    transform = fit_transform(rows, features, config.train.quantiles)
    train_df = scale_rows(rows.filter(F.col("fold") != 0), features, transform)
    val_df = scale_rows(rows.filter(F.col("fold") == 0), features, transform)
    return config, features, run_horovod(spark, config, train_df, val_df, len(features))


def test_horovod_runs_two_ranks_in_separate_processes(rank_results):
    _, _, results = rank_results
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["size"] for r in results] == [2, 2]
    pids = {r["pid"] for r in results}
    assert len(pids) == 2
    assert os.getpid() not in pids


def test_horovod_ranks_trained_every_epoch(rank_results):
    _, _, results = rank_results
    for result in results:
        assert len(result["history"]["loss"]) == 2
        assert result["steps_per_epoch"] >= 1
        assert all(np.isfinite(result["history"]["loss"]))


def test_horovod_ranks_end_with_same_weights(rank_results):
    _, _, results = rank_results
    first, second = results[0]["weights"], results[1]["weights"]
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert results[0]["history"]["val_loss"] == results[1]["history"]["val_loss"]


def test_horovod_weights_moved_from_initial(rank_results):
    import tensorflow as tf

    config, features, results = rank_results
    tf.keras.utils.set_random_seed(SEED)
    initial = build_model(len(features), config.train.conv_filters, config.train.kernel_size,
                          config.train.lstm_units, config.train.dropout).get_weights()
    changed = [not np.array_equal(a, b) for a, b in zip(initial, results[0]["weights"],
                                                         strict=True)]
    assert all(changed)


def test_petastorm_cache_removes_dead_processes(tmp_path):
    import socket

    from pea_spark.train import _petastorm_cache

    config = make_config(tmp_path)
    root = tmp_path / config.database / "_petastorm"
    host = socket.gethostname()
    # PID 2**22 + 1 is above Linux's maximum PID, so no process has it.
    stale = root / f"{host}-{2**22 + 1}"
    alive = root / f"{host}-{os.getppid()}"
    other_host = root / f"another-host-{2**22 + 1}"
    for folder in (stale, alive, other_host):
        (folder / "part").mkdir(parents=True)
    cache = _petastorm_cache(config)
    assert cache == root / f"{host}-{os.getpid()}"
    assert cache.is_dir()
    assert not stale.exists()
    assert alive.is_dir()
    assert other_host.is_dir()
