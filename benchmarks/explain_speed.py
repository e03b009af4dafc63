"""Explanations per second: pea-spark's batch LIME engine against lime's own loop.

Usage::

    .venv/bin/python benchmarks/explain_speed.py [--flows 2000] [--samples 5000]
        [--lime-flows 100] [--warehouse DIR]

Without ``--warehouse`` the script first trains a small model (3 epochs) on
every 12th row of the real CICIDS2017 files under ``../shared/data/cicids2017``,
in a temporary warehouse. Both engines then run in this process, on the same
real flows of the silver table, with the same model and number of samples:

* batch: ``explain_rows(engine="batch")`` over ``--flows`` flows, with the
  perturbation cache cleared first, so the time includes drawing and
  predicting every shared perturbation set;
* batch, sets cached: the same again with the sets cached, as for every
  batch after the first in a Python worker;
* lime: ``explain_rows(engine="lime")``, lime's ``explain_instance`` per flow,
  over the first ``--lime-flows`` of those flows.

Fidelity figures come from the same flows. The exact match is the largest
weight difference between ``BatchExplainer.explain_each`` and lime with lime's
random states. The top-5 agreement is the mean share of top-5 features that
two explanations of a flow have in common: batch engine against lime, and lime
against lime with another seed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pea_spark.artifact import (  # noqa: E402
    load_keras_model,
    predict_probabilities,
    set_tensorflow_threads,
)
from pea_spark.config import PeaConfig, load_config  # noqa: E402
from pea_spark.explain import (  # noqa: E402
    build_batch_explainer,
    clear_perturbation_cache,
    explain_rows,
    flow_random_state,
)

DATA = REPO.parent / "shared" / "data" / "cicids2017"
REAL_FILES = [
    "MachineLearningCVE/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv",
    "web_attacks/web_attacks_balanced.csv",
    "grouped_sample/CICIDS2017_sample.csv",
]
STRIDE = 12
TOP = 5

logger = logging.getLogger("explain_speed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=2000,
                        help="flows explained by the batch engine (default: 2000, at most "
                             "the silver table's rows)")
    parser.add_argument("--lime-flows", type=int, default=100,
                        help="flows explained by the lime loop, twice (default: 100)")
    parser.add_argument("--exact-flows", type=int, default=5,
                        help="flows of the exact-match check (default: 5)")
    parser.add_argument("--samples", type=int, default=5000,
                        help="perturbed samples per explanation (default: 5000, lime's default)")
    parser.add_argument("--features", type=int, default=10,
                        help="features per explanation (default: 10)")
    parser.add_argument("--warehouse", type=Path,
                        help="warehouse of an earlier run to take the newest model and its "
                             "silver flows from (default: train a 3-epoch model first)")
    parser.add_argument("--database", default="pea", help="database in --warehouse")
    parser.add_argument("--data", type=Path, default=DATA,
                        help=f"folder of the real CICIDS2017 files (default: {DATA})")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads, as in a Spark worker (default: 1)")
    parser.add_argument("--seed", type=int, default=42, help="seed of both engines")
    args = parser.parse_args(argv)
    for name in ("flows", "lime_flows", "exact_flows", "features", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be an integer >= 1")
    if args.samples < 10:
        parser.error("--samples must be an integer >= 10")
    return args


def write_stride_sample(source_folder: Path, target_folder: Path) -> None:
    """Copy the header and every STRIDE-th data line of each real file."""
    for name in REAL_FILES:
        source = source_folder / name
        if not source.is_file():
            raise FileNotFoundError(f"real data file not found: {source}: pass --data DIR or "
                                    "--warehouse DIR of an earlier run")
        lines = source.read_bytes().splitlines(keepends=True)
        kept = [line for number, line in enumerate(lines[1:], start=1) if number % STRIDE == 0]
        target = target_folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lines[0] + b"".join(kept))


def train_small_model(spark, config: PeaConfig, data: Path, folder: Path) -> None:
    """Run the stages from ingest to train on a stride sample of the real files."""
    from pea_spark.clean import clean
    from pea_spark.ingest import ingest
    from pea_spark.selection import select
    from pea_spark.split import split
    from pea_spark.train import train

    sample = folder / "real_sample"
    write_stride_sample(data, sample)
    started = time.monotonic()
    ingest(spark, config, [sample])
    clean(spark, config)
    select(spark, config)
    split(spark, config)
    train(spark, config)
    logger.info("trained a %d-epoch model in %.0f s", config.train.epochs,
                time.monotonic() - started)


def load_model_and_flows(args: argparse.Namespace, folder: Path) -> SimpleNamespace:
    """Load the newest model's artifact and Keras model, and up to ``--flows`` silver flows."""
    from pea_spark.session import create_session, read_table
    from pea_spark.train import latest_artifact

    warehouse = args.warehouse or folder / "warehouse"
    config = load_config(None, [f"warehouse={warehouse}", f"database={args.database}",
                                f"seed={args.seed}", "spark.master=local[2]",
                                "spark.shuffle_partitions=4", "train.epochs=3"])
    spark = create_session(config)
    try:
        if args.warehouse is None:
            train_small_model(spark, config, args.data, folder)
        artifact = latest_artifact(spark, config)
        silver = read_table(spark, config, "silver").select("flow_key", *artifact.features)
        flows = silver.orderBy("flow_key").limit(args.flows).toPandas()
    finally:
        spark.stop()
    set_tensorflow_threads(args.threads)
    return SimpleNamespace(artifact=artifact, model=load_keras_model(artifact.path),
                           raw=flows[artifact.features].to_numpy(np.float64),
                           keys=flows["flow_key"].to_numpy(np.int64))


