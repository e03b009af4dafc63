"""A Spark standalone cluster on one host, run from the pip install of pyspark.

``start_cluster`` runs ``spark-class org.apache.spark.deploy.master.Master`` and
``cluster.workers`` ``org.apache.spark.deploy.worker.Worker`` processes bound to
``cluster.host``. Everything they write goes under ``cluster.folder``::

    cluster/
      master.pid, worker-1.pid, ...   one pid file per daemon
      logs/master.log, logs/worker-1.log, ...
      logs/worker-1/                  the worker's work folder: executor stdout and stderr

Each daemon starts in a new session, so its process group contains the daemon and
the executor JVMs it launches. ``stop_cluster`` signals exactly those groups, after
checking that each pid still runs the class it was started as. PySpark's Python
daemons and Horovod's rank processes put themselves in process groups of their
own, so ``stop_cluster`` then stops every process that works in an executor's
folder under ``cluster.folder``: they inherit it from the executor.

``build_package`` writes the ``pea_spark`` package to a zip for ``spark-submit
--py-files``, which is how the executors of a real cluster get the project's code.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pea_spark.config import ClusterSettings

__all__ = ["ClusterError", "DaemonStatus", "build_package", "cluster_status",
           "master_mismatch", "master_url", "running_master_url", "processes_under",
           "rank_process", "start_cluster", "stop_cluster"]

logger = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# Lines the daemons log once they are ready (Spark 4.0).
MASTER_READY = "I have been elected leader"
WORKER_READY = "Successfully registered with master"
# Spark 4.0 logs "Bound MasterWebUI to HOST, and started at http://NAME:PORT".
_WEB_UI_LINE = re.compile(r"Bound \w*WebUI to \S+, and started at https?://[^\s:/]+:(\d+)")
_MASTER_LINE = re.compile(r"Starting Spark master at (spark://\S+)")
# Seconds a daemon's process group gets to exit after SIGTERM before SIGKILL.
STOP_GRACE_S = 15.0


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped."""


@dataclass
class DaemonStatus:
    """One master or worker daemon: its name, pid file, log and whether it runs."""

    name: str
    pid: int | None
    running: bool
    log: Path
    web_ui: str | None = None


def master_url(settings: ClusterSettings) -> str:
    """Return the ``spark://HOST:PORT`` URL of the cluster's master."""
    return f"spark://{settings.host}:{settings.master_port}"


def _folder(settings: ClusterSettings) -> Path:
    return Path(settings.folder).expanduser().resolve()


def _daemons(settings: ClusterSettings) -> list[tuple[str, str]]:
    names = [("master", MASTER_CLASS)]
    names += [(f"worker-{i}", WORKER_CLASS) for i in range(1, settings.workers + 1)]
    return names


