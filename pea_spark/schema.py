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
    "detect_dialect",
    "CORRECTED_2021_NAMES",
    "CSE_CIC_IDS2018_NAMES",
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

# Other spellings of the same columns, as written in the headers of the corrected
# 2021 CICIDS2017 release (Engelen et al.) and of CSE-CIC-IDS2018 (CICFlowMeter-V3),
# mapped to the original CICIDS2017 name. Names not listed here are spelled as in
# the original release. docs/columns.md shows this table next to the canonical names.
CORRECTED_2021_NAMES: dict[str, str] = {
    "Src IP": "Source IP",
    "Src Port": "Source Port",
    "Dst IP": "Destination IP",
    "Dst Port": "Destination Port",
    "Total Fwd Packet": "Total Fwd Packets",
    "Total Bwd packets": "Total Backward Packets",
    "Total Length of Fwd Packet": "Total Length of Fwd Packets",
    "Total Length of Bwd Packet": "Total Length of Bwd Packets",
    "Packet Length Min": "Min Packet Length",
    "Packet Length Max": "Max Packet Length",
    # The original release misnames the CWR flag counter as CWE.
    "CWR Flag Count": "CWE Flag Count",
    "Fwd Segment Size Avg": "Avg Fwd Segment Size",
    "Bwd Segment Size Avg": "Avg Bwd Segment Size",
    "Fwd Bytes/Bulk Avg": "Fwd Avg Bytes/Bulk",
    "Fwd Packet/Bulk Avg": "Fwd Avg Packets/Bulk",
    "Fwd Bulk Rate Avg": "Fwd Avg Bulk Rate",
    "Bwd Bytes/Bulk Avg": "Bwd Avg Bytes/Bulk",
    "Bwd Packet/Bulk Avg": "Bwd Avg Packets/Bulk",
    "Bwd Bulk Rate Avg": "Bwd Avg Bulk Rate",
    "FWD Init Win Bytes": "Init_Win_bytes_forward",
    "Bwd Init Win Bytes": "Init_Win_bytes_backward",
    "Fwd Act Data Pkts": "act_data_pkt_fwd",
    "Fwd Seg Size Min": "min_seg_size_forward",
}

CSE_CIC_IDS2018_NAMES: dict[str, str] = {
    "Src IP": "Source IP",
    "Src Port": "Source Port",
    "Dst IP": "Destination IP",
    "Dst Port": "Destination Port",
    "Tot Fwd Pkts": "Total Fwd Packets",
    "Tot Bwd Pkts": "Total Backward Packets",
    "TotLen Fwd Pkts": "Total Length of Fwd Packets",
    "TotLen Bwd Pkts": "Total Length of Bwd Packets",
    "Fwd Pkt Len Max": "Fwd Packet Length Max",
    "Fwd Pkt Len Min": "Fwd Packet Length Min",
    "Fwd Pkt Len Mean": "Fwd Packet Length Mean",
    "Fwd Pkt Len Std": "Fwd Packet Length Std",
    "Bwd Pkt Len Max": "Bwd Packet Length Max",
    "Bwd Pkt Len Min": "Bwd Packet Length Min",
    "Bwd Pkt Len Mean": "Bwd Packet Length Mean",
    "Bwd Pkt Len Std": "Bwd Packet Length Std",
    "Flow Byts/s": "Flow Bytes/s",
    "Flow Pkts/s": "Flow Packets/s",
    "Fwd IAT Tot": "Fwd IAT Total",
    "Bwd IAT Tot": "Bwd IAT Total",
    "Fwd Header Len": "Fwd Header Length",
    "Bwd Header Len": "Bwd Header Length",
    "Fwd Pkts/s": "Fwd Packets/s",
    "Bwd Pkts/s": "Bwd Packets/s",
    "Pkt Len Min": "Min Packet Length",
    "Pkt Len Max": "Max Packet Length",
    "Pkt Len Mean": "Packet Length Mean",
    "Pkt Len Std": "Packet Length Std",
    "Pkt Len Var": "Packet Length Variance",
    "FIN Flag Cnt": "FIN Flag Count",
    "SYN Flag Cnt": "SYN Flag Count",
    "RST Flag Cnt": "RST Flag Count",
    "PSH Flag Cnt": "PSH Flag Count",
    "ACK Flag Cnt": "ACK Flag Count",
    "URG Flag Cnt": "URG Flag Count",
    "ECE Flag Cnt": "ECE Flag Count",
    "Pkt Size Avg": "Average Packet Size",
    "Fwd Seg Size Avg": "Avg Fwd Segment Size",
    "Bwd Seg Size Avg": "Avg Bwd Segment Size",
    "Fwd Byts/b Avg": "Fwd Avg Bytes/Bulk",
    "Fwd Pkts/b Avg": "Fwd Avg Packets/Bulk",
    "Fwd Blk Rate Avg": "Fwd Avg Bulk Rate",
    "Bwd Byts/b Avg": "Bwd Avg Bytes/Bulk",
    "Bwd Pkts/b Avg": "Bwd Avg Packets/Bulk",
    "Bwd Blk Rate Avg": "Bwd Avg Bulk Rate",
    "Subflow Fwd Pkts": "Subflow Fwd Packets",
    "Subflow Fwd Byts": "Subflow Fwd Bytes",
    "Subflow Bwd Pkts": "Subflow Bwd Packets",
    "Subflow Bwd Byts": "Subflow Bwd Bytes",
    "Init Fwd Win Byts": "Init_Win_bytes_forward",
    "Init Bwd Win Byts": "Init_Win_bytes_backward",
    "Fwd Act Data Pkts": "act_data_pkt_fwd",
    "Fwd Seg Size Min": "min_seg_size_forward",
}

