"""Configuration: profiles, overrides and invalid keys."""

from __future__ import annotations

import pytest

from pea_spark.config import ConfigError, load_config
from tests.conftest import REPO


def test_config_local_profile_matches_defaults():
    assert load_config(REPO / "conf" / "local.yaml") == load_config(None)


def test_config_override_coerces_types():
    config = load_config(None, ["train.epochs=7", "train.threshold=0.7",
                                "train.conv_filters=[16, 32]", "spark.conf={a: b}"])
    assert config.train.epochs == 7
    assert config.train.threshold == 0.7
    assert config.train.conv_filters == [16, 32]
    assert config.spark.conf == {"a": "b"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown configuration key 'train.epoch'"),
        ("train.epochs=three", "invalid value 'three' for train.epochs: expected int"),
        ("split.test_fraction=1.5", r"invalid value 1.5 for split.test_fraction"),
        ("explain.flows=some", "expected one of attacks, all, sample"),
        ("database=pea-prod", "expected a SQL identifier"),
        ("epochs", "expected KEY=VALUE"),
        ("explain.num_features=0", "invalid value 0 for explain.num_features"),
        ("train.dropout=7", "invalid value 7.0 for train.dropout"),
        ("train.conv_filters=[]", "invalid value .* for train.conv_filters"),
        ("cluster.master_prot=7177", "unknown configuration key 'cluster.master_prot'"),
        ("cluster.master_port=0", "invalid value 0 for cluster.master_port"),
        ("cluster.master_webui_port=70000", "invalid value 70000 for cluster.master_webui_port"),
        ("cluster.workers=0", "invalid value 0 for cluster.workers"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "bad-choice", "bad-database", "no-equals",
         "zero-features", "dropout", "no-filters", "cluster-typo", "cluster-port-zero",
         "cluster-port-range", "cluster-no-workers"],
)
def test_config_rejects_invalid_override(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_config_rejects_unknown_key_in_file(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("train:\n  epochz: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown configuration key 'train.epochz'"):
        load_config(profile)


def test_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="configuration file not found"):
        load_config(tmp_path / "absent.yaml")


def test_config_spark_conf_entry_override():
    config = load_config(None, ["spark.conf={spark.a: 1}",
                                "spark.conf.spark.sql.shuffle.partitions=3"])
    assert config.spark.conf == {"spark.a": "1", "spark.sql.shuffle.partitions": "3"}


CLUSTER_PROFILE = REPO / "conf" / "cluster.yaml"


def test_config_cluster_profile_values():
    config = load_config(CLUSTER_PROFILE)
    assert config.spark.master == "spark://127.0.0.1:7077"
    assert config.spark.master.endswith(f":{config.cluster.master_port}")
    assert config.train.num_proc == config.cluster.workers * config.cluster.worker_cores == 2
    assert config.spark.conf["spark.executor.cores"] == "1"
    assert config.spark.conf["spark.cores.max"] == "2"
    assert config.spark.conf["spark.driver.host"] == "127.0.0.1"
    assert config.cluster.host == "127.0.0.1"


def test_config_cluster_profile_overrides():
    config = load_config(CLUSTER_PROFILE, ["cluster.master_port=7177", "cluster.workers=3",
                                           "spark.conf.spark.task.maxFailures=8"])
    assert config.cluster.master_port == 7177
    assert config.cluster.workers == 3
    assert config.spark.conf["spark.task.maxFailures"] == "8"
    assert config.spark.conf["spark.executor.memory"] == "1g"


def test_config_cluster_profile_mistyped_key(tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_text(CLUSTER_PROFILE.read_text().replace("worker_cores:", "worker_core:"))
    with pytest.raises(ConfigError, match="unknown configuration key 'cluster.worker_core'"):
        load_config(profile)
