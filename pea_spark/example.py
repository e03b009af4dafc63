"""Write a small, seeded, synthetic example archive in the CICIDS2017 CSV format.

The flows are generated from hand-written distributions, not captured from a
network, so they contain no real traffic and no real host. They let a new user
run the pipeline without downloading CICIDS2017, and they carry the quirks of
the MachineLearningCVE CSV files that ingest code must handle:

* the original 79-column header, whose names mostly start with a space and
  which contains ``" Fwd Header Length"`` twice (both copies hold the same value);
* CRLF line endings and UTF-8 text, with an en dash in ``Web Attack – Brute Force``;
* the literal strings ``Infinity`` and ``NaN`` in the rate columns of
  zero-duration flows, and ``-1`` in the ``Init_Win_bytes_*`` columns;
* integers written without a decimal point, and floats with up to 10
  significant digits and no exponent, as in the original files.

Each label is a mixture of flow profiles, and up to 2% of each label's flows
are drawn from another label's profile, so no classifier can separate the
labels perfectly. ``tests/test_example.py`` checks that a random forest scores
an attack-versus-BENIGN F1 between 0.93 and 0.999 on a 70/30 split, and that
no single feature reaches 0.9 with a depth-3 decision tree.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Header of the CICIDS2017 MachineLearningCVE CSV files, spaces included.
HEADER: tuple[str, ...] = (
    " Destination Port",
    " Flow Duration",
    " Total Fwd Packets",
    " Total Backward Packets",
    "Total Length of Fwd Packets",
    " Total Length of Bwd Packets",
    " Fwd Packet Length Max",
    " Fwd Packet Length Min",
    " Fwd Packet Length Mean",
    " Fwd Packet Length Std",
    "Bwd Packet Length Max",
    " Bwd Packet Length Min",
    " Bwd Packet Length Mean",
    " Bwd Packet Length Std",
    "Flow Bytes/s",
    " Flow Packets/s",
    " Flow IAT Mean",
    " Flow IAT Std",
    " Flow IAT Max",
    " Flow IAT Min",
    "Fwd IAT Total",
    " Fwd IAT Mean",
    " Fwd IAT Std",
    " Fwd IAT Max",
    " Fwd IAT Min",
    "Bwd IAT Total",
    " Bwd IAT Mean",
    " Bwd IAT Std",
    " Bwd IAT Max",
    " Bwd IAT Min",
    "Fwd PSH Flags",
    " Bwd PSH Flags",
    " Fwd URG Flags",
    " Bwd URG Flags",
    " Fwd Header Length",
    " Bwd Header Length",
    "Fwd Packets/s",
    " Bwd Packets/s",
    " Min Packet Length",
    " Max Packet Length",
    " Packet Length Mean",
    " Packet Length Std",
    " Packet Length Variance",
    "FIN Flag Count",
    " SYN Flag Count",
    " RST Flag Count",
    " PSH Flag Count",
    " ACK Flag Count",
    " URG Flag Count",
    " CWE Flag Count",
    " ECE Flag Count",
    " Down/Up Ratio",
    " Average Packet Size",
    " Avg Fwd Segment Size",
    " Avg Bwd Segment Size",
    " Fwd Header Length",
    "Fwd Avg Bytes/Bulk",
    " Fwd Avg Packets/Bulk",
    " Fwd Avg Bulk Rate",
    " Bwd Avg Bytes/Bulk",
    " Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate",
    "Subflow Fwd Packets",
    " Subflow Fwd Bytes",
    " Subflow Bwd Packets",
    " Subflow Bwd Bytes",
    "Init_Win_bytes_forward",
    " Init_Win_bytes_backward",
    " act_data_pkt_fwd",
    " min_seg_size_forward",
    "Active Mean",
    " Active Std",
    " Active Max",
    " Active Min",
    "Idle Mean",
    " Idle Std",
    " Idle Max",
    " Idle Min",
    " Label",
)

BENIGN = "BENIGN"
DDOS = "DDoS"
PORTSCAN = "PortScan"
#: The separator is U+2013 EN DASH, not a hyphen.
WEB_BRUTE_FORCE = "Web Attack \u2013 Brute Force"
LABELS: tuple[str, ...] = (BENIGN, DDOS, PORTSCAN, WEB_BRUTE_FORCE)

MONDAY_FILE = "example-monday-benign.csv"
FRIDAY_FILE = "example-friday-mixed.csv"

#: Smallest ``rows`` for which every label gets at least one flow.
MIN_ROWS = 20

# Shares of all rows. The Monday file is BENIGN only, and the Friday file
# contains the rest of the BENIGN flows and all attacks.
_MONDAY_SHARE = 0.3
_ATTACK_SHARE = 0.4
_PORTSCAN_SHARE_OF_ATTACKS = 0.40
_BRUTE_FORCE_SHARE_OF_ATTACKS = 0.15

# Share of each file's flows that get Flow Duration 0, and the share of those
# that also carry no payload, which makes Flow Bytes/s 0/0 = NaN.
_ZERO_DURATION_SHARE = 0.01
_NO_PAYLOAD_SHARE_OF_ZERO_DURATION = 0.2

# As in the original files, only flows longer than 5 s get nonzero Active and
# Idle columns.
_ACTIVITY_TIMEOUT_US = 5_000_000
_MAX_PAYLOAD_BYTES = 1460
_MICROSECONDS_PER_SECOND = 1e6
_BULK_COLUMNS = (
    "Fwd Avg Bytes/Bulk",
    "Fwd Avg Packets/Bulk",
    "Fwd Avg Bulk Rate",
    "Bwd Avg Bytes/Bulk",
    "Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate",
)
_FLAG_COLUMNS = (
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
)


@dataclass(frozen=True)
class _FlowProfile:
    """Distribution of one kind of flow.

    Ranges are inclusive. Durations and packet counts are drawn log-uniformly,
    payloads uniformly. ``flags`` contains the probability of each flag in
    ``_FLAG_COLUMNS`` order. A UDP profile has no TCP window, so both
    ``Init_Win_bytes_*`` columns are -1.
    """

    ports: tuple[int, ...]
    random_port_share: float
    duration_us: tuple[float, float]
    fwd_packets: tuple[int, int]
    bwd_packets: tuple[int, int]
    fwd_payload: tuple[float, float]
    bwd_payload: tuple[float, float]
    flags: tuple[float, float, float, float, float, float]
    windows: tuple[int, ...] = ()
    udp: bool = False


_HTTPS = _FlowProfile(
    ports=(443,),
    random_port_share=0.0,
    duration_us=(1e3, 1.2e8),
    fwd_packets=(2, 200),
    bwd_packets=(1, 300),
    fwd_payload=(30, 600),
    bwd_payload=(100, 1400),
    flags=(0.5, 0.05, 0.1, 0.6, 0.8, 0.02),
    windows=(8192, 29200, 64240, 65535),
)
_HTTP = _FlowProfile(
    ports=(80, 8080),
    random_port_share=0.0,
    duration_us=(1e3, 1.2e8),
    fwd_packets=(2, 60),
    bwd_packets=(1, 80),
    fwd_payload=(20, 500),
    bwd_payload=(100, 1400),
    flags=(0.5, 0.05, 0.1, 0.6, 0.8, 0.05),
    windows=(251, 8192, 29200, 65535),
)
_DNS = _FlowProfile(
    ports=(53,),
    random_port_share=0.0,
    duration_us=(30, 2e5),
    fwd_packets=(1, 2),
    bwd_packets=(1, 2),
    fwd_payload=(28, 60),
    bwd_payload=(40, 300),
    flags=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    udp=True,
)
_OTHER = _FlowProfile(
    ports=(21, 22, 88, 123, 137, 139, 389, 445, 3389),
    random_port_share=0.5,
    duration_us=(1, 1.2e8),
    fwd_packets=(1, 50),
    bwd_packets=(0, 50),
    fwd_payload=(0, 800),
    bwd_payload=(0, 1200),
    flags=(0.4, 0.1, 0.1, 0.5, 0.6, 0.05),
    windows=(-1, 256, 8192, 29200, 65535),
)
# Handshakes, keep-alives and resets without payload.
_TCP_CONTROL = _FlowProfile(
    ports=(22, 80, 443, 445),
    random_port_share=0.3,
    duration_us=(1e3, 1e7),
    fwd_packets=(2, 4),
    bwd_packets=(1, 3),
    fwd_payload=(0, 6),
    bwd_payload=(0, 6),
    flags=(0.3, 0.3, 0.3, 0.0, 0.9, 0.0),
    windows=(256, 8192, 29200, 65535),
)
_HTTP_FLOOD = _FlowProfile(
    ports=(80,),
    random_port_share=0.0,
    duration_us=(30, 3e4),
    fwd_packets=(2, 8),
    bwd_packets=(1, 4),
    fwd_payload=(0, 60),
    bwd_payload=(0, 20),
    flags=(0.1, 0.3, 0.05, 0.2, 0.9, 0.3),
    windows=(256, 8192, 29200),
)
_PORT_PROBE = _FlowProfile(
    ports=(
        21,
        22,
        23,
        25,
        53,
        80,
        110,
        111,
        135,
        139,
        143,
        443,
        445,
        993,
        995,
        1723,
        3306,
        3389,
        5900,
        8080,
    ),
    random_port_share=0.5,
    duration_us=(3, 400),
    fwd_packets=(1, 2),
    bwd_packets=(1, 1),
    fwd_payload=(0, 6),
    bwd_payload=(0, 6),
    flags=(0.0, 0.6, 0.4, 0.0, 0.5, 0.0),
    windows=(1024, 2048, 3072, 4096, 29200),
)
_LOGIN_BRUTE_FORCE = _FlowProfile(
    ports=(80,),
    random_port_share=0.0,
    duration_us=(5e5, 2e7),
    fwd_packets=(3, 14),
    bwd_packets=(2, 12),
    fwd_payload=(400, 700),
    bwd_payload=(200, 1300),
    flags=(0.6, 0.1, 0.05, 0.9, 0.9, 0.0),
    windows=(8192, 29200, 65535),
)

# Profile mixture of each label. The small weights on other labels' profiles
# are the deliberate overlap that keeps a classifier below F1 = 1.
_CLASS_MIXES: dict[str, tuple[tuple[_FlowProfile, float], ...]] = {
    BENIGN: (
        (_HTTPS, 0.30),
        (_HTTP, 0.15),
        (_DNS, 0.13),
        (_OTHER, 0.265),
        (_TCP_CONTROL, 0.14),
        (_PORT_PROBE, 0.006),
        (_HTTP_FLOOD, 0.006),
        (_LOGIN_BRUTE_FORCE, 0.003),
    ),
    DDOS: ((_HTTP_FLOOD, 0.985), (_HTTP, 0.015)),
    PORTSCAN: ((_PORT_PROBE, 0.985), (_OTHER, 0.015)),
    WEB_BRUTE_FORCE: ((_LOGIN_BRUTE_FORCE, 0.98), (_HTTP, 0.02)),
}


def write_example_archive(folder: str | Path, rows: int = 6000, seed: int = 7) -> list[Path]:
    """Write the synthetic example archive as two CICIDS2017-style CSV files.

    ``example-monday-benign.csv`` contains 30% of the rows, all BENIGN.
    ``example-friday-mixed.csv`` contains the rest: BENIGN flows plus DDoS,
    PortScan and ``Web Attack – Brute Force`` flows, so that 40% of all rows
    are attacks.

    Parameters
    ----------
    folder : str or Path
        Output folder, created with its parents if missing. Existing files
        with the same names are overwritten.
    rows : int, default 6000
        Total number of flows over both files, at least ``MIN_ROWS``.
    seed : int, default 7
        Seed for ``numpy.random.default_rng``. The same seed and ``rows``
        give byte-identical files with the same numpy version.

    Returns
    -------
    list of Path
        Paths of the Monday file and the Friday file, in that order.

    Raises
    ------
    ValueError
        If ``rows`` is smaller than ``MIN_ROWS``.
    """
    if rows < MIN_ROWS:
        raise ValueError(f"rows must be at least {MIN_ROWS} so every label gets a flow, got {rows}")
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    monday_counts, friday_counts = _label_counts(rows)
    paths = []
    for name, counts in ((MONDAY_FILE, monday_counts), (FRIDAY_FILE, friday_counts)):
        columns = _derive_columns(rng, _sample_file_flows(rng, counts))
        path = out_dir / name
        _write_csv(path, columns)
        logger.info("Wrote %d synthetic flows to %s", sum(counts.values()), path)
        paths.append(path)
    return paths


def _label_counts(rows: int) -> tuple[dict[str, int], dict[str, int]]:
    """Split ``rows`` into per-label flow counts of the Monday and Friday files."""
    monday = round(rows * _MONDAY_SHARE)
    attacks = round(rows * _ATTACK_SHARE)
    brute_force = max(1, round(attacks * _BRUTE_FORCE_SHARE_OF_ATTACKS))
    portscan = round(attacks * _PORTSCAN_SHARE_OF_ATTACKS)
    friday = {
        BENIGN: rows - monday - attacks,
        DDOS: attacks - brute_force - portscan,
        PORTSCAN: portscan,
        WEB_BRUTE_FORCE: brute_force,
    }
    return {BENIGN: monday}, friday


def _log_uniform_int(
    rng: np.random.Generator, bounds: tuple[float, float], size: int
) -> np.ndarray:
    """Draw integers in the inclusive range ``bounds`` with a log-uniform density."""
    low, high = bounds
    draws = np.exp(rng.uniform(np.log(low + 1), np.log(high + 2), size)) - 1
    return np.clip(np.floor(draws), low, high).astype(np.int64)


def _sample_profile(
    rng: np.random.Generator, profile: _FlowProfile, size: int
) -> dict[str, np.ndarray]:
    """Draw the base quantities of ``size`` flows from one profile."""
    ports = rng.choice(np.array(profile.ports), size)
    random_ports = rng.integers(1, 65536, size)
    ports = np.where(rng.random(size) < profile.random_port_share, random_ports, ports)
    bwd = _log_uniform_int(rng, profile.bwd_packets, size)
    # A flow with one packet has no duration, so every profile flow gets two.
    fwd = np.maximum(_log_uniform_int(rng, profile.fwd_packets, size), 2 - bwd)
    # Keep the mean gap between packets at 1 µs or more, the resolution of Flow Duration.
    duration = np.exp(rng.uniform(*np.log(profile.duration_us), size))
    duration = np.maximum(np.rint(duration), fwd + bwd - 1).astype(np.int64)
    if profile.udp:
        windows = np.full((size, 2), -1, dtype=np.int64)
        header = np.full(size, 8, dtype=np.int64)
    else:
        windows = rng.choice(np.array(profile.windows), (size, 2))
        header = rng.choice(np.array([20, 32]), size)
    return {
        "port": ports.astype(np.int64),
        "fwd_packets": fwd,
        "bwd_packets": bwd,
        "duration": duration,
        "fwd_payload": rng.uniform(*profile.fwd_payload, size),
        "bwd_payload": rng.uniform(*profile.bwd_payload, size),
        "flags": (rng.random((size, 6)) < np.array(profile.flags)).astype(np.int64),
        "windows": windows.astype(np.int64),
        "header": header.astype(np.int64),
    }


def _sample_file_flows(rng: np.random.Generator, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """Draw the base quantities of one file's flows in shuffled order.

    About ``_ZERO_DURATION_SHARE`` of the flows get duration 0 and two
    packets, and a fifth of those also lose their payload, as in the original
    files.
    """
    parts = []
    for label, count in counts.items():
        profiles, weights = zip(*_CLASS_MIXES[label], strict=True)
        sizes = rng.multinomial(count, np.array(weights) / sum(weights))
        for profile, size in zip(profiles, sizes, strict=True):
            part = _sample_profile(rng, profile, int(size))
            part["label"] = np.full(int(size), label, dtype=object)
            parts.append(part)
    order = rng.permutation(sum(counts.values()))
    flows = {key: np.concatenate([part[key] for part in parts])[order] for key in parts[0]}

    total = order.size
    zero = rng.choice(total, max(1, round(total * _ZERO_DURATION_SHARE)), replace=False)
    no_payload = zero[: max(1, round(zero.size * _NO_PAYLOAD_SHARE_OF_ZERO_DURATION))]
    flows["duration"][zero] = 0
    flows["bwd_packets"][zero] = rng.integers(0, 2, zero.size)
    flows["fwd_packets"][zero] = 2 - flows["bwd_packets"][zero]
    flows["fwd_payload"][no_payload] = 0.0
    flows["bwd_payload"][no_payload] = 0.0
    return flows


def _draw_min_max(
    rng: np.random.Generator,
    total: np.ndarray,
    count: np.ndarray,
    cap: np.ndarray | int,
    min_cap: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the min and max of ``count`` non-negative integers summing to ``total``.

    Some set of integers with that sum, min and max always exists. The max
    stays at or below ``cap`` where the sum allows, and the min at or below
    ``min_cap``.
    """
    size = total.size
    gaps = np.maximum(count - 1, 1)
    low = np.floor(total / np.maximum(count, 1) * rng.random(size)).astype(np.int64)
    low = np.where(count == 2, np.floor(total * rng.uniform(0.0, 0.5, size)).astype(np.int64), low)
    if min_cap is not None:
        low = np.minimum(low, min_cap)
    low = np.where(count <= 1, total, low)

    # With min fixed, the max must let n - 1 values of at most max reach the sum.
    high_min = -((low - total) // gaps)
    high_max = np.minimum(total - gaps * low, np.maximum(cap, high_min))
    high = high_min + np.floor(rng.random(size) * (high_max - high_min + 1)).astype(np.int64)
    high = np.where(count == 2, total - low, high)
    high = np.where(count <= 1, total, high)
    return low, high


def _spread_stats(
    rng: np.random.Generator,
    total: np.ndarray,
    count: np.ndarray,
    cap: np.ndarray | int,
    min_cap: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Draw max, min, mean and sample std of ``count`` non-negative integers summing to ``total``.

    Only these statistics are drawn, never the values themselves. The min and
    max follow ``_draw_min_max``. The variance lies between its lower bound,
    with all other values at the mean, and the Bhatia-Davis upper bound
    ``(max - mean) * (mean - min)``. Two or three values get the exact
    statistics, because min, max and the sum then fix every value.
    """
    low, high = _draw_min_max(rng, total, count, cap, min_cap)
    n = np.maximum(count, 1)
    gaps = np.maximum(count - 1, 1)
    mean = total / n
    low_var = ((low - mean) ** 2 + (high - mean) ** 2) / n
    high_var = np.maximum((high - mean) * (mean - low), low_var)
    population_var = low_var + rng.random(total.size) * (high_var - low_var)
    middle = total - low - high
    population_var = np.where(count == 3, low_var + (middle - mean) ** 2 / n, population_var)
    std = np.sqrt(population_var * n / gaps)

    zero = count == 0
    return {
        "Max": np.where(zero, 0, high),
        "Min": np.where(zero, 0, low),
        "Mean": np.where(zero, 0.0, mean),
        "Std": np.where(count <= 1, 0.0, std),
    }


def _put_stats(columns: dict[str, np.ndarray], prefix: str, stats: dict[str, np.ndarray]) -> None:
    """Store ``stats`` under the column names ``"{prefix} Max"`` and so on."""
    for suffix, values in stats.items():
        columns[f"{prefix} {suffix}"] = values


def _size_columns(rng: np.random.Generator, flows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Derive the packet count and packet length columns."""
    fwd, bwd = flows["fwd_packets"], flows["bwd_packets"]
    fwd_bytes = np.rint(fwd * flows["fwd_payload"]).astype(np.int64)
    bwd_bytes = np.rint(bwd * flows["bwd_payload"]).astype(np.int64)
    fwd_stats = _spread_stats(rng, fwd_bytes, fwd, _MAX_PAYLOAD_BYTES)
    bwd_stats = _spread_stats(rng, bwd_bytes, bwd, _MAX_PAYLOAD_BYTES)
    columns = {
        "Total Fwd Packets": fwd,
        "Total Backward Packets": bwd,
        "Total Length of Fwd Packets": fwd_bytes,
        "Total Length of Bwd Packets": bwd_bytes,
        "Subflow Fwd Packets": fwd,
        "Subflow Fwd Bytes": fwd_bytes,
        "Subflow Bwd Packets": bwd,
        "Subflow Bwd Bytes": bwd_bytes,
        "Avg Fwd Segment Size": fwd_stats["Mean"],
        "Avg Bwd Segment Size": bwd_stats["Mean"],
    }
    _put_stats(columns, "Fwd Packet Length", fwd_stats)
    _put_stats(columns, "Bwd Packet Length", bwd_stats)
    columns.update(_flow_length_columns(fwd, bwd, fwd_stats, bwd_stats))
    return columns


def _flow_length_columns(
    fwd: np.ndarray,
    bwd: np.ndarray,
    fwd_stats: dict[str, np.ndarray],
    bwd_stats: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Combine the per-direction length statistics into the whole-flow columns."""
    packets = fwd + bwd
    total_bytes = fwd * fwd_stats["Mean"] + bwd * bwd_stats["Mean"]
    mean = total_bytes / packets
    # Pool the per-direction sample variances through the sums of squares.
    fwd_squares = fwd_stats["Std"] ** 2 * np.maximum(fwd - 1, 0) + fwd * fwd_stats["Mean"] ** 2
    bwd_squares = bwd_stats["Std"] ** 2 * np.maximum(bwd - 1, 0) + bwd * bwd_stats["Mean"] ** 2
    variance = np.maximum(fwd_squares + bwd_squares - packets * mean**2, 0.0) / (packets - 1)
    return {
        "Min Packet Length": np.where(
            bwd > 0, np.minimum(fwd_stats["Min"], bwd_stats["Min"]), fwd_stats["Min"]
        ),
        "Max Packet Length": np.maximum(fwd_stats["Max"], bwd_stats["Max"]),
        "Packet Length Mean": mean,
        "Packet Length Std": np.sqrt(variance),
        "Packet Length Variance": variance,
        "Average Packet Size": mean,
        "Down/Up Ratio": bwd // fwd,
    }


def _timing_columns(
    rng: np.random.Generator, flows: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Derive the inter-arrival time and active/idle columns, all in microseconds."""
    duration, fwd, bwd = flows["duration"], flows["fwd_packets"], flows["bwd_packets"]
    size = duration.size
    columns: dict[str, np.ndarray] = {"Flow Duration": duration}
    # Each gap between two packets of one direction contains at least one flow
    # gap, so the flow's smallest gap must not exceed either direction's.
    min_gap = duration.copy()
    for direction, packets, other in (("Fwd", fwd, bwd), ("Bwd", bwd, fwd)):
        # The span from a direction's first to last packet is the whole flow
        # when the other direction sent nothing.
        span = np.where(other > 0, np.rint(duration * rng.uniform(0.6, 1.0, size)), duration)
        span = np.where(packets >= 2, span, 0).astype(np.int64)
        stats = _spread_stats(rng, span, packets - 1, span)
        min_gap = np.where(packets >= 2, np.minimum(min_gap, stats["Min"]), min_gap)
        columns[f"{direction} IAT Total"] = span
        _put_stats(columns, f"{direction} IAT", stats)
    _put_stats(columns, "Flow IAT", _spread_stats(rng, duration, fwd + bwd - 1, duration, min_gap))

    long_flow = duration > _ACTIVITY_TIMEOUT_US
    idle_time = np.where(long_flow, np.rint(duration * rng.uniform(0.5, 0.95, size)), 0).astype(
        np.int64
    )
    idle_limit = np.clip(idle_time // _ACTIVITY_TIMEOUT_US, 1, np.maximum(fwd + bwd - 2, 1))
    idle_count = np.where(long_flow, 1 + np.floor(rng.random(size) * idle_limit), 0).astype(
        np.int64
    )
    active_count = np.where(long_flow, idle_count + 1, 0)
    _put_stats(columns, "Idle", _spread_stats(rng, idle_time, idle_count, idle_time))
    active_time = np.where(long_flow, duration - idle_time, 0)
    _put_stats(columns, "Active", _spread_stats(rng, active_time, active_count, active_time))
    return columns


def _rate_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Derive the per-second rates from the size and timing columns.

    As in the original files, a zero-duration flow gets Infinity in Flow
    Bytes/s and Flow Packets/s, NaN (0/0) in Flow Bytes/s when it carried no
    bytes, and 0 in Fwd and Bwd Packets/s.
    """
    seconds = columns["Flow Duration"] / _MICROSECONDS_PER_SECOND
    fwd, bwd = columns["Total Fwd Packets"], columns["Total Backward Packets"]
    flow_bytes = columns["Total Length of Fwd Packets"] + columns["Total Length of Bwd Packets"]
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = {
            "Flow Bytes/s": flow_bytes / seconds,
            "Flow Packets/s": (fwd + bwd) / seconds,
            "Fwd Packets/s": np.where(seconds > 0, fwd / seconds, 0.0),
            "Bwd Packets/s": np.where(seconds > 0, bwd / seconds, 0.0),
        }
    return rates


def _header_columns(
    rng: np.random.Generator, flows: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Derive the flag, header length, TCP window and label columns."""
    size = flows["port"].size
    fwd, bwd = flows["fwd_packets"], flows["bwd_packets"]
    flags, windows = flows["flags"], flows["windows"]
    zeros = np.zeros(size, dtype=np.int64)
    columns = {name: flags[:, index] for index, name in enumerate(_FLAG_COLUMNS)}
    columns.update({name: zeros for name in ("CWE Flag Count", "ECE Flag Count", "Bwd PSH Flags")})
    columns.update({name: zeros for name in ("Fwd URG Flags", "Bwd URG Flags")})
    columns.update({name: zeros for name in _BULK_COLUMNS})
    psh = flags[:, _FLAG_COLUMNS.index("PSH Flag Count")]
    columns["Fwd PSH Flags"] = psh * (rng.random(size) < 0.5)
    columns["Destination Port"] = flows["port"]
    columns["Fwd Header Length"] = fwd * flows["header"]
    columns["Bwd Header Length"] = bwd * flows["header"]
    columns["min_seg_size_forward"] = flows["header"]
    columns["Init_Win_bytes_forward"] = windows[:, 0]
    # A flow without backward packets never saw the receiver's window.
    columns["Init_Win_bytes_backward"] = np.where(bwd > 0, windows[:, 1], -1)
    columns["Label"] = flows["label"]
    return columns


def _derive_columns(
    rng: np.random.Generator, flows: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Derive every CSV column, keyed by its header name without surrounding spaces.

    Both ``" Fwd Header Length"`` columns strip to the same key, so they always
    hold the same values.
    """
    columns = _size_columns(rng, flows)
    columns.update(_timing_columns(rng, flows))
    columns.update(_rate_columns(columns))
    columns.update(_header_columns(rng, flows))
    fwd_bytes = columns["Total Length of Fwd Packets"]
    fwd_min = columns["Fwd Packet Length Min"]
    # An empty smallest packet leaves between 1 and n - 1 packets with payload.
    payload_packets = 1 + np.floor(rng.random(fwd_bytes.size) * (columns["Total Fwd Packets"] - 1))
    act_data = np.where(fwd_min > 0, columns["Total Fwd Packets"], payload_packets.astype(np.int64))
    columns["act_data_pkt_fwd"] = np.where(fwd_bytes > 0, act_data, 0)
    return columns


def _format_column(values: np.ndarray) -> np.ndarray:
    """Format one column as CSV strings in the notation of the original files."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str)
    if values.dtype.kind != "f":
        return values.astype(str)
    text = np.char.mod("%.10g", values).astype(object)
    # %.10g switches to an exponent below 1e-4 and from 1e10 on, which the
    # original files never use.
    magnitude = np.abs(np.nan_to_num(values, posinf=0.0, neginf=0.0))
    exponent = (magnitude >= 1e10) | ((magnitude > 0) & (magnitude < 1e-4))
    for index in np.flatnonzero(exponent):
        text[index] = np.format_float_positional(
            values[index], precision=10, unique=False, fractional=False, trim="-"
        )
    text = np.where(np.isnan(values), "NaN", text)
    text = np.where(np.isneginf(values), "-Infinity", text)
    return np.where(np.isposinf(values), "Infinity", text)


def _write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write the columns in ``HEADER`` order as UTF-8 CSV with CRLF line endings."""
    fields = [_format_column(columns[name.strip()]) for name in HEADER]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(zip(*fields, strict=True))
