"""Write an archive of N flows by resampling the lines of real CICFlowMeter CSV files.

Usage::

    .venv/bin/python benchmarks/make_archive.py --rows 1000000 --output DIR
        [--max-file-rows 250000] [--seed 42] [--source FILE ...]

By default the sources are the three files of the original CICIDS2017 release
under ``../shared/data/cicids2017``, and each has its own layout. They are the
MachineLearningCVE file (leading spaces in names, CRLF line endings), the
TrafficLabelling-style web-attack file and the grouped sample saved by pandas.

* Rows are shared among the sources in proportion to their data lines
  (largest remainder), so the archive keeps the sources' mix of labels.
* Each output row is one data line of its source, copied byte for byte and
  drawn uniformly with replacement. Blank lines are never drawn.
* A source's rows go to files of at most ``--max-file-rows`` rows, as equal in
  size as possible. Every file starts with its source's header line, so each
  file has one layout and ``pea ingest`` resolves it as it does the source.
* Files are named ``<source stem>-part-NNNN.csv`` in the output folder.

The lines drawn from a source depend only on ``--seed``, the source's position
in the list and its share of the rows, not on ``--max-file-rows``: the same
rows split into 1 or 100 files read the same in order. The same arguments
write byte-identical files (the printed SHA-256 values match).

Memory: each source file is read whole (the shared files are a few MB), and
output lines are drawn and written in chunks of 65,536, so 3 million rows
never sit in memory at once.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cicids2017"
ORIGINAL_FILES = [
    "MachineLearningCVE/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    "web_attacks/web_attacks_balanced.csv",
    "grouped_sample/CICIDS2017_sample.csv",
]
DEFAULT_MAX_FILE_ROWS = 250_000
# Lines drawn per call to the random generator. The size is fixed, so the stream of
# draws does not depend on how the rows are split into files.
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class SourceFile:
    """A real CSV file read into memory: its header line and data lines, newlines kept."""

    path: Path
    header: bytes
    lines: list[bytes]


@dataclass(frozen=True)
class ArchiveFile:
    """One file written: its path, source, data rows, size in bytes and SHA-256."""

    path: Path
    source: Path
    rows: int
    size_bytes: int
    sha256: str


def read_source(path: Path) -> SourceFile:
    """Read a CSV file's header and non-blank data lines, each ending with a newline.

    Lines are split at line feeds only, so a CRLF file keeps its CRLF endings. A
    last line without a newline gets the header's line ending.
    """
    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {path}: pass --data DIR or --source FILE")
    pieces = path.read_bytes().split(b"\n")
    header = pieces[0] + b"\n"
    if not pieces[0].strip():
        raise ValueError(f"{path}: line 1 is empty, but a CSV header line was expected")
    newline = b"\r\n" if header.endswith(b"\r\n") else b"\n"
    lines = [piece + b"\n" for piece in pieces[1:-1] if piece.strip()]
    if pieces[-1].strip() and len(pieces) > 1:
        lines.append(pieces[-1].rstrip(b"\r") + newline)
    if not lines:
        raise ValueError(f"{path}: no data line after the header, so there is nothing to draw")
    return SourceFile(path, header, lines)


def share_rows(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` rows in proportion to ``weights`` by the largest-remainder method.

    Ties in the remainder go to the earlier source, so the split is deterministic.
    """
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def file_sizes(rows: int, max_file_rows: int) -> list[int]:
    """Rows per file: ``ceil(rows / max_file_rows)`` files whose sizes differ by at most 1."""
    if rows == 0:
        return []
    count = math.ceil(rows / max_file_rows)
    base, extra = divmod(rows, count)
    return [base + 1 if i < extra else base for i in range(count)]


def drawn_lines(source: SourceFile, rows: int, rng: np.random.Generator) -> Iterator[list[bytes]]:
    """Yield ``rows`` lines of ``source`` drawn with replacement, in chunks of CHUNK_ROWS."""
    for start in range(0, rows, CHUNK_ROWS):
        picks = rng.integers(0, len(source.lines), size=min(CHUNK_ROWS, rows - start))
        yield [source.lines[i] for i in picks]


