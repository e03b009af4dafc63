"""The pipeline on a real Spark standalone cluster: a master and two one-core workers
on 127.0.0.1, started by ``pea cluster start``, and every stage run by ``spark-submit``
with pea_spark shipped as a ``--py-files`` zip.

The tests run in file order and share one cluster: the pipeline test trains the
model that the worker-loss test scores with, and the last test stops the cluster.
They take several minutes, because each spark-submit starts a driver JVM and two
executors.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, WEB_FILE, run_pea

from pea_spark.cluster import processes_under
from pea_spark.session import delta_package

pytestmark = pytest.mark.timeout(2400)

VENV_BIN = Path(sys.executable).parent
# Settings that keep each stage short on two one-core workers.
FAST_SETTINGS = ["train.epochs=1", "explain.num_samples=200", "explain.num_features=5",
                 "split.folds=3", "crossval.ablation=false"]
# The stages after ingest, in the order of the README's cluster section.
CLUSTER_JOBS = ["clean", "select_features", "split", "train", "evaluate", "crossval", "report",
                "score", "explain"]
# Seconds the worker-loss test waits for the executor it kills to start scoring.
KILL_WAIT_S = 600


@dataclass
class Cluster:
    """A started test cluster: its ``--set`` options, master URL, folder and package zip."""

    options: list[str]
    master: str
    folder: Path
    package: Path
    warehouse: Path


def free_ports(count: int) -> list[int]:
    """Ports that are free on 127.0.0.1 now (the kernel's choice for port 0)."""
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def process_groups() -> dict[int, list[int]]:
    """Map each process group id on this host to the pids in it, from /proc."""
    groups: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            groups.setdefault(int(fields[2]), []).append(int(stat.parent.name))
    return groups


def cluster_pea(cluster_options: list[str], *args: str) -> subprocess.CompletedProcess:
    return run_pea("--config", "conf/cluster.yaml", *cluster_options, *args, timeout=300)


def spark_submit(cluster: Cluster, job: str, *args: str,
                 timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run ``jobs/<job>.py`` with spark-submit on the cluster; fail with its log on error."""
    settings = [item for key in FAST_SETTINGS for item in ("--set", key)]
    command = [str(VENV_BIN / "spark-submit"), "--master", cluster.master,
               "--packages", delta_package(), "--py-files", str(cluster.package),
               f"jobs/{job}.py", "--config", "conf/cluster.yaml",
               "--warehouse", str(cluster.warehouse), *cluster.options, *settings, *args]
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
               PYTHONWARNINGS="ignore::FutureWarning")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"spark-submit {job} failed:\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, real_data: Path):
    root = tmp_path_factory.mktemp("cluster")
    master_port, webui_port = free_ports(2)
    options = ["--set", f"cluster.folder={root / 'cluster'}",
               "--set", f"cluster.master_port={master_port}",
               "--set", f"cluster.master_webui_port={webui_port}",
               "--set", "cluster.worker_webui_port=0",
               "--set", f"spark.master=spark://127.0.0.1:{master_port}"]
    started = cluster_pea(options, "cluster", "start")
    assert started.returncode == 0, f"pea cluster start failed:\n{started.stderr}"
    package = root / "pea_spark.zip"
    packaged = cluster_pea(options, "cluster", "package", "--output", str(package))
    assert packaged.returncode == 0, packaged.stderr
    yield Cluster(options, f"spark://127.0.0.1:{master_port}", root / "cluster", package,
                  root / "warehouse")
    cluster_pea(options, "cluster", "stop")


def read_delta(spark, cluster: Cluster, name: str):
    return spark.read.format("delta").load(str(cluster.warehouse / "pea" / name))


def test_cluster_start_reports_failed_master(tmp_path: Path):
    folder = tmp_path / "cluster"
    (master_port,) = free_ports(1)
    # A 1 KB heap is below the JVM's minimum, so the master exits at once.
    options = ["--set", f"cluster.folder={folder}", "--set", f"cluster.master_port={master_port}",
               "--set", "cluster.master_webui_port=0", "--set", "cluster.worker_webui_port=0",
               "--set", "cluster.daemon_memory=1k"]
    result = cluster_pea(options, "cluster", "start")

    assert result.returncode == 2
    assert "the master (pid" in result.stderr
    assert "exited with status 1 while starting" in result.stderr
    assert str(folder / "logs" / "master.log") in result.stderr
    assert not list(folder.glob("*.pid"))


def test_cluster_start_rejects_address_of_other_host(tmp_path: Path):
    options = ["--set", f"cluster.folder={tmp_path}", "--set", "cluster.host=192.0.2.254"]
    result = cluster_pea(options, "cluster", "start")

    assert result.returncode == 2
    assert "cannot bind 192.0.2.254:7077" in result.stderr
    assert "set cluster.host to an address of this machine" in result.stderr


def test_cluster_start_rejects_overlapping_ports(tmp_path: Path):
    cases = {
        ("cluster.master_webui_port=8082", "cluster.worker_webui_port=8081"):
            "cluster.master_webui_port and cluster.worker_webui_port both give port 8082",
        ("cluster.master_port=7077", "cluster.master_webui_port=7077"):
            "cluster.master_port and cluster.master_webui_port both give port 7077",
    }
    for settings, message in cases.items():
        options = ["--set", f"cluster.folder={tmp_path}"]
        for setting in settings:
            options += ["--set", setting]
        result = cluster_pea(options, "cluster", "start")
        assert result.returncode == 2, settings
        assert message in result.stderr
        assert "choose ports that do not overlap" in result.stderr
        assert not list(tmp_path.glob("*.pid"))


def test_cluster_status_warns_master_mismatch(tmp_path: Path):
    options = ["--set", f"cluster.folder={tmp_path}", "--set", "cluster.master_port=7177"]
    result = cluster_pea(options, "cluster", "status")

    assert result.returncode == 0
    assert ("spark.master is spark://127.0.0.1:7077, but this cluster's master is "
            "spark://127.0.0.1:7177") in result.stderr
    assert "add --set spark.master=spark://127.0.0.1:7177" in result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()[1:]] == ["stopped"] * 3


def test_cluster_start_runs_master_and_two_workers(cluster: Cluster):
    status = cluster_pea(cluster.options, "cluster", "status")
    lines = [line.split() for line in status.stdout.splitlines()[1:]]

    assert status.returncode == 0
    assert [line[0] for line in lines] == ["master", "worker-1", "worker-2"]
    assert {line[1] for line in lines} == {"running"}
    assert (cluster.folder / "logs" / "master.log").is_file()
    # The workers' web UIs are on free ports (0), which only their logs name.
    webui_port = next(o.split("=")[1] for o in cluster.options if "master_webui_port" in o)
    urls = [line[line.index("UI") + 1] for line in lines]
    assert urls[0] == f"http://127.0.0.1:{webui_port}"
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+", url) for url in urls[1:]), urls
    assert len(set(urls)) == 3
    # Without the port options the profile names 7077, but status reports the running master.
    bare = cluster_pea(["--set", f"cluster.folder={cluster.folder}"], "cluster", "status")
    assert bare.stdout.splitlines()[0] == f"master {cluster.master}"
    assert f"the running master listens on {cluster.master}, not on" in bare.stderr


def test_cluster_start_rejects_port_in_use(cluster: Cluster):
    second = [*cluster.options, "--set", f"cluster.folder={cluster.folder}-second"]
    result = cluster_pea(second, "cluster", "start")
    port = cluster.master.rsplit(":", 1)[1]

    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 (cluster.master_port) is already in use" in result.stderr
    assert "--set cluster.master_port=N" in result.stderr


def readme_cluster_block() -> str:
    """The bash block of the README's "Run on a Spark cluster" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Run on a Spark cluster", 1)[1].split("\n## ", 1)[0]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


def test_readme_cluster_block_matches_jobs():
    block = readme_cluster_block()
    loop = re.search(r"^for job in (.+); do$", block, re.MULTILINE)
    assert loop and loop.group(1).split() == CLUSTER_JOBS
    assert "--packages io.delta:delta-spark_2.13:4.0.1 --py-files dist/pea_spark.zip" in block
    assert delta_package() == "io.delta:delta-spark_2.13:4.0.1"
    for setting in ["split.folds=3", "crossval.ablation=false"]:
        assert f"--set {setting}" in block
        assert setting in FAST_SETTINGS
    assert "pea serve-sql --port 10000 --pid-file cluster/serve-sql.pid" in block
    assert "beeline -u jdbc:hive2://127.0.0.1:10000" in block


def test_pipeline_stages_on_cluster(cluster: Cluster, spark, real_subset: Path):
    spark_submit(cluster, "ingest", "--input", str(real_subset))
    runs = {job: spark_submit(cluster, job) for job in CLUSTER_JOBS}
    scored = runs["score"]

    loaded = read_delta(spark, cluster, "ingest_audit").agg({"rows_loaded": "sum"}).first()[0]
    silver = read_delta(spark, cluster, "silver").count()
    predictions = read_delta(spark, cluster, "predictions")
    attacks = predictions.filter("is_attack_predicted = 1").select("flow_key")
    explained = read_delta(spark, cluster, "explanations").select("flow_key").distinct()
    assert loaded > 1000
    assert predictions.count() == silver
    assert predictions.select("flow_key").distinct().count() == silver
    assert attacks.count() > 0
    assert explained.count() == attacks.count()
    assert explained.join(attacks, "flow_key").count() == attacks.count()
    # spark-submit's PythonRunner sends the Python driver's stderr to stdout.
    assert "using spark-submit's master " + cluster.master in scored.stdout
    version = predictions.first()["model_version"]
    metrics = read_delta(spark, cluster, "metrics").filter(f"model_version = {version}")
    assert {r["model"] for r in metrics.select("model").distinct().collect()} >= {"cnn_lstm"}
    folds = read_delta(spark, cluster, "cv_metrics").filter(f"model_version = {version}")
    assert sorted(r["fold"] for r in folds.select("fold").distinct().collect()) == [0, 1, 2]
    assert {r["smote"] for r in folds.select("smote").distinct().collect()} == {True}
    report = cluster.warehouse / "pea" / "_reports" / f"v{version}" / "report.html"
    assert report.is_file()
    assert report.stat().st_size > 100_000


def test_train_ranks_ran_in_two_executors(cluster: Cluster):
    artifacts = sorted((cluster.warehouse / "pea" / "_models").glob("v*/artifact.json"))
    assert artifacts, "no model artifact: test_pipeline_stages_on_cluster must run first"
    ranks = json.loads(artifacts[-1].read_text())["training"]["ranks"]

    assert [rank["rank"] for rank in ranks] == [0, 1]
    assert "driver" not in {rank["executor_id"] for rank in ranks}
    assert len({rank["executor_id"] for rank in ranks}) == 2
    assert len({rank["executor_pid"] for rank in ranks}) == 2
    # Each rank imported pea_spark from its own executor's copy of the --py-files zip.
    copies = {f"{cluster.folder}/logs/worker-{n}/" for n in (1, 2)}
    for rank in ranks:
        file = rank["pea_spark_file"]
        assert re.match(r".*/logs/worker-[12]/app-[\d-]+/\d+/pea_spark\.zip/pea_spark/", file), rank
        assert any(file.startswith(prefix) for prefix in copies), rank
    assert len({rank["pea_spark_file"] for rank in ranks}) == 2


def executor_logs(cluster: Cluster, worker: str) -> list[Path]:
    return sorted((cluster.folder / "logs" / worker).glob("app-*/*/stderr"))


def wait_for_scoring_task(cluster: Cluster, worker: str, known: set[Path],
                          submit: subprocess.Popen) -> Path:
    """Wait until the new application's executor on ``worker`` runs a pandas UDF task.

    The executor logs Arrow's allocator start when its first pandas UDF task
    begins. It logs a ``Times:`` line when that task ends, and the kill must land
    between the two.
    """
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        assert submit.poll() is None, "spark-submit score ended before the worker was killed"
        for log in set(executor_logs(cluster, worker)) - known:
            text = log.read_text(errors="replace")
            if "BaseAllocator" in text and "ArrowEvalPython" not in text:
                return log
        time.sleep(0.2)
    pytest.fail(f"no pandas UDF task started on {worker} within {KILL_WAIT_S} s")


TASK_LINE = re.compile(r"(Running|Finished) task (\d+)\.(\d+) in stage (\d+)\.(\d+)")


def unfinished_tasks(log: str) -> set[tuple[str, str]]:
    """(stage id, task index) of the tasks an executor log shows started but not finished."""
    started, finished = set(), set()
    for event, index, _, stage, _ in TASK_LINE.findall(log):
        (started if event == "Running" else finished).add((stage, index))
    return started - finished


def retried_tasks(logs: list[Path], application: str) -> set[tuple[str, str]]:
    """(stage id, task index) of the tasks finished by a second or later attempt.

    A task lost with its executor runs again as attempt 1 of the same stage
    attempt, or as attempt 0 of a new stage attempt when its stage is resubmitted.
    """
    retried = set()
    for log in logs:
        if log.parent.parent.name != application:
            continue
        for event, index, attempt, stage, stage_attempt in TASK_LINE.findall(log.read_text()):
            if event == "Finished" and (attempt != "0" or stage_attempt != "0"):
                retried.add((stage, index))
    return retried


def test_score_survives_worker_kill(cluster: Cluster, spark, real_data: Path):
    source = real_data / WEB_FILE
    data_lines = len(source.read_bytes().splitlines()) - 1
    known = set(executor_logs(cluster, "worker-2"))
    worker_pid = int((cluster.folder / "worker-2.pid").read_text())
    command = [str(VENV_BIN / "spark-submit"), "--master", cluster.master,
               "--packages", delta_package(), "--py-files", str(cluster.package),
               "jobs/score.py", "--config", "conf/cluster.yaml",
               "--warehouse", str(cluster.warehouse), *cluster.options,
               "--set", "score.batch_size=256", "--input", str(source)]
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as submit:
        killed_log = wait_for_scoring_task(cluster, "worker-2", known, submit)
        # The worker's process group contains the Worker JVM and its executor JVM. The
        # executor's Python workers exit once their pipe to the executor closes.
        os.killpg(worker_pid, signal.SIGKILL)
        stdout, stderr = submit.communicate(timeout=1200)

    log = stdout + stderr
    assert submit.returncode == 0, f"score failed after the worker was killed:\n{log[-6000:]}"
    assert "Lost executor" in log
    lost = unfinished_tasks(killed_log.read_text(errors="replace"))
    assert lost, f"no task was running in {killed_log} when the worker was killed"
    retried = retried_tasks(executor_logs(cluster, "worker-1"), killed_log.parent.parent.name)
    assert lost <= retried, f"tasks lost with worker-2 {lost}, retried on worker-1 {retried}"
    predictions = read_delta(spark, cluster, "predictions")
    rows = predictions.filter(predictions.source_file.endswith(str(source)))
    assert rows.count() == data_lines
    assert rows.select("line_number").distinct().count() == data_lines


def test_cluster_stop_leaves_no_process(cluster: Cluster):
    pids = [int(path.read_text()) for path in cluster.folder.glob("*.pid")]
    assert pids

    stopped = cluster_pea(cluster.options, "cluster", "stop")

    assert stopped.returncode == 0, stopped.stderr
    assert not list(cluster.folder.glob("*.pid"))
    groups = process_groups()
    assert [pid for pid in pids if pid in groups] == []
    assert processes_under(cluster.folder) == []
    port = cluster.master.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        assert f"127.0.0.1:{port}" not in text, text
