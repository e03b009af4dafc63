"""The split depends on the flows, not on where their files are."""

from __future__ import annotations

from pyspark.sql import functions as F

from pea_spark.clean import clean
from pea_spark.ingest import ingest
from pea_spark.schema import FEATURES
from pea_spark.session import read_table
from pea_spark.split import split
from tests.conftest import ML_FILE, WEB_FILE, make_config, write_subset


def _assignment(spark, config) -> list[tuple]:
    silver = read_table(spark, config, "silver").filter(F.col("training_row"))
    splits = read_table(spark, config, "splits")
    joined = silver.join(splits.select("flow_key", "split", "fold"), "flow_key")
    content = F.xxhash64(*[F.col(f) for f in FEATURES], F.col("label")).alias("content")
    return sorted(tuple(r) for r in joined.select(content, "split", "fold").collect())


def test_split_independent_of_folder(spark, tmp_path, real_data):
    results = []
    for folder in ("first place", "elsewhere/deeper"):
        for name in (ML_FILE, WEB_FILE):
            write_subset(real_data / name, tmp_path / folder / name, stride=40)
        config = make_config(tmp_path / f"wh-{len(results)}")
        ingest(spark, config, [tmp_path / folder])
        clean(spark, config)
        split(spark, config)
        results.append(_assignment(spark, config))
    assert len(results[0]) > 300
    assert {s for _, s, _ in results[0]} == {"train", "test"}
    assert results[0] == results[1]