def write_source(source: SourceFile, rows: int, sizes: list[int], output: Path,
                 rng: np.random.Generator) -> list[ArchiveFile]:
    """Write ``rows`` lines drawn from ``source`` into files of the given sizes."""
    chunks = drawn_lines(source, rows, rng)
    pending: list[bytes] = []
    written = []
    for part, size in enumerate(sizes, start=1):
        path = output / f"{source.path.stem}-part-{part:04d}.csv"
        digest = hashlib.sha256(source.header)
        size_bytes = len(source.header)
        with path.open("wb") as handle:
            handle.write(source.header)
            remaining = size
            while remaining:
                if not pending:
                    pending = next(chunks)
                block_rows = min(remaining, len(pending))
                block = b"".join(pending[:block_rows])
                pending = pending[block_rows:]
                remaining -= block_rows
                handle.write(block)
                digest.update(block)
                size_bytes += len(block)
        written.append(ArchiveFile(path, source.path, size, size_bytes, digest.hexdigest()))
    return written


def write_archive(sources: list[Path], rows: int, output: Path, max_file_rows: int,
                  seed: int) -> list[ArchiveFile]:
    """Write ``rows`` resampled lines of ``sources`` into CSV files under ``output``.

    Raises
    ------
    ValueError
        When ``rows`` or ``max_file_rows`` is below 1, two sources share a file
        stem, or ``output`` exists and is not empty.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if max_file_rows < 1:
        raise ValueError(f"max_file_rows must be at least 1, got {max_file_rows}")
    stems = [path.stem for path in sources]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ValueError(f"two sources have the same file stem {repeated[0]!r}, so their "
                         "output files would collide: pass sources with different names")
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"output folder {output} is not empty: choose a new folder or delete "
                         "this one, so that no file of an earlier archive is mixed in")
    loaded = [read_source(path) for path in sources]
    output.mkdir(parents=True, exist_ok=True)
    shares = share_rows(rows, [len(source.lines) for source in loaded])
    written = []
    for index, (source, share) in enumerate(zip(loaded, shares, strict=True)):
        rng = np.random.default_rng([seed, index])
        written += write_source(source, share, file_sizes(share, max_file_rows), output, rng)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True,
                        help="data rows in the whole archive, for example 100000, 1000000 or "
                             "3000000")
    parser.add_argument("--output", type=Path, required=True,
                        help="folder to write the CSV files into; it must be new or empty")
    parser.add_argument("--max-file-rows", type=int, default=DEFAULT_MAX_FILE_ROWS,
                        help=f"maximum data rows in one file (default: {DEFAULT_MAX_FILE_ROWS})")
    parser.add_argument("--seed", type=int, default=42, help="seed of the draws (default: 42)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help=f"folder of the original CICIDS2017 files (default: {DATA})")
    parser.add_argument("--source", type=Path, action="append",
                        help="a CSV file to draw from, instead of the three original files "
                             "under --data; repeat for several")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be an integer >= 1")
    if args.max_file_rows < 1:
        parser.error("--max-file-rows must be an integer >= 1")
    return args


def report(files: list[ArchiveFile], seconds: float, seed: int) -> str:
    """Format one line per file written and a total line."""
    lines = [f"{'file':<58}{'rows':>10}{'MB':>9}  sha256"]
    for item in files:
        lines.append(f"{item.path.name:<58}{item.rows:>10}{item.size_bytes / 1e6:>9.1f}  "
                     f"{item.sha256}")
    rows = sum(item.rows for item in files)
    size = sum(item.size_bytes for item in files)
    lines.append(f"wrote {rows} rows in {len(files)} files ({size / 1e6:.1f} MB) under "
                 f"{files[0].path.parent} in {seconds:.1f} s, seed {seed}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources = args.source or [args.data / name for name in ORIGINAL_FILES]
    started = time.perf_counter()
    try:
        files = write_archive(sources, args.rows, args.output, args.max_file_rows, args.seed)
    except (OSError, ValueError) as error:
        print(f"make_archive: error: {error}", file=sys.stderr)
        return 1
    print(report(files, time.perf_counter() - started, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