def timed_explanations(run: SimpleNamespace, args: argparse.Namespace, engine: str, count: int,
                       seed: int, cached: bool = False) -> tuple[pd.DataFrame, float]:
    """Explain the first ``count`` flows with ``engine``, and return the frame and seconds."""
    if not cached:
        clear_perturbation_cache()
    started = time.perf_counter()
    frame = explain_rows(run.artifact, run.model, run.raw[:count], run.keys[:count],
                         args.features, args.samples, seed, engine=engine,
                         perturbation_sets=PeaConfig().explain.perturbation_sets)
    return frame, time.perf_counter() - started


def exact_difference(run: SimpleNamespace, args: argparse.Namespace) -> float:
    """Largest weight difference between ``explain_each`` and lime, with lime's random states."""
    count = args.exact_flows
    expected = explain_rows(run.artifact, run.model, run.raw[:count], run.keys[:count],
                            args.features, args.samples, args.seed, engine="lime")
    explainer = build_batch_explainer(run.artifact, args.features)
    result = explainer.explain_each(
        run.raw[:count], lambda x: predict_probabilities(run.model, run.artifact, x, 8192),
        args.samples, [flow_random_state(key, args.seed) for key in run.keys[:count]])
    largest = 0.0
    for i, key in enumerate(run.keys[:count]):
        lime_weights = expected[expected["flow_key"] == key].set_index("feature")["weight"]
        features = [run.artifact.features[f] for f in result.features[i]]
        if set(features) != set(lime_weights.index):
            return float("inf")
        largest = max(largest, float(np.max(np.abs(
            lime_weights.loc[features].to_numpy() - result.weights[i]))))
    return largest


def top_features(frame: pd.DataFrame) -> dict[int, set[str]]:
    best = frame[frame["rank"] <= TOP]
    return {int(key): set(group["feature"]) for key, group in best.groupby("flow_key")}


def agreement(first: dict[int, set[str]], second: dict[int, set[str]]) -> tuple[float, float]:
    """Mean top-5 overlap share and share of flows with identical top-5 sets."""
    keys = sorted(first)
    overlap = np.mean([len(first[k] & second[k]) / TOP for k in keys])
    identical = np.mean([first[k] == second[k] for k in keys])
    return float(overlap), float(identical)


def report(args: argparse.Namespace, run: SimpleNamespace, timings: dict[str, tuple[int, float]],
           exact: float, engine_lime: tuple[float, float], lime_lime: tuple[float, float]) -> str:
    lime_rate = timings["lime"][0] / timings["lime"][1]
    lines = [
        f"Explanations per second: {args.samples} samples and {args.features} features per "
        f"flow, model v{run.artifact.version} ({len(run.artifact.features)} inputs), "
        f"{args.threads} TensorFlow thread(s), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        "",
        f"{'engine':<20}{'flows':>8}{'seconds':>10}{'flows/s':>11}{'ratio':>9}",
    ]
    for name, (flows, seconds) in timings.items():
        rate = flows / seconds
        lines.append(f"{name:<20}{flows:>8}{seconds:>10.2f}{rate:>11.2f}{rate / lime_rate:>9.1f}")
    lines += [
        "",
        f"Fidelity on the first {timings['lime'][0]} flows:",
        f"  exact match, explain_each vs lime ({args.exact_flows} flows): max abs weight "
        f"difference {exact:.1e}",
        f"  top-{TOP} mean overlap: batch vs lime {engine_lime[0]:.3f}, "
        f"lime vs lime {lime_lime[0]:.3f}",
        f"  identical top-{TOP} sets: batch vs lime {engine_lime[1]:.3f}, "
        f"lime vs lime {lime_lime[1]:.3f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="explain_speed_") as folder:
        run = load_model_and_flows(args, Path(folder))
    lime_flows = min(args.lime_flows, len(run.keys))
    logger.info("explaining %d flows with the batch engine and %d with lime", len(run.keys),
                lime_flows)
    batch, batch_seconds = timed_explanations(run, args, "batch", len(run.keys), args.seed)
    _, cached_seconds = timed_explanations(run, args, "batch", len(run.keys), args.seed,
                                           cached=True)
    lime_a, lime_seconds = timed_explanations(run, args, "lime", lime_flows, args.seed)
    lime_b, _ = timed_explanations(run, args, "lime", lime_flows, args.seed + 1)
    exact = exact_difference(run, args)
    reference = top_features(lime_a)
    engine_top = top_features(batch[batch["flow_key"].isin(list(reference))])
    engine_lime = agreement(engine_top, reference)
    lime_lime = agreement(top_features(lime_b), reference)
    timings = {"lime": (lime_flows, lime_seconds), "batch": (len(run.keys), batch_seconds),
               "batch, sets cached": (len(run.keys), cached_seconds)}
    print(report(args, run, timings, exact, engine_lime, lime_lime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
