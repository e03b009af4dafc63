"""Ingest CICFlowMeter CSV exports into the bronze Delta table, incrementally.

Every line of every input file ends in exactly one place. A flow goes to the
bronze table, its values kept as the original strings under canonical column
names, with the values of columns that no alias resolves kept aside in
``extra_columns``. A line with the wrong number of fields or with text in a
numeric column goes to the quarantine table, with the reason. The header, empty
lines, lines of only commas and repeated headers are counted as skipped, by
reason. The audit table has those counts per file and run, and ``lines_read``
always equals ``rows_loaded + rows_quarantined + lines_skipped``.

Lines end at a line feed only (a carriage return before it is dropped), as ``wc -l`` and
``sed -n Np`` count them, so reported line numbers match those tools.

A file is identified by its path and the SHA-256 of its content. A file
ingested before with the same content adds nothing. A path whose content
changed has its old rows replaced, and no other rows are touched. A run parses its files into a
staging folder, then commits bronze, quarantine and audit under the warehouse
lock and journal of :mod:`pea_spark.transaction`, so a killed run leaves the
tables as they were, and two runs at once never interleave.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, MapType, StringType, StructField, StructType

from pea_spark.config import PeaConfig
from pea_spark.schema import (
    DISPLAY_NAMES,
    FEATURES,
    IDENTIFIERS,
    LABEL,
    HeaderMapping,
    detect_dialect,
    map_header,
)
from pea_spark.session import read_table, sql_string, table_exists, write_table
from pea_spark.transaction import (
    Journal,
    WarehouseLock,
    failpoint,
    ingest_folder,
    recover,
)

__all__ = ["InputError", "find_csv_files", "inspect_source", "read_flows", "quarantine_rows",
           "ingest", "file_sha256", "BRONZE_COLUMNS", "AUDIT_SCHEMA"]

logger = logging.getLogger(__name__)

_VALUE_COLUMNS = [*IDENTIFIERS, *FEATURES, LABEL]
BRONZE_COLUMNS = ["source_file", "line_number", "source_sha256", "run_id", *_VALUE_COLUMNS,
                  "extra_columns"]

_PARSED_SCHEMA = StructType(
    [
        StructField("status", StringType(), False),
        StructField("reason", StringType(), True),
        StructField("raw_line", StringType(), True),
        StructField("source_file", StringType(), False),
        StructField("line_number", LongType(), False),
        *[StructField(c, StringType(), True) for c in _VALUE_COLUMNS],
        StructField("extra_columns", MapType(StringType(), StringType()), True),
    ]
)

AUDIT_SCHEMA = (
    "run_id string, source_file string, sha256 string, size_bytes long, status string, "
    "dialect string, lines_read long, rows_loaded long, rows_quarantined long, "
    "lines_skipped long, skip_reasons map<string,long>, quarantine_reasons map<string,long>, "
    "extra_columns array<string>, dropped_columns array<string>, note string, "
    "ingested_at timestamp"
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
    dialect: str


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
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".csv"
                           and not p.name.startswith((".", "_")))
            if not found:
                raise InputError(
                    f"no CSV file found under folder {path}: pass a folder that contains "
                    "CICFlowMeter exports ending in .csv"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"input not found: {path}: check the path (pea run without "
                             "--input uses the built-in example archive, and score and "
                             "explain without --input read the silver table)")
    # A file named twice (directly, or also through its folder) is read once.
    unique = list(dict.fromkeys(p.resolve() for p in files))
    for path in unique:
        _check_readable_name(path)
    return unique


def _check_readable_name(path: Path) -> None:
    """Reject names that Hadoop's file input cannot open, naming the file and the fix."""
    if path.name.startswith((".", "_")):
        raise InputError(f"{path}: Hadoop skips files whose name starts with '.' or '_' as "
                         "hidden, so its lines would not be read; rename the file")
    for char, problem in ((",", "separates paths"), (":", "cannot appear in a path URI")):
        if char in str(path):
            raise InputError(f"{path}: {char!r} in a path {problem} for Hadoop's file input; "
                             "rename the file or folder without it")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, in hex; files are identified by it."""
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
    if "\r" in text:
        raise InputError(f"{path}: line 1 contains a carriage return, so the file uses "
                         "CR-only line endings; convert them to LF (for example with "
                         "`tr '\\r' '\\n'`) and ingest it again")
    return next(csv.reader([text]))


def inspect_source(path: Path) -> CsvSource:
    """Read and resolve the header of one CSV file.

    Raises
    ------
    InputError
        When the file is empty or not text, or its header has no known
        CICFlowMeter feature column.
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
        first = mapping.positions[column]
        logger.warning("%s: column %r at position %d repeats the one at position %d; one copy "
                       "is kept when both hold equal values", path.name, header[position].strip(),
                       position + 1, first + 1)
    if mapping.unknown:
        logger.warning("%s: %d columns have no known name and are kept aside in "
                       "bronze.extra_columns, not used as features: %s",
                       path.name, len(mapping.unknown), ", ".join(mapping.unknown))
    return CsvSource(path, header, mapping, detect_dialect(header))


