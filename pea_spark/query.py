"""``pea sql``: run a Spark SQL query and print its rows as a table, CSV or JSON Lines."""

from __future__ import annotations

import csv
import datetime
import decimal
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, TextIO

from pyspark.errors import AnalysisException, ParseException, PySparkException
from pyspark.sql import Row, SparkSession

from pea_spark.config import PeaConfig
from pea_spark.session import TABLE_WRITERS, TABLES
from pea_spark.views import VIEW_SOURCES

__all__ = ["FORMATS", "QueryError", "format_table", "display_width", "run_query",
           "describe_error"]

FORMATS = ("table", "csv", "json")
# Rows the table format prints when --limit is not given; csv and json print all rows.
DEFAULT_TABLE_LIMIT = 50
_NUMBERS = (int, float, decimal.Decimal)


class QueryError(ValueError):
    """A query is invalid or refers to something that does not exist."""


def run_query(spark: SparkSession, config: PeaConfig, query: str, output: TextIO,
              fmt: str = "table", limit: int | None = None) -> int:
    """Run ``query`` and write its rows to ``output`` in format ``fmt``.

    Parameters
    ----------
    fmt : {"table", "csv", "json"}
        ``table`` aligns the columns and ends with a row count line; ``csv`` has
        a header line; ``json`` writes one JSON object per row (JSON Lines).
    limit : int, optional
        Rows to print, 0 for all. By default the table format prints 50 rows
        and the other formats print all rows.

    Returns
    -------
    int
        Rows the query returned. When ``limit`` cut the output, Spark counts
        them by running the query a second time.

    Notes
    -----
    The printed rows are collected to the driver.
    """
    if fmt not in FORMATS:
        raise ValueError(f"invalid output format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if limit is None:
        limit = DEFAULT_TABLE_LIMIT if fmt == "table" else 0
    if limit < 0:
        raise ValueError(f"invalid limit {limit}: expected 0 (all rows) or a positive number")
    try:
        df = spark.sql(query)
        rows = df.collect() if limit == 0 else df.take(limit + 1)
        total = len(rows)
        if limit and total > limit:
            rows = rows[:limit]
            total = df.count()
    except PySparkException as error:
        raise QueryError(describe_error(error, config)) from None
    columns = df.columns
    if fmt == "json":
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated:
            # A JSON object keeps one value per key, so the others would be lost.
            raise QueryError(f"the query returns more than one column named "
                             f"{', '.join(repeated)}, which JSON objects cannot hold: give "
                             f"each column its own name with AS, or use --format csv")
    if fmt == "table":
        output.write(format_table(columns, rows))
        if total > len(rows):
            output.write(f"({len(rows):,} of {total:,} rows; use --limit 0 to print all)\n")
        else:
            output.write(f"({_rows(total)})\n")
    elif fmt == "csv":
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _text(v) for v in row] for row in rows])
    else:
        for row in rows:
            output.write(json.dumps(_plain(row.asDict(recursive=True)), ensure_ascii=False,
                                    allow_nan=False))
            output.write("\n")
    return total


def _rows(count: int) -> str:
    return "1 row" if count == 1 else f"{count:,} rows"


