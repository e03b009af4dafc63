"""Canonical column names for CICFlowMeter flow records.

CICFlowMeter exports name the same feature differently across releases: the
original CICIDS2017 files (``' Flow Duration'`` with a leading space,
``Fwd Header Length`` twice), copies saved by pandas (``Fwd Header Length.1``),
the corrected 2021 re-release (``Total Fwd Packet``, ``Dst Port``) and
CSE-CIC-IDS2018 (``Tot Fwd Pkts``, ``Flow Byts/s``). Every name is resolved to
one canonical snake_case name that Delta accepts; the display name shown in
explanations is the original CICIDS2017 spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FEATURES",
    "IDENTIFIERS",
    "LABEL",
    "DISPLAY_NAMES",
    "canonical_name",
    "HeaderMapping",
    "map_header",
]

# The 76 distinct flow features of the original CICIDS2017 MachineLearningCVE
# files, in their column order (the second `Fwd Header Length` is a copy).
_ORIGINAL_FEATURES = [
    "Flow Duration", "Total Fwd Packets", "Total Backward Packets",
    "Total Length of Fwd Packets", "Total Length of Bwd Packets",
    "Fwd Packet Length Max", "Fwd Packet Length Min", "Fwd Packet Length Mean",
    "Fwd Packet Length Std", "Bwd Packet Length Max", "Bwd Packet Length Min",
    "Bwd Packet Length Mean", "Bwd Packet Length Std", "Flow Bytes/s", "Flow Packets/s",
    "Flow IAT Mean", "Flow IAT Std", "Flow IAT Max", "Flow IAT Min",
    "Fwd IAT Total", "Fwd IAT Mean", "Fwd IAT Std", "Fwd IAT Max", "Fwd IAT Min",
    "Bwd IAT Total", "Bwd IAT Mean", "Bwd IAT Std", "Bwd IAT Max", "Bwd IAT Min",
    "Fwd PSH Flags", "Bwd PSH Flags", "Fwd URG Flags", "Bwd URG Flags",
    "Fwd Header Length", "Bwd Header Length", "Fwd Packets/s", "Bwd Packets/s",
    "Min Packet Length", "Max Packet Length", "Packet Length Mean", "Packet Length Std",
    "Packet Length Variance", "FIN Flag Count", "SYN Flag Count", "RST Flag Count",
    "PSH Flag Count", "ACK Flag Count", "URG Flag Count", "CWE Flag Count",
    "ECE Flag Count", "Down/Up Ratio", "Average Packet Size", "Avg Fwd Segment Size",
    "Avg Bwd Segment Size", "Fwd Avg Bytes/Bulk", "Fwd Avg Packets/Bulk",
    "Fwd Avg Bulk Rate", "Bwd Avg Bytes/Bulk", "Bwd Avg Packets/Bulk", "Bwd Avg Bulk Rate",
    "Subflow Fwd Packets", "Subflow Fwd Bytes", "Subflow Bwd Packets", "Subflow Bwd Bytes",
    "Init_Win_bytes_forward", "Init_Win_bytes_backward", "act_data_pkt_fwd",
    "min_seg_size_forward", "Active Mean", "Active Std", "Active Max", "Active Min",
    "Idle Mean", "Idle Std", "Idle Max", "Idle Min",
]

# Identifier columns of the TrafficLabelling layout. They trace a flow back to
# the capture and are never used as model features.
_ORIGINAL_IDENTIFIERS = [
    "Flow ID", "Source IP", "Source Port", "Destination IP", "Destination Port",
    "Protocol", "Timestamp",
]


def canonical_name(name: str) -> str:
    """Convert a CICFlowMeter column name to snake_case without spaces or ``/``.

    >>> canonical_name(" Flow Bytes/s")
    'flow_bytes_per_s'
    """
    text = name.strip().replace("/", " per ")
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")
    return text.lower()


FEATURES: list[str] = [canonical_name(n) for n in _ORIGINAL_FEATURES]
IDENTIFIERS: list[str] = [canonical_name(n) for n in _ORIGINAL_IDENTIFIERS]
LABEL = "label"
DISPLAY_NAMES: dict[str, str] = {
    canonical_name(n): n for n in _ORIGINAL_FEATURES + _ORIGINAL_IDENTIFIERS
}
DISPLAY_NAMES[LABEL] = "Label"

# Other spellings of the same columns, keyed by their canonical_name() form.
# Sources: the header of the corrected 2021 CICIDS2017 release (Engelen et al.)
# and of CSE-CIC-IDS2018 (CICFlowMeter-V3 short names).
_ALIASES: dict[str, str] = {
    # corrected 2021 release
    "src_ip": "source_ip",
    "src_port": "source_port",
    "dst_ip": "destination_ip",
    "dst_port": "destination_port",
    "total_fwd_packet": "total_fwd_packets",
    "total_bwd_packets": "total_backward_packets",
    "total_length_of_fwd_packet": "total_length_of_fwd_packets",
    "total_length_of_bwd_packet": "total_length_of_bwd_packets",
    "packet_length_min": "min_packet_length",
    "packet_length_max": "max_packet_length",
    "cwr_flag_count": "cwe_flag_count",
    "fwd_segment_size_avg": "avg_fwd_segment_size",
    "bwd_segment_size_avg": "avg_bwd_segment_size",
    "fwd_bytes_per_bulk_avg": "fwd_avg_bytes_per_bulk",
    "fwd_packet_per_bulk_avg": "fwd_avg_packets_per_bulk",
    "fwd_bulk_rate_avg": "fwd_avg_bulk_rate",
    "bwd_bytes_per_bulk_avg": "bwd_avg_bytes_per_bulk",
    "bwd_packet_per_bulk_avg": "bwd_avg_packets_per_bulk",
    "bwd_bulk_rate_avg": "bwd_avg_bulk_rate",
    "fwd_init_win_bytes": "init_win_bytes_forward",
    "bwd_init_win_bytes": "init_win_bytes_backward",
    "fwd_act_data_pkts": "act_data_pkt_fwd",
    "fwd_seg_size_min": "min_seg_size_forward",
    # CSE-CIC-IDS2018
    "tot_fwd_pkts": "total_fwd_packets",
    "tot_bwd_pkts": "total_backward_packets",
    "totlen_fwd_pkts": "total_length_of_fwd_packets",
    "totlen_bwd_pkts": "total_length_of_bwd_packets",
    "fwd_pkt_len_max": "fwd_packet_length_max",
    "fwd_pkt_len_min": "fwd_packet_length_min",
    "fwd_pkt_len_mean": "fwd_packet_length_mean",
    "fwd_pkt_len_std": "fwd_packet_length_std",
    "bwd_pkt_len_max": "bwd_packet_length_max",
    "bwd_pkt_len_min": "bwd_packet_length_min",
    "bwd_pkt_len_mean": "bwd_packet_length_mean",
    "bwd_pkt_len_std": "bwd_packet_length_std",
    "flow_byts_per_s": "flow_bytes_per_s",
    "flow_pkts_per_s": "flow_packets_per_s",
    "fwd_iat_tot": "fwd_iat_total",
    "bwd_iat_tot": "bwd_iat_total",
    "fwd_header_len": "fwd_header_length",
    "bwd_header_len": "bwd_header_length",
    "fwd_pkts_per_s": "fwd_packets_per_s",
    "bwd_pkts_per_s": "bwd_packets_per_s",
    "pkt_len_min": "min_packet_length",
    "pkt_len_max": "max_packet_length",
    "pkt_len_mean": "packet_length_mean",
    "pkt_len_std": "packet_length_std",
    "pkt_len_var": "packet_length_variance",
    "fin_flag_cnt": "fin_flag_count",
    "syn_flag_cnt": "syn_flag_count",
    "rst_flag_cnt": "rst_flag_count",
    "psh_flag_cnt": "psh_flag_count",
    "ack_flag_cnt": "ack_flag_count",
    "urg_flag_cnt": "urg_flag_count",
    "cwe_flag_cnt": "cwe_flag_count",
    "ece_flag_cnt": "ece_flag_count",
    "pkt_size_avg": "average_packet_size",
    "fwd_seg_size_avg": "avg_fwd_segment_size",
    "bwd_seg_size_avg": "avg_bwd_segment_size",
    "fwd_byts_per_b_avg": "fwd_avg_bytes_per_bulk",
    "fwd_pkts_per_b_avg": "fwd_avg_packets_per_bulk",
    "fwd_blk_rate_avg": "fwd_avg_bulk_rate",
    "bwd_byts_per_b_avg": "bwd_avg_bytes_per_bulk",
    "bwd_pkts_per_b_avg": "bwd_avg_packets_per_bulk",
    "bwd_blk_rate_avg": "bwd_avg_bulk_rate",
    "subflow_fwd_pkts": "subflow_fwd_packets",
    "subflow_fwd_byts": "subflow_fwd_bytes",
    "subflow_bwd_pkts": "subflow_bwd_packets",
    "subflow_bwd_byts": "subflow_bwd_bytes",
    "init_fwd_win_byts": "init_win_bytes_forward",
    "init_bwd_win_byts": "init_win_bytes_backward",
    # copies saved by pandas rename the repeated column
    "fwd_header_length_1": "fwd_header_length",
}

_KNOWN = set(FEATURES) | set(IDENTIFIERS) | {LABEL}


@dataclass(frozen=True)
class HeaderMapping:
    """Positions of the canonical columns in one CSV header.

    Attributes
    ----------
    positions : dict[str, int]
        Canonical column name to 0-based field position (first occurrence).
    repeated : list[tuple[str, int]]
        Canonical columns seen again after their first occurrence, with the
        position of the repeat; these copies are not loaded.
    unknown : list[str]
        Header names that no alias resolves; these columns are not loaded.
    """

    positions: dict[str, int]
    repeated: list[tuple[str, int]]
    unknown: list[str]

    @property
    def features(self) -> list[str]:
        """Canonical feature columns present in the header."""
        return [f for f in FEATURES if f in self.positions]


def _resolve(name: str) -> str | None:
    key = canonical_name(name)
    key = _ALIASES.get(key, key)
    return key if key in _KNOWN else None


def map_header(names: list[str]) -> HeaderMapping:
    """Resolve the names of one CSV header to canonical columns.

    Parameters
    ----------
    names : list of str
        Header fields as read from the file, untrimmed.

    Returns
    -------
    HeaderMapping
        Positions of known columns, repeated columns and unknown names.
    """
    positions: dict[str, int] = {}
    repeated: list[tuple[str, int]] = []
    unknown: list[str] = []
    for position, raw in enumerate(names):
        column = _resolve(raw.lstrip("\ufeff"))
        if column is None:
            unknown.append(raw.strip())
        elif column in positions:
            repeated.append((column, position))
        else:
            positions[column] = position
    return HeaderMapping(positions, repeated, unknown)