def _spark_class() -> Path:
    import pyspark

    script = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not script.is_file():
        raise ClusterError(f"spark-class not found at {script}: reinstall pyspark "
                           "(bash scripts/install.sh)")
    return script


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _runs_class(pid: int, main_class: str) -> bool:
    """Tell whether process ``pid`` is a JVM running ``main_class`` (so not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return main_class.encode() in command


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise ClusterError(f"cannot bind {host}:{port} ({error.strerror}): set cluster.host "
                               "to an address of this machine, such as 127.0.0.1") from None
    return True


def _check_ports(settings: ClusterSettings) -> None:
    ports = [("cluster.master_port", settings.master_port),
             ("cluster.master_webui_port", settings.master_webui_port)]
    if settings.worker_webui_port:
        ports += [("cluster.worker_webui_port", settings.worker_webui_port + i)
                  for i in range(settings.workers)]
    # Spark silently moves a second web UI to the next free port, and a master port
    # shared with a UI fails later with a less clear error.
    owners: dict[int, str] = {}
    for key, port in ports:
        if port and port in owners:
            worker_note = (f" (worker N's web UI takes cluster.worker_webui_port + N - 1, "
                           f"ports {settings.worker_webui_port} to "
                           f"{settings.worker_webui_port + settings.workers - 1})"
                           if "worker" in key + owners[port] else "")
            raise ClusterError(f"{owners[port]} and {key} both give port {port}{worker_note}: "
                               f"choose ports that do not overlap, for example "
                               f"--set {key}={max(p for _, p in ports) + 1}")
        owners.setdefault(port, key)
    for key, port in ports:
        if port and not _port_free(settings.host, port):
            raise ClusterError(
                f"port {port} on {settings.host} ({key}) is already in use: stop the program "
                f"that listens on it (`ss -ltnp 'sport = :{port}'` shows it; an earlier "
                f"cluster stops with `pea cluster stop`), or choose another port with "
                f"--set {key}=N")


def _tail(log: Path, lines: int = 20) -> str:
    if not log.is_file():
        return f"(no log at {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _launch(settings: ClusterSettings, name: str,
            arguments: list[str]) -> tuple[subprocess.Popen, int]:
    """Start one daemon; return its process and the size its log had before the start."""
    folder = _folder(settings)
    log = folder / "logs" / f"{name}.log"
    env = dict(os.environ, SPARK_LOCAL_IP=settings.host, SPARK_DAEMON_MEMORY=settings.daemon_memory,
               SPARK_LOG_DIR=str(folder / "logs"))
    # Logs are appended to, so readiness is looked for after this offset only.
    offset = log.stat().st_size if log.is_file() else 0
    with open(log, "ab") as output:
        # A new session makes the daemon lead its own process group, which the
        # executor JVMs it launches join. stop_cluster signals that group.
        process = subprocess.Popen([str(_spark_class()), *arguments], stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    (folder / f"{name}.pid").write_text(f"{process.pid}\n")
    logger.info("cluster: started %s (pid %d), log %s", name, process.pid, log)
    return process, offset


def _log_since(log: Path, offset: int) -> str:
    with open(log, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _wait_ready(settings: ClusterSettings, name: str, process: subprocess.Popen, offset: int,
                ready: str) -> None:
    log = _folder(settings) / "logs" / f"{name}.log"
    pid = process.pid
    deadline = time.monotonic() + settings.start_timeout_s
    while time.monotonic() < deadline:
        if log.is_file() and ready in _log_since(log, offset):
            return
        if process.poll() is not None:
            raise ClusterError(f"the {name} (pid {pid}) exited with status {process.returncode} "
                               f"while starting; the end of its log {log}:\n{_tail(log)}")
        time.sleep(0.5)
    raise ClusterError(f"the {name} (pid {pid}) did not log {ready!r} within "
                       f"{settings.start_timeout_s:g} s (cluster.start_timeout_s); the end of "
                       f"its log {log}:\n{_tail(log)}")


def start_cluster(settings: ClusterSettings) -> list[DaemonStatus]:
    """Start the master and the workers, and wait until every worker has registered.

    Raises
    ------
    ClusterError
        When a daemon of this cluster folder still runs, a port is in use, or a
        daemon exits or does not become ready within ``start_timeout_s``. The
        daemons already started are stopped again before the error is raised.
    """
    running = [d for d in cluster_status(settings) if d.running]
    if running:
        raise ClusterError(
            f"the cluster in {_folder(settings)} is already running ({running[0].name}, pid "
            f"{running[0].pid}): stop it first with `pea cluster stop`")
    _check_ports(settings)
    folder = _folder(settings)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    started: list[tuple[str, tuple[subprocess.Popen, int]]] = []
    try:
        started.append(("master", _launch(settings, "master", [
            MASTER_CLASS, "--host", settings.host, "--port", str(settings.master_port),
            "--webui-port", str(settings.master_webui_port)])))
        _wait_ready(settings, "master", *started[0][1], MASTER_READY)
        for number in range(1, settings.workers + 1):
            name = f"worker-{number}"
            webui = settings.worker_webui_port + number - 1 if settings.worker_webui_port else 0
            work = folder / "logs" / name
            work.mkdir(exist_ok=True)
            started.append((name, _launch(settings, name, [
                WORKER_CLASS, "--host", settings.host, "--cores", str(settings.worker_cores),
                "--memory", settings.worker_memory, "--webui-port", str(webui),
                "--work-dir", str(work), master_url(settings)])))
        for name, (process, offset) in started[1:]:
            _wait_ready(settings, name, process, offset, WORKER_READY)
    except BaseException:
        # A daemon may still be the spark-class shell before its exec of java, so the
        # processes started here are stopped by their Popen, not by the class check.
        for name, (process, _) in reversed(started):
            if process.poll() is None:
                _stop_group(name, process.pid)
            process.wait()
            (folder / f"{name}.pid").unlink(missing_ok=True)
        raise
    logger.info("cluster: %s is up with %d workers of %d cores and %s each", master_url(settings),
                settings.workers, settings.worker_cores, settings.worker_memory)
    return cluster_status(settings)


def stop_cluster(settings: ClusterSettings) -> list[int]:
    """Stop the daemons started from this cluster folder, with everything they launched.

    Each daemon's process group gets SIGTERM, then SIGKILL after ``STOP_GRACE_S``.
    A pid file whose process no longer runs the expected class is removed without
    signalling anything. Returns the pids of the daemons stopped.
    """
    folder = _folder(settings)
    stopped = []
    # Pid files, not cluster.workers, list the workers: the setting may have changed.
    workers = [(path.stem, WORKER_CLASS) for path in sorted(folder.glob("worker-*.pid"))]
    for name, main_class in [*reversed(workers), ("master", MASTER_CLASS)]:
        pid_file = folder / f"{name}.pid"
        pid = _read_pid(pid_file)
        if pid is not None and _runs_class(pid, main_class):
            _stop_group(name, pid)
            stopped.append(pid)
        elif pid is not None:
            logger.info("cluster: %s (pid %d) is not running; removing %s", name, pid, pid_file)
        pid_file.unlink(missing_ok=True)
    _stop_processes_under(folder)
    return stopped


def processes_under(folder: Path) -> list[int]:
    """Return the pids of the processes working in an executor folder under ``folder``.

    Executor folders are ``logs/worker-N/app-ID/EXECUTOR``. Processes working
    elsewhere under ``folder``, such as a shell reading the logs, are not listed.
    """
    pids = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            target = Path(os.readlink(cwd))
        except OSError:
            continue
        if folder in target.parents and any(
                part.startswith("app-") for part in target.relative_to(folder).parts):
            pids.append(int(cwd.parent.name))
    return pids


def _stop_processes_under(folder: Path) -> None:
    # Python workers exit by themselves once their executor's pipe closes; give them time.
    deadline = time.monotonic() + STOP_GRACE_S
    while processes_under(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in processes_under(folder):
        logger.warning("cluster: process %d in %s still runs after its executor stopped; "
                       "sending SIGKILL", pid, folder)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop_group(name: str, pgid: int) -> None:
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pgid):
        logger.warning("cluster: %s (process group %d) still runs %g s after SIGTERM; "
                       "sending SIGKILL", name, pgid, STOP_GRACE_S)
        os.killpg(pgid, signal.SIGKILL)
    logger.info("cluster: stopped %s (pid %d)", name, pgid)


def _web_ui(settings: ClusterSettings, log: Path) -> str | None:
    """Return the URL of the web UI that the daemon writing ``log`` started last.

    The log names the port that the UI was bound to, which is the only record of
    it when the setting is 0 (any free port).
    """
    if not log.is_file():
        return None
    found = _WEB_UI_LINE.findall(log.read_text(errors="replace"))
    return f"http://{settings.host}:{found[-1]}" if found else None


def cluster_status(settings: ClusterSettings) -> list[DaemonStatus]:
    """Return the master's and each worker's pid, log, web UI and whether it runs."""
    folder = _folder(settings)
    daemons = []
    for name, main_class in _daemons(settings):
        pid = _read_pid(folder / f"{name}.pid")
        running = pid is not None and _runs_class(pid, main_class)
        log = folder / "logs" / f"{name}.log"
        daemons.append(DaemonStatus(name, pid, running, log,
                                    _web_ui(settings, log) if running else None))
    return daemons


def running_master_url(settings: ClusterSettings) -> str | None:
    """Return the URL that this cluster folder's master logged at its last start."""
    log = _folder(settings) / "logs" / "master.log"
    if not log.is_file():
        return None
    found = _MASTER_LINE.findall(log.read_text(errors="replace"))
    return found[-1] if found else None