def _hadoop_path(path: Path) -> str:
    text = str(path)
    for char in _HADOOP_SPECIAL:
        text = text.replace(char, "\\" + char)
    return "file://" + text


# Non-finite markers that the cleaning policy turns into 0.0 (CICFlowMeter writes
# Infinity and NaN; Spark's cast also reads the others).
NON_FINITE = {"infinity", "+infinity", "-infinity", "inf", "+inf", "-inf", "nan"}

# A decimal number in ASCII digits, as CICFlowMeter writes them. Python's float()
# also accepts 1_000, Unicode digits and +nan, which Spark cannot cast.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _invalid_numbers(fields: list[str], numeric: list[tuple[str, int]]) -> list[str]:
    """Names of the numeric columns whose field is neither empty, a number nor a
    non-finite marker of the cleaning policy (``Infinity``, ``NaN``, ...)."""
    invalid = []
    for column, position in numeric:
        text = fields[position].strip()
        if text and not _NUMBER.fullmatch(text) and text.lower() not in NON_FINITE:
            invalid.append(column)
    return invalid


def _same_value(first: str, second: str) -> bool:
    """Tell whether two copies of a column hold the same value (``32`` equals ``32.0``)."""
    first, second = first.strip(), second.strip()
    if first == second:
        return True
    try:
        a, b = float(first), float(second)
    except ValueError:
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


def _csv_error_reason(text: str, error: csv.Error) -> str:
    if "\x00" in text:
        return "not valid CSV: a NUL byte inside the line"
    if "\r" in text:
        return "not valid CSV: a carriage return inside the line"
    return f"not valid CSV: {error}"


def _line_parser(source: CsvSource):
    """Build the function that turns ``(line, index)`` pairs into parsed rows."""
    width = len(source.header)
    header_text = ",".join(source.header)
    positions = [source.mapping.positions.get(c) for c in _VALUE_COLUMNS]
    numeric = [(c, source.mapping.positions[c]) for c in FEATURES if c in source.mapping.positions]
    repeats = [(DISPLAY_NAMES.get(c, c), source.mapping.positions[c], p)
               for c, p in source.mapping.repeated]
    extras = list(zip(source.mapping.unknown, source.mapping.unknown_positions, strict=True))
    file_name = str(source.path)
    empty = [None] * len(_VALUE_COLUMNS)

    def outcome(status, reason, raw, line_number):
        return (status, reason, raw, file_name, line_number, *empty, None)

    def parse(pairs):
        for line, index in pairs:
            line_number = index + 1
            text = line.rstrip("\r")
            if index == 0:
                yield outcome("skipped", "header", None, line_number)
                continue
            if not text.replace(",", "").strip():
                yield outcome("skipped", "empty line", None, line_number)
                continue
            try:
                fields = next(csv.reader([text]))
            except csv.Error as error:
                yield outcome("quarantined", _csv_error_reason(text, error), text, line_number)
                continue
            if len(fields) != width:
                reason = f"expected {width} fields as in the header, found {len(fields)}"
                yield outcome("quarantined", reason, text, line_number)
                continue
            if ",".join(fields) == header_text:
                yield outcome("skipped", "repeated header", None, line_number)
                continue
            invalid = _invalid_numbers(fields, numeric)
            if invalid:
                reason = f"text that is not a number in column(s): {', '.join(invalid)}"
                yield outcome("quarantined", reason, text, line_number)
                continue
            differing = [(name, first, again) for name, first, again in repeats
                         if not _same_value(fields[first], fields[again])]
            if differing:
                name, first, again = differing[0]
                reason = (f"column {name!r} at positions {first + 1} and {again + 1} contains "
                          f"different values: {fields[first]!r} and {fields[again]!r}")
                yield outcome("mismatch", reason, text, line_number)
                continue
            values = [None if p is None else (fields[p].strip() or None) for p in positions]
            extra = {name: fields[p].strip() for name, p in extras} or None
            yield ("loaded", None, None, file_name, line_number, *values, extra)

    return parse


