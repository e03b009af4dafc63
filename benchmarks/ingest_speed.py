"""Rows ingested per second: ``pea ingest`` against pyarrow's CSV reader and Parquet writer.

Usage::

    .venv/bin/python benchmarks/ingest_speed.py [--rows 200000] [--files 100]
        [--source FILE] [--cores N] [--seed 42]

``benchmarks/make_archive.py`` first draws ``--rows`` lines of one real
CICIDS2017 file (``--source``, by default the original MachineLearningCVE
file) into one CSV file, and the same lines, in the same order, into
``--files`` files. Both tools then read each set in this process:

* pea ingest: ``pea_spark.ingest.ingest`` into a new warehouse database on
  ``local[--cores]``. It hashes each file, parses every line in Python
  workers, resolves the column names, checks every number, and commits the
  bronze, quarantine and audit Delta tables. Line numbers come from
  ``zipWithIndex``, one Spark job per file, so many small files are slow.
* pyarrow: ``pyarrow.csv.read_csv`` and ``pyarrow.parquet.write_table`` per
  file, with ``--cores`` threads. It infers column types in C++ and neither
  checks values nor renames columns, so it is the floor for reading the
  same bytes and writing them as Parquet.

Before the timed runs, pea ingest loads a 100-row file into a database of its
own, so that Python workers are started. That warm-up is printed separately,
and ``--no-warm-up`` skips it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCHMARKS))

from make_archive import DATA, ORIGINAL_FILES, ArchiveFile, write_archive  # noqa: E402

from pea_spark.config import load_config  # noqa: E402

WARM_UP_ROWS = 100

logger = logging.getLogger("ingest_speed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = len(os.sched_getaffinity(0))
    default_source = DATA / ORIGINAL_FILES[0]
    parser.add_argument("--rows", type=int, default=200_000,
                        help="data rows ingested by each run (default: 200000)")
    parser.add_argument("--files", type=int, default=100,
                        help="files the same rows are split into for the second runs; each "
                             "holds at most ceil(rows / files) rows (default: 100)")
    parser.add_argument("--source", type=Path, default=default_source,
                        help=f"real CSV file the rows are drawn from (default: {default_source})")
    parser.add_argument("--cores", type=int, default=cores,
                        help=f"Spark task slots (local[N]) and pyarrow threads (default: {cores}, "
                             "the CPUs this process may use)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the row draw (default: 42)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the warm-up ingest, for quick checks: the first timed pea "
                             "ingest then includes starting Python workers")
    args = parser.parse_args(argv)
    for name in ("rows", "files", "cores"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be an integer >= 1")
    return args


def time_pyarrow(files: list[ArchiveFile], output: Path) -> dict:
    """Read each CSV file with pyarrow and write it as one Parquet file."""
    output.mkdir()
    rows = 0
    started = time.perf_counter()
    for item in files:
        table = pa_csv.read_csv(item.path)
        pq.write_table(table, output / f"{item.path.stem}.parquet")
        rows += table.num_rows
    return {"seconds": time.perf_counter() - started, "rows": rows, "files": len(files)}


def time_pea(spark, warehouse: Path, database: str, files: list[ArchiveFile]) -> dict:
    """Ingest the files into a new warehouse database with ``pea_spark.ingest.ingest``."""
    from pea_spark.ingest import ingest

    config = load_config(None, [f"warehouse={warehouse}", f"database={database}"])
    started = time.perf_counter()
    totals = ingest(spark, config, [item.path for item in files])
    return {"seconds": time.perf_counter() - started, "rows": totals["loaded"],
            "quarantined": totals["quarantined"], "files": len(files)}


def report(args: argparse.Namespace, files: dict[str, list[ArchiveFile]], warm_up: float | None,
           results: dict[str, dict]) -> str:
    rows = sum(item.rows for item in files["one"])
    size = sum(item.size_bytes for item in files["one"])
    baseline = rows / results["pyarrow, one file"]["seconds"]
    lines = [
        f"Rows ingested per second: {rows} rows ({size / 1e6:.1f} MB) drawn from "
        f"{args.source.name}, local[{args.cores}], {args.cores} pyarrow threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "",
        f"{'method':<26}{'files':>7}{'rows':>10}{'seconds':>10}{'rows/s':>11}{'ratio':>8}",
    ]
    for name, result in results.items():
        rate = rows / result["seconds"]
        lines.append(f"{name:<26}{result['files']:>7}{rows:>10}{result['seconds']:>10.2f}"
                     f"{rate:>11.0f}{rate / baseline:>8.3f}")
    warm_up_text = "skipped (--no-warm-up)" if warm_up is None else f"{warm_up:.2f} s"
    lines += ["", "ratio: rows/s against pyarrow on one file.",
              f"pea ingest warm-up ({WARM_UP_ROWS} rows into its own database): {warm_up_text}"]
    for name, result in results.items():
        if "quarantined" in result:
            lines.append(f"{name}: {result['rows']} rows loaded, {result['quarantined']} "
                         "quarantined")
    return "\n".join(lines)


def write_inputs(args: argparse.Namespace, folder: Path) -> dict[str, list[ArchiveFile]]:
    """Draw the rows into one file, into ``--files`` files, and a small warm-up file."""
    per_file = math.ceil(args.rows / args.files)
    return {
        "one": write_archive([args.source], args.rows, folder / "one", args.rows, args.seed),
        "many": write_archive([args.source], args.rows, folder / "many", per_file, args.seed),
        "warm_up": write_archive([args.source], WARM_UP_ROWS, folder / "warm_up", WARM_UP_ROWS,
                                 args.seed + 1),
    }


def run_all(args: argparse.Namespace, folder: Path) -> str:
    """Write the inputs, run both tools on both sets of files, and format the table."""
    from pea_spark.session import create_session

    files = write_inputs(args, folder)
    warehouse = folder / "warehouse"
    pa.set_cpu_count(args.cores)
    spark = create_session(load_config(None, [f"warehouse={warehouse}",
                                              f"spark.master=local[{args.cores}]",
                                              "spark.shuffle_partitions=4"]))
    try:
        warm_up = None
        if args.warm_up:
            warm_up = time_pea(spark, warehouse, "warm_up", files["warm_up"])["seconds"]
        logger.info("ingesting %d rows with pyarrow and pea ingest", args.rows)
        results = {
            "pyarrow, one file": time_pyarrow(files["one"], folder / "parquet_one"),
            "pyarrow, many files": time_pyarrow(files["many"], folder / "parquet_many"),
            "pea ingest, one file": time_pea(spark, warehouse, "one_file", files["one"]),
            "pea ingest, many files": time_pea(spark, warehouse, "many_files", files["many"]),
        }
    finally:
        spark.stop()
    for name, result in results.items():
        if result["rows"] + result.get("quarantined", 0) != args.rows:
            raise RuntimeError(f"{name} read {result['rows']} rows, expected {args.rows}")
    return report(args, files, warm_up, results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    # Every file of the many-files set repeats its source's header warnings.
    logging.getLogger("pea_spark.ingest").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="ingest_speed_") as folder:
        print(run_all(args, Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