def master_mismatch(settings: ClusterSettings, spark_master: str) -> str | None:
    """Return a message with the fix when ``spark.master`` names another standalone master
    than this cluster's, else None, because ``pea`` commands would not reach the cluster."""
    url = master_url(settings)
    if not spark_master.startswith("spark://") or spark_master == url:
        return None
    return (f"spark.master is {spark_master}, but this cluster's master is {url}: pea commands "
            f"with these settings would not reach it; add --set spark.master={url}")


def rank_process() -> dict:
    """Describe the process this runs in and the Spark executor that launched it.

    A Horovod rank runs in a process that the Spark task of its executor started,
    so the executor is found by walking up the parent processes (Linux ``/proc``)
    to the JVM running ``CoarseGrainedExecutorBackend``. In local mode no such JVM
    exists and ``executor_id`` is ``"driver"``. ``pea_spark_file`` is the file the
    package was imported from, such as one inside the ``--py-files`` zip.
    """
    import pea_spark

    found = {"host": socket.gethostname(), "pid": os.getpid(), "executor_id": "driver",
             "executor_pid": None, "pea_spark_file": pea_spark.__file__}
    pid = os.getppid()
    while pid > 1:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        arguments = command.split("\0")
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in arguments \
                and "--executor-id" in arguments:
            found["executor_id"] = arguments[arguments.index("--executor-id") + 1]
            found["executor_pid"] = pid
            break
        parent = [line for line in status.splitlines() if line.startswith("PPid:")]
        pid = int(parent[0].split()[1]) if parent else 1
    return found


def build_package(output: str | Path = "dist/pea_spark.zip") -> Path:
    """Write the ``pea_spark`` package's Python files to a zip for ``--py-files``.

    The zip is written beside ``output`` first and renamed, so a running
    ``spark-submit`` never reads a half-written file. Returns the zip's path.
    """
    source = Path(__file__).resolve().parent
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts:
                archive.write(path, Path("pea_spark") / path.relative_to(source))
    partial.replace(output)
    logger.info("cluster: wrote %s", output)
    return output