_ALIASES: dict[str, str] = {
    canonical_name(alias): canonical_name(original)
    for table in (CORRECTED_2021_NAMES, CSE_CIC_IDS2018_NAMES)
    for alias, original in table.items()
}
# Copies saved by pandas rename the repeated column to `Fwd Header Length.1`.
_ALIASES["fwd_header_length_1"] = "fwd_header_length"

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
        Header names that no alias resolves, stripped. Ingest keeps their values
        aside in bronze's ``extra_columns`` map, never among the features.
    unknown_positions : list[int]
        0-based position of each name in ``unknown``.
    """

    positions: dict[str, int]
    repeated: list[tuple[str, int]]
    unknown: list[str]
    unknown_positions: list[int]

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
    unknown_positions: list[int] = []
    for position, raw in enumerate(names):
        column = _resolve(raw.lstrip("\ufeff"))
        if column is None:
            unknown.append(raw.strip())
            unknown_positions.append(position)
        elif column in positions:
            repeated.append((column, position))
        else:
            positions[column] = position
    return HeaderMapping(positions, repeated, unknown, unknown_positions)


def detect_dialect(names: list[str]) -> str:
    """Name the CICFlowMeter export layout of a header, for the ingest audit.

    Returns one of ``cse-cic-ids2018``, ``cicids2017-2021`` (the corrected
    re-release), ``cicids2017-trafficlabelling`` or ``cicids2017-machinelearningcve``,
    with ``+pandas`` appended when pandas renamed a repeated column (``.1``).
    """
    stripped = {n.strip().lstrip("\ufeff").strip() for n in names}
    if stripped & {"Tot Fwd Pkts", "Flow Byts/s", "Pkt Size Avg"}:
        dialect = "cse-cic-ids2018"
    elif stripped & {"Total Fwd Packet", "Fwd Segment Size Avg", "FWD Init Win Bytes"}:
        dialect = "cicids2017-2021"
    elif stripped & {"Flow ID", "Source IP", "Timestamp"}:
        dialect = "cicids2017-trafficlabelling"
    else:
        dialect = "cicids2017-machinelearningcve"
    if any(re.fullmatch(r".+\.\d+", name) for name in stripped):
        dialect += "+pandas"
    return dialect


def alias_table_markdown() -> str:
    """Render the alias table as the Markdown of ``docs/columns.md``.

    Run ``python -m pea_spark.schema > docs/columns.md`` after changing an alias;
    a test checks that the page matches this function's output.
    """
    spelled_2021 = {original: alias for alias, original in CORRECTED_2021_NAMES.items()}
    spelled_2018 = {original: alias for alias, original in CSE_CIC_IDS2018_NAMES.items()}
    lines = [
        "# Column names across CICFlowMeter releases",
        "",
        "pea-spark stores every column under one canonical snake_case name (the Delta",
        "column name) and shows the original CICIDS2017 name in explanations. Ingest",
        "matches a header name to a column after trimming blanks, ignoring case and",
        "punctuation, so `' Flow Bytes/s'` and `flow bytes/s` both resolve. Header",
        "names that resolve to no row of this table are kept aside in",
        "`bronze.extra_columns` and listed in `ingest_audit.extra_columns`.",
        "",
        "Generated by `python -m pea_spark.schema`; do not edit by hand.",
        "",
        "| canonical name | CICIDS2017 (2017) | CICIDS2017 corrected (2021) | CSE-CIC-IDS2018 |",
        "| --- | --- | --- | --- |",
    ]
    for original in _ORIGINAL_IDENTIFIERS + _ORIGINAL_FEATURES + ["Label"]:
        canonical = LABEL if original == "Label" else canonical_name(original)
        lines.append(f"| `{canonical}` | {original} | {spelled_2021.get(original, original)} "
                     f"| {spelled_2018.get(original, original)} |")
    lines += ["", "Copies saved by pandas name the second `Fwd Header Length` "
              "`Fwd Header Length.1`; it resolves to `fwd_header_length` and is kept only "
              "when both copies hold equal values.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(alias_table_markdown(), end="")
