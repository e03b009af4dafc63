"""The whole pipeline on resampled archives: wall time and peak memory of each stage.

Usage::

    .venv/bin/python benchmarks/pipeline_speed.py [--rows 100000 1000000 3000000]
        [--workdir DIR] [--seed 42] [--set KEY=VALUE ...] [--keep]

For each archive size the script writes an archive with ``make_archive.py``, a
seeded resampling of the three original CICIDS2017 files. It then runs the
stages of ``pea run`` on it, in order, in a new Python process with its own
Spark driver and a new warehouse. The stages are those of
``pea_spark.pipeline.pipeline_steps``: ingest, clean, select, split, train,
evaluate, crossval, score and explain. Cross-validation is off unless
``--set crossval.enabled=true`` is given: it evaluates the training recipe and
does not depend on the archive's size beyond the distinct flows.

A thread samples the resident memory (RSS) of the process tree every 0.2 s:
the Python driver, the Spark JVM (driver and executor in local mode) and the
Python workers, which are the pandas UDF workers and Horovod's ranks. The peak
of each is kept per stage. RSS counts a page shared by several processes once
in each, and PySpark forks its workers from one daemon, so the workers' figure
and the total overstate the memory in use. The archive is resampled from a few hundred
thousand distinct lines, so clean removes most rows as duplicates, and the
training stages see about the same rows at every size. Ingest, score and
explain see every flow.

The last table gives each stage's time per size as a ratio to the first
size, next to the ratio of the sizes: a stage whose ratio stays at or below
the size ratio grows no faster than the data. The archive and warehouse of
each size go under ``--workdir`` and are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from make_archive import DATA, ORIGINAL_FILES, write_archive  # noqa: E402

DEFAULT_ROWS = [100_000, 1_000_000, 3_000_000]
SAMPLE_SECONDS = 0.2
# Target time for scoring every flow of a 3-million-flow archive and explaining every
# predicted attack.
SCORE_EXPLAIN_TARGET_S = 1800.0
MB = 1e6

logger = logging.getLogger("pipeline_speed")


class MemorySampler(threading.Thread):
    """Sample the RSS of this process, its JVM and its other child processes.

    ``peaks()`` returns the largest value seen since the last ``reset()`` for
    the Python driver, the JVM, the other children together, and the whole tree.
    """

    def __init__(self, interval: float = SAMPLE_SECONDS) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.process = psutil.Process(os.getpid())
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.peak = {"driver": 0, "jvm": 0, "workers": 0, "total": 0}

    def peaks(self) -> dict[str, int]:
        self.sample()
        with self.lock:
            return dict(self.peak)

    def sample(self) -> None:
        driver = self.process.memory_info().rss
        jvm = workers = 0
        for child in self.process.children(recursive=True):
            try:
                rss = child.memory_info().rss
                name = child.name()
            except psutil.Error:
                continue  # the child ended between the listing and the read
            if name == "java":
                jvm += rss
            else:
                workers += rss
        with self.lock:
            for key, value in (("driver", driver), ("jvm", jvm), ("workers", workers),
                               ("total", driver + jvm + workers)):
                self.peak[key] = max(self.peak[key], value)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()


def stage_figure(name: str, result: Any) -> str:
    """Describe in a few words what a stage's summary reports."""
    if name == "ingest" and isinstance(result, dict):
        return f"{result['loaded']} lines loaded, {result['quarantined']} quarantined"
    if name == "clean" and isinstance(result, dict):
        return f"{result['silver']} silver rows, {result['training']} training rows"
    if name == "train":
        return f"model v{result}"
    if name == "score" and isinstance(result, dict):
        return f"{result['flows']} flows, {result['attacks']} predicted attacks"
    if name == "explain" and isinstance(result, dict):
        return f"{result['flows']} flows explained"
    if result is None:
        return "skipped"
    return ""


def run_stages(archive: Path, warehouse: Path, overrides: list[str], seed: int) -> dict:
    """Run every stage on ``archive`` into ``warehouse``, with this process as the Spark driver."""
    from pea_spark.config import load_config
    from pea_spark.pipeline import pipeline_steps
    from pea_spark.session import create_session

    sampler = MemorySampler()
    sampler.start()
    config = load_config(None, [f"warehouse={warehouse}", f"seed={seed}",
                                "crossval.enabled=false", *overrides])
    started = time.monotonic()
    spark = create_session(config)
    stages = [{"stage": "spark start", "seconds": time.monotonic() - started,
               "figure": "", **sampler.peaks()}]
    try:
        for name, step in pipeline_steps(spark, config, [archive]):
            sampler.reset()
            logger.info("stage %s", name)
            begun = time.monotonic()
            result = step()
            stages.append({"stage": name, "seconds": time.monotonic() - begun,
                           "figure": stage_figure(name, result), "result": result,
                           **sampler.peaks()})
            logger.info("stage %s: %.1f s", name, stages[-1]["seconds"])
    finally:
        spark.stop()
        sampler.stopped.set()
    return {"stages": stages, "seconds": time.monotonic() - started,
            "load_average": os.getloadavg()}


def child_main(args: argparse.Namespace) -> int:
    result = run_stages(args.archive, args.warehouse, args.overrides, args.seed)
    args.result.write_text(json.dumps(result, default=str))
    return 0


