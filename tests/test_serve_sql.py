"""``pea serve-sql``: a real Thrift JDBC/ODBC server process queried with pyspark's beeline."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, pea_command, run_pea

BEELINE = Path(sys.executable).parent / "beeline"
# Seconds for the server to start: a SparkSession, the tables registered, the server bound.
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Process ids of every process below ``pid``, read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = set(), [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """A ``pea serve-sql`` process whose output lines are collected by a thread."""

    def __init__(self, config, port: int, pid_file: Path):
        env = dict(os.environ, PYTHONWARNINGS="ignore::FutureWarning")
        self.process = subprocess.Popen(
            pea_command("--warehouse", str(config.warehouse_path), "--set",
                        f"database={config.database}", "--set", "spark.master=local[2]",
                        "--set", "spark.driver_memory=1g", "serve-sql", "--port", str(port),
                        "--pid-file", str(pid_file)),
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if "server listening on" in line:
                self.ready.set()

    def output(self) -> str:
        return "".join(self.lines)


def _beeline(port: int, query: str) -> list[dict[str, str]]:
    """Rows of ``query`` run by beeline, as csv2 output parsed with their column names."""
    # bin/beeline finds Spark's home with the python3 on PATH, so the venv goes first.
    env = dict(os.environ, PATH=f"{BEELINE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        [str(BEELINE), "-u", f"jdbc:hive2://127.0.0.1:{port}", "-n", "analyst",
         "--silent=true", "--outputformat=csv2", "-e", query],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Even with --silent, beeline writes its prompt before the first header line.
    text = re.sub(r"^\d+: jdbc:hive2://\S+> ", "", result.stdout, flags=re.MULTILINE)
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def server(explained_subset, tmp_path_factory):
    port = _free_port()
    pid_file = tmp_path_factory.mktemp("serve_sql") / "server.pid"
    running = Server(explained_subset, port, pid_file)
    try:
        if not running.ready.wait(START_TIMEOUT_S):
            pytest.fail(f"pea serve-sql did not start within {START_TIMEOUT_S} s:\n"
                        f"{running.output()}")
        yield running, port, pid_file
    finally:
        # test_serve_sql_stops_on_sigterm stops it; this covers a failure before that test.
        if running.process.poll() is None:
            children = _descendants(running.process.pid)
            running.process.terminate()
            try:
                running.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
            for child in children:
                if _alive(child):
                    os.kill(child, signal.SIGKILL)


def test_serve_sql_join_matches_spark(spark, explained_subset, server):
    config = explained_subset
    _, port, _ = server
    db = config.database
    query = (f"SELECT p.flow_key, p.attack_probability, e.feature, e.weight "
             f"FROM {db}.predictions p JOIN {db}.explanations e "
             f"ON e.flow_key = p.flow_key AND e.model_version = p.model_version "
             f"WHERE e.rank = 1 ORDER BY p.flow_key")
    expected = spark.sql(query).collect()
    rows = _beeline(port, query)
    assert len(rows) == len(expected) > 0
    for row, want in zip(rows, expected, strict=True):
        assert int(row["flow_key"]) == want["flow_key"]
        assert float(row["attack_probability"]) == want["attack_probability"]
        assert row["feature"] == want["feature"]
        assert float(row["weight"]) == want["weight"]


def test_serve_sql_view_matches_spark(spark, explained_subset, server):
    config = explained_subset
    _, port, _ = server
    query = (f"SELECT source_file, label, predicted_label, flows "
             f"FROM {config.database}.attack_counts ORDER BY source_file, label, predicted_label")
    expected = spark.sql(query).collect()
    rows = _beeline(port, query)
    assert [(r["source_file"], r["label"] or None, r["predicted_label"], int(r["flows"]))
            for r in rows] == [tuple(w) for w in expected]


def test_serve_sql_lists_tables_and_views(explained_subset, server):
    config = explained_subset
    _, port, _ = server
    rows = _beeline(port, f"SHOW TABLES IN {config.database}")
    names = {r["tableName"] for r in rows}
    assert {"predictions", "explanations", "attack_counts", "top_attack_flows",
            "attack_top_features_by_file", "attack_top_features_by_day"} <= names


def test_serve_sql_rejects_running_pid_file(explained_subset, server):
    running, _, pid_file = server
    result = run_pea("--warehouse", str(explained_subset.warehouse_path), "serve-sql",
                     "--port", str(_free_port()), "--pid-file", str(pid_file), timeout=120)
    assert result.returncode == 2
    assert f"names pea serve-sql (pid {running.process.pid}), which still runs" in result.stderr
    assert pid_file.read_text().strip() == str(running.process.pid)


def test_check_pid_file_removes_stale(tmp_path):
    from pea_spark.thrift import check_pid_file

    stopped = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True, check=True)
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(stopped.stdout)
    check_pid_file(pid_file)
    assert not pid_file.exists()


def test_serve_sql_stops_on_sigterm(server):
    running, port, pid_file = server
    pid = running.process.pid
    assert pid_file.read_text().strip() == str(pid)
    children = _descendants(pid)
    assert children, "the Spark JVM runs as a child of pea serve-sql"
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(STOP_TIMEOUT_S) == 0, running.output()
    running.reader.join(STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [child for child in children if _alive(child)] == []
    assert not pid_file.exists()
    assert "serve-sql: stopped" in running.output()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_serve_sql_port_taken(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_pea("--warehouse", str(tmp_path / "wh"), "serve-sql", "--port", str(port),
                         timeout=120)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "choose another port with --port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_sql_checks_pid_file_early(tmp_path):
    cases = {
        str(tmp_path / "missing" / "serve.pid"): f"folder {tmp_path / 'missing'} does not exist",
        str(tmp_path): "is a folder: give a file name",
    }
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for pid_file, message in cases.items():
        result = run_pea("--warehouse", str(tmp_path / "wh"), "serve-sql", "--port", str(port),
                         "--pid-file", pid_file, timeout=120)
        assert result.returncode == 2, pid_file
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
