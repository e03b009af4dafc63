"""Killed and concurrent ingest runs, with real ``pea ingest`` processes.

A run is killed with SIGKILL between two of its commits, either by its own
failpoint (an exact point) or from outside while its journal exists (wherever
it happens to be). Every check compares table contents, not only counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pea_spark.ingest import ingest
from pea_spark.session import read_table, table_exists
from pea_spark.transaction import (
    ConflictError,
    Journal,
    WarehouseLock,
    recover_if_abandoned,
    table_version,
)
from tests.conftest import ML_FILE, WEB_FILE, make_config, pea_command, run_pea, write_subset


def _pea_args(config, *args: str) -> list[str]:
    return ["--warehouse", str(config.warehouse_path), "--set", f"database={config.database}",
            "--set", "spark.master=local[1]", "--set", "spark.driver_memory=1g", "-q", *args]


def _inputs(tmp_path: Path, real_data: Path) -> tuple[Path, Path, int, int]:
    first, second = tmp_path / "in" / "friday.csv", tmp_path / "in" / "web.csv"
    rows_first = write_subset(real_data / ML_FILE, first, stride=10)
    rows_second = write_subset(real_data / WEB_FILE, second, stride=10)
    return first, second, rows_first, rows_second


def _snapshot(spark, config) -> dict[str, list]:
    """Every row of the three tables an ingest writes, sorted, timestamps included."""
    snapshot = {}
    for name in ("bronze", "quarantine", "ingest_audit"):
        if not table_exists(config, name):
            snapshot[name] = None
            continue
        rows = read_table(spark, config, name).collect()
        snapshot[name] = sorted((tuple(sorted(r.asDict().items(), key=lambda i: i[0]))
                                 for r in rows), key=repr)
    return snapshot


def _bronze_keys(spark, config) -> list[tuple[str, int]]:
    return [(r["source_file"], r["line_number"]) for r in
            read_table(spark, config, "bronze").select("source_file", "line_number").collect()]


def test_kill_after_bronze_commit(spark, tmp_path, real_data):
    config = make_config(tmp_path / "wh")
    first, second, rows_first, rows_second = _inputs(tmp_path, real_data)
    ingest(spark, config, [first])
    before = _snapshot(spark, config)
    bronze_version = table_version(config, "bronze")

    result = run_pea(*_pea_args(config, "ingest", "--input", str(second)),
                     env={"PEA_FAILPOINT": "after-bronze"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    # The dead run committed bronze, then nothing else, and left its journal.
    assert table_version(config, "bronze") == bronze_version + 1
    assert Journal(config).read() is not None

    assert recover_if_abandoned(spark, config) is not None
    assert Journal(config).read() is None
    assert _snapshot(spark, config) == before

    totals = ingest(spark, config, [first, second])
    assert (totals["loaded"], totals["unchanged"]) == (rows_second, 1)
    keys = _bronze_keys(spark, config)
    assert len(keys) == len(set(keys)) == rows_first + rows_second


def test_kill_while_publishing(spark, tmp_path, real_data):
    config = make_config(tmp_path / "wh")
    first, second, rows_first, rows_second = _inputs(tmp_path, real_data)
    ingest(spark, config, [first])
    before = _snapshot(spark, config)
    journal = Journal(config)

    process = subprocess.Popen(pea_command(*_pea_args(config, "ingest", "--input", str(second))),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while journal.read() is None:
        if process.poll() is not None:
            pytest.fail(f"pea ingest ended before publishing: {process.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "pea ingest never began to publish"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    process.stderr.close()

    # The next ingest restores the tables under the lock, then loads the file once.
    totals = ingest(spark, config, [second])
    assert totals["loaded"] == rows_second
    keys = _bronze_keys(spark, config)
    assert len(keys) == len(set(keys)) == rows_first + rows_second
    audit = read_table(spark, config, "ingest_audit")
    assert audit.count() == len(before["ingest_audit"]) + 1
    assert audit.filter(F.col("source_file") == str(second.resolve())).count() == 1


def test_kill_while_staging(spark, tmp_path, real_data):
    config = make_config(tmp_path / "wh")
    first, second, _, _ = _inputs(tmp_path, real_data)
    ingest(spark, config, [first])
    before = _snapshot(spark, config)
    result = run_pea(*_pea_args(config, "ingest", "--input", str(second)),
                     env={"PEA_FAILPOINT": "after-staging"})
    assert result.returncode == -signal.SIGKILL
    assert Journal(config).read() is None
    assert _snapshot(spark, config) == before


def test_two_concurrent_ingests(spark, tmp_path, real_data):
    config = make_config(tmp_path / "wh")
    first, second, rows_first, rows_second = _inputs(tmp_path, real_data)
    processes = [subprocess.Popen(pea_command(*_pea_args(config, "ingest", "--input", str(p))),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for p in (first, second)]
    outcomes = [(p.wait(timeout=900), p.stderr.read()) for p in processes]
    for process in processes:
        process.stderr.close()
    assert [code for code, _ in outcomes] == [0, 0], [err[-2000:] for _, err in outcomes]
    keys = _bronze_keys(spark, config)
    assert len(keys) == len(set(keys)) == rows_first + rows_second
    audit = read_table(spark, config, "ingest_audit").collect()
    assert sorted(r["source_file"] for r in audit) == sorted(
        [str(first.resolve()), str(second.resolve())])
    assert len({r["run_id"] for r in audit}) == 2


def test_held_lock_conflict(spark, tmp_path, real_data):
    config = make_config(tmp_path / "wh", "ingest.lock_timeout_s=0")
    first, second, rows_first, _ = _inputs(tmp_path, real_data)
    ingest(spark, config, [first])
    before = _snapshot(spark, config)
    holder = WarehouseLock(config, 0, "a test holding the lock")
    assert holder.try_acquire()
    try:
        with pytest.raises(ConflictError) as error:
            ingest(spark, config, [second])
    finally:
        holder.release()
    message = str(error.value)
    assert f"a test holding the lock by pid {os.getpid()}" in message
    assert "nothing was written" in message
    assert _snapshot(spark, config) == before
    assert ingest(spark, config, [second])["files"] == 1
    assert len(_bronze_keys(spark, config)) > rows_first


def test_clean_waits_for_ingest_lock(spark, tmp_path, real_data):
    from pea_spark.clean import clean

    config = make_config(tmp_path / "wh", "ingest.lock_timeout_s=0")
    first, _, rows_first, _ = _inputs(tmp_path, real_data)
    ingest(spark, config, [first])
    holder = WarehouseLock(config, 0, "an ingest in progress")
    assert holder.try_acquire()
    try:
        with pytest.raises(ConflictError, match="an ingest in progress by pid"):
            clean(spark, config)
    finally:
        holder.release()
    assert not table_exists(config, "silver")
    assert clean(spark, config)["bronze"] == rows_first