def _read_lines(spark: SparkSession, path: Path, min_partitions: int):
    """RDD of the lines of one file, split at line feeds only, as Python strings.

    Invalid UTF-8 bytes (a cp1252 ``0x96`` dash) become U+FFFD, as in Hadoop's Text.
    """
    size = max(path.stat().st_size, 1)
    conf = {
        "textinputformat.record.delimiter": "\n",
        "mapreduce.input.fileinputformat.split.maxsize":
            str(max(1 << 20, math.ceil(size / min_partitions))),
    }
    records = spark.sparkContext.newAPIHadoopFile(
        _hadoop_path(path), "org.apache.hadoop.mapreduce.lib.input.TextInputFormat",
        "org.apache.hadoop.io.LongWritable", "org.apache.hadoop.io.Text", conf=conf)
    return records.values()


def read_flows(spark: SparkSession, files: list[Path], min_partitions: int = 2) -> DataFrame:
    """Parse CSV files into one DataFrame of parsed lines, without writing anything.

    Parameters
    ----------
    files : list of Path
        CSV files with a CICFlowMeter header on line 1.
    min_partitions : int
        Input splits per file, for files over 1 MiB per split.

    Returns
    -------
    DataFrame
        Columns ``status`` (loaded, quarantined, skipped, mismatch), ``reason``,
        ``raw_line``, ``source_file``, ``line_number`` (1-based, the header is
        line 1), every identifier, feature and the label as strings (absent
        columns are null), and ``extra_columns``.

    Notes
    -----
    Line numbers come from ``zipWithIndex``, which runs one extra Spark job per
    file to count the lines of each partition.
    """
    if not files:
        raise InputError("no input files given: pass --input with CSV files or folders")
    sources = [inspect_source(path) for path in files]
    rdds = [_read_lines(spark, s.path, min_partitions).zipWithIndex()
            .mapPartitions(_line_parser(s)) for s in sources]
    union = rdds[0] if len(rdds) == 1 else spark.sparkContext.union(rdds)
    return spark.createDataFrame(union, _PARSED_SCHEMA)


def quarantine_rows(parsed: DataFrame, run_id: str) -> DataFrame:
    """Select the lines of :func:`read_flows` output that cannot be loaded, as quarantine rows.

    These are the quarantined lines and, when scoring, lines whose repeated
    column contains two different values. Ingest stops on those instead.
    """
    return parsed.filter(F.col("status").isin("quarantined", "mismatch")).select(
        F.lit(run_id).alias("run_id"), "source_file", "line_number", "raw_line", "reason",
        F.current_timestamp().alias("recorded_at"),
    )


@dataclass
class _Plan:
    """The action of one run on one input file."""

    source: CsvSource
    sha256: str
    size_bytes: int
    status: str  # new, replaced or unchanged
    note: str | None = None
    replaces_rows: bool = False

    @property
    def parse(self) -> bool:
        return self.status in ("new", "replaced")


def current_files(spark: SparkSession, config: PeaConfig) -> dict[str, str]:
    """Content hash now loaded for each source file, from the latest audit row that read it."""
    return {path: sha for path, (sha, _) in ingested_versions(spark, config).items()}


def ingested_versions(spark: SparkSession, config: PeaConfig) -> dict[str, tuple[str, datetime]]:
    """Content hash now loaded for each source file, with the time it was loaded."""
    if not table_exists(config, "ingest_audit"):
        return {}
    audit = read_table(spark, config, "ingest_audit").filter(
        F.col("status").isin("new", "replaced"))
    latest = audit.groupBy("source_file").agg(F.max_by("sha256", "ingested_at").alias("sha256"),
                                              F.max("ingested_at").alias("ingested_at"))
    return {r["source_file"]: (r["sha256"], r["ingested_at"]) for r in latest.collect()}