def run_size(rows: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Write the archive of ``rows`` flows, then run the stages on it in a new process."""
    archive = workdir / f"archive_{rows}"
    warehouse = workdir / f"warehouse_{rows}"
    result_file = workdir / f"result_{rows}.json"
    for path in (archive, warehouse):
        if path.exists():
            shutil.rmtree(path)
    started = time.monotonic()
    files = write_archive([args.data / name for name in ORIGINAL_FILES], rows, archive,
                          args.max_file_rows, args.seed)
    archive_seconds = time.monotonic() - started
    command = [sys.executable, __file__, "--child", "--archive", str(archive),
               "--warehouse", str(warehouse), "--result", str(result_file),
               "--seed", str(args.seed)]
    for override in args.overrides:
        command += ["--set", override]
    logger.info("%d rows: %d files in %.1f s; running the stages", rows, len(files),
                archive_seconds)
    try:
        subprocess.run(command, check=True)
        result = json.loads(result_file.read_text())
    finally:
        # A failed run also removes its archive and warehouse, which take gigabytes.
        if not args.keep:
            shutil.rmtree(archive, ignore_errors=True)
            shutil.rmtree(warehouse, ignore_errors=True)
    result.update(rows=rows, files=len(files), archive_seconds=archive_seconds,
                  archive_mb=sum(f.size_bytes for f in files) / MB)
    return result


def size_table(result: dict) -> str:
    lines = [f"### {result['rows']:,} flows ({result['files']} files, "
             f"{result['archive_mb']:.1f} MB, written in {result['archive_seconds']:.1f} s; "
             f"load average at the end {result['load_average'][0]:.1f})", "",
             "| stage | seconds | driver MB | JVM MB | workers MB | total MB | output |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for stage in result["stages"]:
        lines.append(f"| {stage['stage']} | {stage['seconds']:.1f} | {stage['driver'] / MB:.0f} "
                     f"| {stage['jvm'] / MB:.0f} | {stage['workers'] / MB:.0f} "
                     f"| {stage['total'] / MB:.0f} | {stage['figure']} |")
    lines.append(f"| all | {result['seconds']:.1f} | "
                 f"{max(s['driver'] for s in result['stages']) / MB:.0f} | "
                 f"{max(s['jvm'] for s in result['stages']) / MB:.0f} | "
                 f"{max(s['workers'] for s in result['stages']) / MB:.0f} | "
                 f"{max(s['total'] for s in result['stages']) / MB:.0f} | |")
    return "\n".join(lines)


def growth_table(results: list[dict]) -> str:
    first = results[0]
    header = ["stage"] + [f"{r['rows']:,} s" for r in results] + \
        [f"ratio {r['rows'] / first['rows']:g}x rows" for r in results[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    seconds = [{s["stage"]: s["seconds"] for s in r["stages"]} for r in results]
    skipped = {s["stage"] for s in first["stages"] if s["figure"] == "skipped"}
    for stage in [name for name in seconds[0] if name not in skipped]:
        values = [f"{s[stage]:.1f}" for s in seconds]
        ratios = [f"{s[stage] / seconds[0][stage]:.2f}" if seconds[0][stage] > 0 else "-"
                  for s in seconds[1:]]
        lines.append("| " + " | ".join([stage, *values, *ratios]) + " |")
    return "\n".join(lines)


def verdict(results: list[dict]) -> str:
    lines = []
    for result in results:
        seconds = {s["stage"]: s["seconds"] for s in result["stages"]}
        both = seconds["score"] + seconds["explain"]
        met = "within" if both < SCORE_EXPLAIN_TARGET_S else "over"
        lines.append(f"{result['rows']:,} flows: score + explain took {both:.0f} s, {met} the "
                     f"{SCORE_EXPLAIN_TARGET_S:.0f} s target; Python driver peak "
                     f"{max(s['driver'] for s in result['stages']) / MB:.0f} MB, JVM peak "
                     f"{max(s['jvm'] for s in result['stages']) / MB:.0f} MB")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=DEFAULT_ROWS,
                        help="archive sizes in flows, smallest first (default: 100000 "
                             "1000000 3000000)")
    parser.add_argument("--workdir", type=Path,
                        help="folder for the archives and warehouses (default: a new "
                             "temporary folder)")
    parser.add_argument("--max-file-rows", type=int, default=250_000,
                        help="maximum rows in one archive file (default: 250000)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the archive and the run")
    parser.add_argument("--data", type=Path, default=DATA,
                        help=f"folder of the original CICIDS2017 files (default: {DATA})")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="pea setting for the run; repeatable")
    parser.add_argument("--keep", action="store_true",
                        help="keep the archives and warehouses under --workdir")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(rows < 1 for rows in args.rows):
        parser.error("--rows takes integers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child:
        return child_main(args)
    from pea_spark.config import ConfigError, load_config

    try:
        # Settings are checked before any archive is written.
        load_config(None, args.overrides)
    except ConfigError as error:
        print(f"pipeline_speed: error: {error}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pea-pipeline-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"## Pipeline on resampled archives ({os.cpu_count()} CPUs, seed {args.seed})\n",
          flush=True)
    results = []
    try:
        for rows in args.rows:
            # Each size's table is printed when it is done, so a long run shows its progress.
            results.append(run_size(rows, args, workdir))
            print(size_table(results[-1]) + "\n", flush=True)
    except subprocess.CalledProcessError as error:
        print(f"pipeline_speed: error: the run of {rows} rows failed with exit status "
              f"{error.returncode}; its log is above", file=sys.stderr)
        return 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(results) > 1:
        print("### Stage time against archive size\n")
        print(growth_table(results) + "\n")
    print(verdict(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
