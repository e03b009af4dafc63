"""Ingest CICFlowMeter CSV exports into the bronze Delta table.

Every data line of every input file ends in exactly one place. A flow goes to
the bronze table, its values kept as the original strings under canonical
column names. A line with the wrong number of fields or with text in a numeric
column goes to the quarantine table, with the reason. Empty lines and lines of
only commas are counted as skipped. The audit table contains
those counts per file and run, and ``lines_read`` always equals their sum.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pea_spark.config import PeaConfig
from pea_spark.schema import FEATURES, IDENTIFIERS, LABEL, HeaderMapping, map_header
from pea_spark.session import write_table

__all__ = ["InputError", "find_csv_files", "read_flows", "quarantine_rows", "ingest",
           "BRONZE_COLUMNS"]

logger = logging.getLogger(__name__)

BRONZE_COLUMNS = ["source_file", "line_number", *IDENTIFIERS, *FEATURES, LABEL]

_PARSED_SCHEMA = StructType(
    [
        StructField("status", StringType(), False),
        StructField("reason", StringType(), True),
        StructField("raw_line", StringType(), True),
        StructField("source_file", StringType(), False),
        StructField("line_number", LongType(), False),
        *[StructField(c, StringType(), True) for c in [*IDENTIFIERS, *FEATURES, LABEL]],
    ]
)

# Characters that Hadoop's path parser treats as glob syntax or as a separator.
_HADOOP_SPECIAL = "\\,{}[]*?"


class InputError(ValueError):
    """An input file or folder cannot be ingested; the message names it and the fix."""


@dataclass(frozen=True)
class CsvSource:
    """One input file with its resolved header."""

    path: Path
    header: list[str]
    mapping: HeaderMapping


def find_csv_files(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively for ``*.csv``) into sorted file paths.

    Raises
    ------
    InputError
        When a path does not exist or a folder contains no CSV file.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".csv")
            if not found:
                raise InputError(
                    f"no CSV file found under folder {path}: pass a folder that contains "
                    "CICFlowMeter exports ending in .csv"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"input not found: {path}: check the path, or omit --input "
                             "to run on the built-in example archive")
    # A file named twice (directly, or also through its folder) is read once.
    return list(dict.fromkeys(p.resolve() for p in files))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        first = handle.readline()
    if not first.strip():
        raise InputError(f"{path}: the file is empty or its first line is blank; "
                         "expected a CICFlowMeter CSV header on line 1")
    if b"\x00" in first:
        raise InputError(f"{path}: line 1 contains NUL bytes, so this is not a CSV text file")
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    unreadable = sum(1 for char in text if char == "\ufffd" or (char < " " and char != "\t"))
    if unreadable > len(text) // 20:
        raise InputError(f"{path}: line 1 has {unreadable} bytes that are not UTF-8 text, so "
                         "this is not a CSV text file; expected a CICFlowMeter CSV export")
    return next(csv.reader([text]))


def inspect_source(path: Path) -> CsvSource:
    """Read and resolve the header of one CSV file.

    Raises
    ------
    InputError
        When the header has no known CICFlowMeter feature column.
    """
    header = _read_header(path)
    mapping = map_header(header)
    if not mapping.features:
        shown = ", ".join(repr(h) for h in header[:5])
        raise InputError(
            f"{path}: no known CICFlowMeter feature column in the header (starts {shown}); "
            "expected columns such as 'Flow Duration' or 'Total Fwd Packets', so check that "
            "the file is a CICFlowMeter flow export with its header on line 1"
        )
    for column, position in mapping.repeated:
        logger.warning("%s: column %s repeated at position %d; the first copy is kept",
                       path.name, column, position + 1)
    if mapping.unknown:
        logger.warning("%s: %d columns with no known name are not loaded: %s",
                       path.name, len(mapping.unknown), ", ".join(mapping.unknown))
    return CsvSource(path, header, mapping)


def _hadoop_path(path: Path) -> str:
    text = str(path)
    for char in _HADOOP_SPECIAL:
        text = text.replace(char, "\\" + char)
    return "file://" + text


def _invalid_numbers(fields: list[str], numeric: list[tuple[str, int]]) -> list[str]:
    """Names of the numeric columns whose field is neither empty nor a number."""
    invalid = []
    for column, position in numeric:
        text = fields[position].strip()
        if not text:
            continue
        try:
            float(text)
        except ValueError:
            invalid.append(column)
            continue
        if "_" in text:  # Python reads 1_000 as a number, CSV readers do not
            invalid.append(column)
    return invalid


def _line_parser(source: CsvSource):
    """Build the function that turns ``(line, index)`` pairs into parsed rows."""
    width = len(source.header)
    columns = [*IDENTIFIERS, *FEATURES, LABEL]
    positions = [source.mapping.positions.get(c) for c in columns]
    numeric = [(c, source.mapping.positions[c]) for c in FEATURES if c in source.mapping.positions]
    file_name = str(source.path)
    empty = [None] * len(columns)

    def parse(pairs):
        for line, index in pairs:
            line_number = index + 1
            if index == 0:
                continue
            text = line.rstrip("\r")
            if not text.replace(",", "").strip():
                yield ("skipped", "empty line", None, file_name, line_number, *empty)
                continue
            fields = next(csv.reader([text]))
            if len(fields) != width:
                reason = f"expected {width} fields as in the header, found {len(fields)}"
                yield ("quarantined", reason, text, file_name, line_number, *empty)
                continue
            invalid = _invalid_numbers(fields, numeric)
            if invalid:
                reason = f"text that is not a number in column(s): {', '.join(invalid)}"
                yield ("quarantined", reason, text, file_name, line_number, *empty)
                continue
            values = [None if p is None else (fields[p].strip() or None) for p in positions]
            yield ("loaded", None, None, file_name, line_number, *values)

    return parse


def read_flows(spark: SparkSession, files: list[Path], min_partitions: int = 2) -> DataFrame:
    """Parse CSV files into one DataFrame of parsed lines, without writing anything.

    Parameters
    ----------
    files : list of Path
        CSV files with a CICFlowMeter header on line 1.
    min_partitions : int
        Minimum number of input splits per file.

    Returns
    -------
    DataFrame
        Columns ``status`` (loaded, quarantined, skipped), ``reason``, ``raw_line``,
        ``source_file``, ``line_number`` (1-based, the header is line 1), then every
        identifier, feature and the label as strings. Absent columns are null.

    Notes
    -----
    Line numbers come from ``zipWithIndex``, which runs one extra Spark job per
    file to count the lines of each partition.
    """
    sources = [inspect_source(path) for path in files]
    rdds = []
    for source in sources:
        lines = spark.sparkContext.textFile(_hadoop_path(source.path), min_partitions)
        rdds.append(lines.zipWithIndex().mapPartitions(_line_parser(source)))
    if not rdds:
        raise InputError("no input files given: pass --input with CSV files or folders")
    union = rdds[0] if len(rdds) == 1 else spark.sparkContext.union(rdds)
    return spark.createDataFrame(union, _PARSED_SCHEMA)


def quarantine_rows(parsed: DataFrame, run_id: str) -> DataFrame:
    """Select the quarantined lines of :func:`read_flows` output as quarantine table rows."""
    return parsed.filter(F.col("status") == "quarantined").select(
        F.lit(run_id).alias("run_id"), "source_file", "line_number", "raw_line", "reason",
        F.current_timestamp().alias("recorded_at"),
    )


def ingest(spark: SparkSession, config: PeaConfig, inputs: list[str | Path]) -> dict[str, int]:
    """Load CSV files into ``bronze``, unparseable lines into ``quarantine``, counts into
    ``ingest_audit``.

    The bronze table is replaced by the rows of these inputs; quarantine and
    audit rows of earlier runs are kept, tagged with their ``run_id``.

    Returns
    -------
    dict
        Totals over all files: ``files``, ``lines_read``, ``loaded``, ``quarantined``,
        ``skipped``.
    """
    start = time.monotonic()
    files = find_csv_files(inputs)
    logger.info("ingest: reading %d CSV files", len(files))
    run_id = uuid.uuid4().hex[:12]
    parsed = read_flows(spark, files, config.ingest.min_partitions).persist()
    try:
        bronze = parsed.filter(F.col("status") == "loaded").select(*BRONZE_COLUMNS)
        write_table(bronze, config, "bronze")
        write_table(quarantine_rows(parsed, run_id), config, "quarantine", mode="append")
        inventory = spark.createDataFrame(
            [(str(p), _file_sha256(p), p.stat().st_size) for p in files],
            "source_file string, sha256 string, size_bytes long")
        audit = _audit(parsed, inventory, run_id)
        write_table(audit, config, "ingest_audit", mode="append")
        rows = audit.collect()
    finally:
        parsed.unpersist()
    totals = {
        "files": len(files),
        "lines_read": sum(r["lines_read"] for r in rows),
        "loaded": sum(r["rows_loaded"] for r in rows),
        "quarantined": sum(r["rows_quarantined"] for r in rows),
        "skipped": sum(r["lines_skipped"] for r in rows),
    }
    if totals["quarantined"]:
        logger.warning("ingest: %d lines quarantined; see %s.quarantine for each line and "
                       "reason", totals["quarantined"], config.database)
    logger.info("ingest: %d files, %d lines read, %d loaded, %d quarantined, %d skipped "
                "in %.1f s", totals["files"], totals["lines_read"], totals["loaded"],
                totals["quarantined"], totals["skipped"], time.monotonic() - start)
    return totals


def _audit(parsed: DataFrame, inventory: DataFrame, run_id: str) -> DataFrame:
    """Build one audit row per input file, also for files with a header and no data line."""
    counted = parsed.groupBy("source_file").agg(
        F.sum(F.when(F.col("status") == "loaded", 1).otherwise(0)).alias("loaded"),
        F.sum(F.when(F.col("status") == "quarantined", 1).otherwise(0)).alias("quarantined"),
        F.sum(F.when(F.col("status") == "skipped", 1).otherwise(0)).alias("skipped"),
    )
    joined = inventory.join(counted, "source_file", "left").fillna(
        0, subset=["loaded", "quarantined", "skipped"])
    return joined.select(
        F.lit(run_id).alias("run_id"),
        "source_file",
        "sha256",
        "size_bytes",
        # The header line is read and skipped in every file.
        (F.col("loaded") + F.col("quarantined") + F.col("skipped") + 1)
        .cast("long").alias("lines_read"),
        F.col("loaded").cast("long").alias("rows_loaded"),
        F.col("quarantined").cast("long").alias("rows_quarantined"),
        (F.col("skipped") + 1).cast("long").alias("lines_skipped"),
        F.current_timestamp().alias("ingested_at"),
    )