def _plan(sources: list[CsvSource], current: dict[str, str]) -> list[_Plan]:
    """Decide per file: ``unchanged`` (same path, same content), ``replaced`` or ``new``.

    A file is identified by its path and its content hash together. Two paths
    with the same content are both loaded; clean keeps one copy of their
    equal rows. (Treating the second path as a duplicate would lose rows when
    the first path later changes.)
    """
    plans = []
    for source in sources:
        path = str(source.path)
        # NOTE: the hash is taken before Spark reads the file. Lines appended during a
        # run are loaded under the earlier hash, and the next run replaces them.
        sha = file_sha256(source.path)
        plan = _Plan(source, sha, source.path.stat().st_size, "new")
        if current.get(path) == sha:
            plan.status = "unchanged"
            plan.note = "same content as when last ingested; nothing read"
        elif path in current:
            plan.status, plan.replaces_rows = "replaced", True
            plan.note = "content changed since the last ingest; its rows were replaced"
        plans.append(plan)
    return plans


def ingest(spark: SparkSession, config: PeaConfig, inputs: list[str | Path]) -> dict[str, int]:
    """Load new and changed CSV files into ``bronze``, bad lines into ``quarantine``, and
    one row per file into ``ingest_audit``.

    Files already ingested with the same content add nothing; a file whose
    content changed replaces its own rows. The three tables change together or
    not at all (see :mod:`pea_spark.transaction`).

    Returns
    -------
    dict
        Totals over all files: ``files``, ``lines_read``, ``loaded``, ``quarantined``,
        ``skipped``, and ``unchanged`` (files with nothing to read).

    Raises
    ------
    InputError
        When an input is missing, empty, not text or not a CICFlowMeter export,
        or when a repeated column contains different values. Nothing is written.
    ConflictError
        When another process keeps the warehouse lock longer than ``ingest.lock_timeout_s``.
    """
    start = time.monotonic()
    files = find_csv_files(inputs)
    sources = [inspect_source(path) for path in files]
    run_id = uuid.uuid4().hex[:12]
    logger.info("ingest: run %s over %d CSV files", run_id, len(files))
    with WarehouseLock(config, config.ingest.lock_timeout_s):
        recover(spark, config)
        # Under the lock no other run is active: staging folders left by runs killed
        # before their journal was written can go.
        shutil.rmtree(ingest_folder(config) / "staging", ignore_errors=True)
        plans = _plan(sources, current_files(spark, config))
        staging = ingest_folder(config) / "staging" / run_id
        try:
            counts = _stage(spark, config, plans, staging)
            _check_repeated_columns(spark, staging, plans)
            rows = _audit_rows(plans, counts, run_id)
            _publish(spark, config, plans, staging, rows, run_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    totals = {
        "files": len(files),
        "lines_read": sum(r[6] for r in rows),
        "loaded": sum(r[7] for r in rows),
        "quarantined": sum(r[8] for r in rows),
        "skipped": sum(r[9] for r in rows),
        "unchanged": sum(1 for p in plans if not p.parse),
    }
    if totals["quarantined"]:
        logger.warning("ingest: %d lines quarantined; see %s.quarantine for each line and "
                       "reason", totals["quarantined"], config.database)
    logger.info("ingest: %d files (%d unchanged), %d lines read, %d loaded, %d quarantined, "
                "%d skipped in %.1f s", totals["files"], totals["unchanged"],
                totals["lines_read"], totals["loaded"], totals["quarantined"],
                totals["skipped"], time.monotonic() - start)
    return totals


def _stage(spark: SparkSession, config: PeaConfig, plans: list[_Plan],
           staging: Path) -> dict[tuple[str, str, str | None], int]:
    """Parse the files to read into Parquet under ``staging``; count lines by outcome.

    Returns
    -------
    dict
        Line count keyed by (source_file, status, reason).
    """
    to_read = [p for p in plans if p.parse]
    if not to_read:
        return {}
    parsed = read_flows(spark, [p.source.path for p in to_read], config.ingest.min_partitions)
    hashes = spark.createDataFrame([(str(p.source.path), p.sha256) for p in to_read],
                                   "source_file string, source_sha256 string")
    parsed.join(F.broadcast(hashes), "source_file").write.mode("overwrite").parquet(str(staging))
    failpoint("after-staging")
    grouped = spark.read.parquet(str(staging)).groupBy("source_file", "status", "reason").count()
    return {(r["source_file"], r["status"], r["reason"]): int(r["count"])
            for r in grouped.collect()}


def _check_repeated_columns(spark: SparkSession, staging: Path, plans: list[_Plan]) -> None:
    """Raise InputError when two copies of a repeated column differ on any line."""
    if not any(p.parse and p.source.mapping.repeated for p in plans):
        return
    mismatched = (spark.read.parquet(str(staging)).filter(F.col("status") == "mismatch")
                  .groupBy("source_file")
                  .agg(F.count("*").alias("lines"),
                       F.min_by(F.struct("line_number", "reason"), "line_number").alias("first"))
                  .collect())
    if mismatched:
        details = "; ".join(
            f"{r['source_file']}: {r['lines']} differing lines, the first is line "
            f"{r['first']['line_number']}: {r['first']['reason']}" for r in mismatched)
        raise InputError(
            "invalid file: a repeated column contains different values, so it is not clear "
            f"which copy is the feature: {details}. Nothing was written: remove the wrong "
            "copy from the file "
            "(CICFlowMeter writes two equal copies of 'Fwd Header Length')")


def _audit_rows(plans: list[_Plan], counts: dict, run_id: str) -> list[tuple]:
    rows = []
    for plan in plans:
        path = str(plan.source.path)
        mine = {(status, reason): n for (file, status, reason), n in counts.items() if file == path}
        skipped = {reason: n for (status, reason), n in mine.items() if status == "skipped"}
        quarantined = {reason: n for (status, reason), n in mine.items()
                       if status == "quarantined"}
        loaded = sum(n for (status, _), n in mine.items() if status == "loaded")
        lines = sum(mine.values())
        repeated = [plan.source.header[p].strip() for _, p in plan.source.mapping.repeated]
        rows.append((
            run_id, path, plan.sha256, plan.size_bytes, plan.status, plan.source.dialect,
            lines, loaded, sum(quarantined.values()), sum(skipped.values()),
            skipped, quarantined, list(plan.source.mapping.unknown), repeated, plan.note,
        ))
    return rows


def _publish(spark: SparkSession, config: PeaConfig, plans: list[_Plan], staging: Path,
             rows: list[tuple], run_id: str) -> None:
    """Commit bronze, quarantine and audit as one unit, under the journal."""
    replaced = [str(p.source.path) for p in plans if p.parse or p.replaces_rows]
    audit = spark.createDataFrame(rows, AUDIT_SCHEMA.replace(", ingested_at timestamp", "")) \
        .withColumn("ingested_at", F.current_timestamp())
    journal = Journal(config)
    journal.begin(run_id)
    failpoint("after-journal")
    if replaced:
        staged = spark.read.parquet(str(staging)) if any(p.parse for p in plans) else None
        predicate = f"source_file IN ({', '.join(sql_string(f) for f in replaced)})"
        bronze = (staged.filter(F.col("status") == "loaded")
                  .withColumn("run_id", F.lit(run_id)).select(*BRONZE_COLUMNS)
                  if staged is not None else _empty(spark, "bronze"))
        _replace_rows(bronze, config, "bronze", predicate)
        failpoint("after-bronze")
        quarantine = (quarantine_rows(staged, run_id) if staged is not None
                      else _empty(spark, "quarantine"))
        _replace_rows(quarantine, config, "quarantine", predicate)
        failpoint("after-quarantine")
    write_table(audit, config, "ingest_audit", mode="append")
    journal.finish()


def _empty(spark: SparkSession, name: str) -> DataFrame:
    schema = StructType([f for f in _PARSED_SCHEMA.fields if f.name in BRONZE_COLUMNS])
    if name == "bronze":
        fields = {f.name: f for f in schema.fields}
        fields["source_sha256"] = StructField("source_sha256", StringType(), True)
        fields["run_id"] = StructField("run_id", StringType(), True)
        return spark.createDataFrame([], StructType([fields[c] for c in BRONZE_COLUMNS]))
    return spark.createDataFrame([], "run_id string, source_file string, line_number long, "
                                     "raw_line string, reason string, recorded_at timestamp")


def _replace_rows(df: DataFrame, config: PeaConfig, name: str, predicate: str) -> None:
    """Replace the rows matching ``predicate`` in one commit, or create the table."""
    if table_exists(config, name):
        write_table(df, config, name, mode="overwrite", replace_where=predicate)
    else:
        write_table(df, config, name)
