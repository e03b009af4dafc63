"""One writer at a time, and all-or-nothing ingest runs across several Delta tables.

Delta commits one table at a time. An ingest run commits three (bronze,
quarantine, ingest_audit), so a process killed between two commits would
leave bronze with rows that no audit row accounts for. Two pieces prevent it:

- :class:`WarehouseLock`, an exclusive ``flock`` on ``<database>/_ingest/lock``
  held for the whole run. The kernel releases it when the holder dies, even by
  SIGKILL, so a lock is never left behind. A second run waits for it up to
  ``ingest.lock_timeout_s`` seconds, then fails with :class:`ConflictError`.
- A journal, ``<database>/_ingest/journal.json``, written before the first commit
  and removed after the last. It records each table's version before the run.
  :func:`recover` finds a journal left by a dead run and restores every table
  to its recorded version (Delta ``RESTORE``), or deletes a table the run
  created. A run whose last commit (the audit) landed is complete, and only
  its journal is removed.

Every ingest recovers under the lock before it starts, and every new session
recovers when no live run holds the lock, so no stage reads a half-written run.

NOTE: ``flock`` works between processes on one host (local disk or NFS with
locking). A warehouse on object storage shared by several hosts needs an
external lock service instead.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from pea_spark.config import PeaConfig
from pea_spark.session import table_path

__all__ = ["ConflictError", "WarehouseLock", "Journal", "recover", "recover_if_abandoned",
           "table_version", "failpoint"]

logger = logging.getLogger(__name__)

# Tables an ingest run commits, in commit order; the audit is always last.
INGEST_TABLES = ("bronze", "quarantine", "ingest_audit")


class ConflictError(ValueError):
    """Error raised when another process holds the warehouse lock, naming it and the fix."""


def ingest_folder(config: PeaConfig) -> Path:
    """Folder of the lock, the journal and the staged rows of ingest runs."""
    return config.warehouse_path / config.database / "_ingest"


def table_version(config: PeaConfig, name: str) -> int:
    """Latest committed version of Delta table ``name``, or -1 when it has none."""
    log = table_path(config, name) / "_delta_log"
    if not log.is_dir():
        return -1
    versions = [int(p.name[:-5]) for p in log.glob("*.json") if p.name[:-5].isdigit()]
    return max(versions, default=-1)


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL when ``PEA_FAILPOINT`` equals ``name``.

    Tests use it to stop a real ``pea ingest`` at an exact point between two
    commits; it does nothing when the variable is unset.
    """
    if os.environ.get("PEA_FAILPOINT") == name:
        logger.warning("failpoint %s: killing this process with SIGKILL", name)
        os.kill(os.getpid(), signal.SIGKILL)


class WarehouseLock:
    """Exclusive lock of one warehouse database for writers, as a context manager.

    Parameters
    ----------
    timeout_s : float
        Seconds to wait for a lock held by another process; 0 fails at once.
    purpose : str
        What the holder does, shown to a process that waits or fails.
    """

    def __init__(self, config: PeaConfig, timeout_s: float, purpose: str = "ingest") -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.purpose = purpose
        self.folder = ingest_folder(config)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether it was taken."""
        # NOTE: a read-only warehouse fails here with a bare OSError from the lock file.
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._fd = fd
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (self.folder / "owner.json").write_text(json.dumps(owner), encoding="utf-8")
        return True

    def acquire(self) -> None:
        """Wait up to ``timeout_s`` for the lock, then raise ConflictError naming its holder."""
        deadline = time.monotonic() + self.timeout_s
        waited = False
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"another process is writing to warehouse database "
                    f"{self.config.warehouse_path / self.config.database} ({self._holder()}); "
                    f"nothing was written: wait for it to finish and run again, or set "
                    f"ingest.lock_timeout_s to wait longer (now {self.timeout_s:g} s)")
            if not waited:
                logger.warning("waiting for the warehouse lock, held by %s", self._holder())
                waited = True
            time.sleep(0.2)

    def release(self) -> None:
        """Release the lock. The owner file stays for the next holder to overwrite."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _holder(self) -> str:
        try:
            owner = json.loads((self.folder / "owner.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "a process whose details are not recorded"
        return f"{owner['purpose']} by pid {owner['pid']} on {owner['host']} since {owner['since']}"

    def __enter__(self) -> WarehouseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Journal:
    """The record of an ingest run between its first and its last commit."""

    def __init__(self, config: PeaConfig) -> None:
        self.config = config
        self.path = ingest_folder(config) / "journal.json"

    def begin(self, run_id: str) -> None:
        """Record each table's version before the run's first commit."""
        record = {"run_id": run_id,
                  "versions": {name: table_version(self.config, name) for name in INGEST_TABLES}}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record), encoding="utf-8")
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        temporary.replace(self.path)

    def read(self) -> dict[str, Any] | None:
        """Return the journal of an unfinished run, or None."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def finish(self) -> None:
        """Mark the run complete by removing its journal."""
        self.path.unlink(missing_ok=True)


def recover(spark: SparkSession, config: PeaConfig) -> str | None:
    """Undo the commits of an ingest run that died before its last commit.

    The caller must hold the :class:`WarehouseLock`.

    Returns
    -------
    str or None
        The run id that was rolled back or completed, or None when no journal was found.
    """
    journal = Journal(config)
    record = journal.read()
    if record is None:
        return None
    run_id, before = record["run_id"], record["versions"]
    if table_version(config, "ingest_audit") > before["ingest_audit"]:
        logger.info("ingest run %s committed its audit before it stopped; it is complete",
                    run_id)
    else:
        for name in INGEST_TABLES:
            _restore(spark, config, name, before[name])
        logger.warning("ingest run %s was interrupted before its last commit; its changes "
                       "were rolled back, so run the same `pea ingest` again", run_id)
    staging = ingest_folder(config) / "staging" / run_id
    shutil.rmtree(staging, ignore_errors=True)
    journal.finish()
    return run_id


def _restore(spark: SparkSession, config: PeaConfig, name: str, version: int) -> None:
    current = table_version(config, name)
    if current <= version:
        return
    path = table_path(config, name)
    if version < 0:
        # The interrupted run created this table; before it, the table did not exist.
        spark.sql(f"DROP TABLE IF EXISTS {config.database}.{name}")
        shutil.rmtree(path)
        logger.warning("removed table %s.%s, created by the interrupted run",
                       config.database, name)
        return
    quoted = str(path).replace("`", "``")
    spark.sql(f"RESTORE TABLE delta.`{quoted}` TO VERSION AS OF {version}")
    logger.warning("restored table %s.%s from version %d to version %d",
                   config.database, name, current, version)


def recover_if_abandoned(spark: SparkSession, config: PeaConfig) -> str | None:
    """Recover a dead run's journal, unless a live run holds the lock."""
    if Journal(config).read() is None:
        return None
    lock = WarehouseLock(config, 0.0, "recovery")
    if not lock.try_acquire():
        return None
    try:
        return recover(spark, config)
    finally:
        lock.release()
