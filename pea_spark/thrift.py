"""``pea serve-sql``: Spark's Thrift JDBC/ODBC server over the pea-spark warehouse.

The server runs inside the driver of a pea-spark SparkSession, started with
``HiveThriftServer2.startWithContext`` through Py4J, so JDBC clients such as
``beeline`` see the Delta tables and analyst views that :func:`register_tables`
created in that session's catalog. The pip package of pyspark 4.0.5 ships the
server (``jars/spark-hive-thriftserver_2.13-4.0.5.jar``), the Hive classes it
needs and ``bin/beeline``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from pea_spark.config import PeaConfig
from pea_spark.session import register_tables

__all__ = ["check_port_free", "jdbc_url", "serve_sql", "server_spark_conf"]

logger = logging.getLogger(__name__)

# Seconds to wait for the server to accept connections after it started.
READY_TIMEOUT_S = 60.0


def jdbc_url(host: str, port: int) -> str:
    """Return the JDBC URL that beeline and other Hive JDBC clients connect to."""
    return f"jdbc:hive2://{host}:{port}"


def server_spark_conf(host: str, port: int) -> dict[str, str]:
    """Spark settings that the SparkSession of :func:`serve_sql` must be created with.

    ``singleSession`` is a static setting, so it cannot be set on a running session.
    """
    return {
        # NOTE: with a session per connection, opening a JDBC session fails with
        # ClassNotFoundException for DeltaCatalog (seen with pyspark 4.0.5 and
        # delta-spark 4.0.1): the server's handler threads do not see the jars
        # that spark.jars.packages added. The shared session loaded its catalog already.
        "spark.sql.hive.thriftServer.singleSession": "true",
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(port),
    }


def check_port_free(host: str, port: int) -> None:
    """Raise ValueError when ``port`` on ``host`` cannot be bound, naming the fix."""
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid port {port}: expected a number from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The JVM binds with SO_REUSEADDR too, so a socket in TIME_WAIT is no conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ValueError(_port_message(host, port, error.strerror)) from None


def check_pid_file(pid_file: str | Path) -> None:
    """Raise ValueError when ``pid_file`` cannot be written or names a running server,
    before the server starts. A pid file left by a server that no longer runs is removed.
    """
    path = Path(pid_file)
    folder = path.parent
    if path.is_file():
        text = path.read_text(errors="replace").strip()
        pid = int(text) if text.isdigit() else None
        if pid is not None and pid != os.getpid() and _runs_serve_sql(pid):
            raise ValueError(f"--pid-file {path} names pea serve-sql (pid {pid}), which still "
                             f"runs: stop it first (kill {pid}), or give another --pid-file")
        logger.info("serve-sql: removing %s, left by a server that no longer runs", path)
        path.unlink()
    if path.is_dir():
        raise ValueError(f"--pid-file {path} is a folder: give a file name, such as "
                         f"{path / 'serve-sql.pid'}")
    if not folder.is_dir():
        raise ValueError(f"--pid-file {path}: folder {folder} does not exist; create it first "
                         f"(mkdir -p {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--pid-file {path}: folder {folder} is not writable by this user; "
                         f"choose a folder you can write to")


def _runs_serve_sql(pid: int) -> bool:
    """Tell whether process ``pid`` runs ``pea serve-sql`` (so the pid is not reused)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve-sql" in arguments


def _reads_pid(path: Path, pid: int) -> bool:
    try:
        return path.read_text().strip() == str(pid)
    except OSError:
        return False


def _port_message(host: str, port: int, reason: str | None) -> str:
    return (f"cannot listen on {host}:{port}: {reason or 'address already in use'}; stop the "
            f"process that listens there, or choose another port with --port")


def serve_sql(spark: SparkSession, config: PeaConfig, host: str, port: int,
              pid_file: str | Path | None = None,
              announce: Callable[[str], None] = print) -> None:
    """Serve the warehouse over JDBC/ODBC on ``host:port`` until SIGINT or SIGTERM.

    All JDBC connections share the one SparkSession that registered the tables
    (Spark's ``spark.sql.hive.thriftServer.singleSession``), so a ``USE``,
    ``SET`` or temporary view of one client is seen by the others. Tables that
    a stage creates after the start are registered by the next start, but new
    rows in registered tables are read by each query.

    Parameters
    ----------
    pid_file : path, optional
        File that contains the process id while the server runs, for
        ``kill $(cat FILE)``. It is removed at the stop.
    announce : callable
        Called with one line once the server accepts connections.
    """
    check_port_free(host, port)
    if pid_file is not None:
        check_pid_file(pid_file)
    registered = register_tables(spark, config)
    expected = server_spark_conf(host, port)
    wrong = {key: spark.conf.get(key, None) for key, value in expected.items()
             if spark.conf.get(key, None) != value}
    if wrong:
        raise ValueError(f"the SparkSession was created without the Thrift server's settings "
                         f"{wrong}: create it with server_spark_conf({host!r}, {port}) in "
                         f"spark.conf")
    jvm = spark.sparkContext._jvm
    # The server's in-memory Derby metastore would write derby.log into the working folder.
    log_folder = config.warehouse_path / "_spark"
    log_folder.mkdir(parents=True, exist_ok=True)
    jvm.java.lang.System.setProperty("derby.stream.error.file", str(log_folder / "derby.log"))

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    start = time.monotonic()
    try:
        server = _start(spark, host, port)
        try:
            _wait_until_listening(host, port)
            if pid_file is not None:
                Path(pid_file).write_text(f"{os.getpid()}\n", encoding="utf-8")
            views = [row["viewName"] for row in
                     spark.sql(f"SHOW VIEWS IN {config.database}").collect()]
            logger.info("serve-sql: listening on %s after %.1f s; database %s: %d tables, "
                        "%d views", jdbc_url(host, port), time.monotonic() - start,
                        config.database, len(registered), len(views))
            announce(f"Spark Thrift JDBC/ODBC server listening on {jdbc_url(host, port)} "
                     f"(database {config.database}: {len(registered)} tables, {len(views)} "
                     f"views); stop it with Ctrl-C or SIGTERM")
            while not stop.wait(0.5):
                pass
            logger.info("serve-sql: stopping on a signal")
        finally:
            server.stop()
            # Another server may have taken over the file since, so only this pid is removed.
            if pid_file is not None and _reads_pid(Path(pid_file), os.getpid()):
                Path(pid_file).unlink(missing_ok=True)
            logger.info("serve-sql: stopped after %.1f s", time.monotonic() - start)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(spark: SparkSession, host: str, port: int):
    jvm = spark.sparkContext._jvm
    server_class = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    try:
        return server_class.startWithContext(spark._jsparkSession.sqlContext())
    except Py4JJavaError as error:
        # Another process took the port between the check and the bind.
        if "java.net.BindException" in str(error):
            raise ValueError(_port_message(host, port, None)) from None
        raise


def _wait_until_listening(host: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Thrift server did not accept connections on "
                                   f"{host}:{port} within {READY_TIMEOUT_S:.0f} s; see the "
                                   f"Spark log above") from None
            time.sleep(0.2)