def format_table(columns: Sequence[str], rows: Sequence[Row]) -> str:
    """Format ``rows`` as a table with a header, every value in full.

    Numbers are right-aligned, NULL is written ``NULL``, and line breaks and
    tabs inside strings are written as ``\\n`` and ``\\t`` so that each row stays
    on one line.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [_is_numeric([row[i] for row in rows]) for i in range(len(columns))]
    widths = [max([display_width(name), *(display_width(r[i]) for r in cells)])
              for i, name in enumerate(columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def line(values: Sequence[str], align: Sequence[bool]) -> str:
        padded = []
        for value, width, right in zip(values, widths, align, strict=True):
            fill = " " * (width - display_width(value))
            padded.append(fill + value if right else value + fill)
        return "| " + " | ".join(padded) + " |\n"

    body = "".join(line(r, numeric) for r in cells)
    return rule + line(columns, [False] * len(columns)) + rule + body + rule


def display_width(text: str) -> int:
    """Return the terminal columns that ``text`` takes: 2 for East Asian wide and
    full-width characters, 0 for combining marks and zero-width characters, 1 for others.
    """
    # NOTE: emoji sequences joined by U+200D, or with U+FE0F, count as the sum of their
    # characters, which differs from the 2 columns that most terminals draw.
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _is_numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, _NUMBERS) and not isinstance(v, bool)
                                 for v in present)


# Characters a terminal acts on instead of printing: C0 and C1 controls, DEL, and the
# Unicode line and paragraph separators. The table format writes them escaped.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    return _CONTROL.sub(_escape, _text(value))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        # Spark's spelling, which its CSV reader reads back.
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (decimal.Decimal, int, float, str)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, datetime.timedelta):
        return _interval(value)
    if isinstance(value, (Row, dict, list, tuple)):
        plain = _plain(value.asDict(recursive=True) if isinstance(value, Row) else value)
        return json.dumps(plain, ensure_ascii=False, allow_nan=False)
    if hasattr(value, "toJson"):
        # A VARIANT value (parse_json), written as its JSON text.
        return value.toJson()
    return str(value)


def _interval(value: datetime.timedelta) -> str:
    """Write a day-time interval as Spark SQL does: ``INTERVAL 'D HH:MM:SS' DAY TO SECOND``."""
    sign = "-" if value < datetime.timedelta(0) else ""
    total = abs(value)
    hours, rest = divmod(total.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = f".{total.microseconds:06d}".rstrip("0").rstrip(".") if total.microseconds else ""
    return (f"INTERVAL '{sign}{total.days} {hours:02d}:{minutes:02d}:{seconds:02d}{fraction}' "
            f"DAY TO SECOND")


def _plain(value: Any) -> Any:
    """Convert nested rows, dates, decimals and non-finite doubles into strict JSON values."""
    if isinstance(value, Row):
        value = value.asDict(recursive=True)
    if isinstance(value, dict):
        return {_text(k) if k is not None else "null": _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.timedelta, decimal.Decimal, bytes, bytearray)):
        return _text(value)
    if hasattr(value, "toJson"):
        return json.loads(value.toJson())
    if isinstance(value, float) and not math.isfinite(value):
        # Strict JSON has no NaN or Infinity, so strings keep them distinct from NULL.
        return _text(value)
    return value


def describe_error(error: PySparkException, config: PeaConfig) -> str:
    """Turn a Spark SQL error into a message that names the problem and the fix.

    A missing pea-spark table names the stage that writes it, a missing view
    names the tables it needs, and a syntax error keeps Spark's position marker.
    The JVM stack trace is left out.
    """
    condition = error.getCondition() if hasattr(error, "getCondition") else None
    message = _first_block(str(error))
    if isinstance(error, AnalysisException) and condition == "TABLE_OR_VIEW_NOT_FOUND":
        relation = (error.getMessageParameters() or {}).get("relationName", "")
        return _missing_relation(relation, config) + f" (Spark: {message.splitlines()[0]})"
    if isinstance(error, ParseException):
        return f"syntax error in the query: {message}"
    if isinstance(error, AnalysisException):
        return f"invalid query: {message}"
    return f"query failed: {message}"


def _first_block(text: str) -> str:
    # Spark adds the JVM stack trace after a "JVM stacktrace:" line when
    # spark.sql.pyspark.jvmStacktrace.enabled is true.
    message_lines = []
    for line in text.strip().splitlines():
        if line.startswith("JVM stacktrace:") or re.match(r"\s+at [\w$.]+\(", line):
            break
        message_lines.append(line)
    return "\n".join(message_lines).strip()


def _missing_relation(relation: str, config: PeaConfig) -> str:
    parts = [p.strip("`") for p in relation.split(".")] if relation else []
    name = parts[-1] if parts else relation
    database = parts[-2] if len(parts) >= 2 else None
    db = config.database
    where = f"warehouse {config.warehouse_path}"
    if database not in (None, db):
        return (f"table or view {'.'.join(parts)} not found: pea-spark's tables and views are "
                f"in database {db} (set with --set database=NAME), for example {db}.predictions")
    if database is None and (name in TABLES or name in VIEW_SOURCES):
        return f"table or view {name} not found: qualify it with its database, as {db}.{name}"
    if name in TABLES:
        return (f"table {db}.{name} not found in {where}: run `pea {TABLE_WRITERS[name]}` "
                f"first, or point --warehouse at the folder that holds it")
    if name in VIEW_SOURCES:
        sources = VIEW_SOURCES[name]
        stages = ", ".join(f"`pea {TABLE_WRITERS[s]}`" for s in sources)
        tables = ", ".join(f"{db}.{s}" for s in sources)
        return (f"view {db}.{name} not found in {where}: it is created when the tables "
                f"{tables} exist; run {stages} first")
    known = ", ".join([*TABLES, *VIEW_SOURCES])
    return (f"table or view {'.'.join(parts) or relation} not found: pea-spark's tables and "
            f"views are {known}, each in database {db}")
