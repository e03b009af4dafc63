"""Flows scored per second: pea-spark's pandas UDF against Keras and Spark's predict_batch_udf.

Usage::

    .venv/bin/python benchmarks/score_speed.py [--rows 200000] [--model ARTIFACT_DIR]
        [--batch-size 4096] [--cores N] [--partitions N] [--ghz GHZ]

Without ``--model`` the script first trains a 1-epoch model (ingest, clean,
select, split and train, with Horovod) on every 12th line of the real
CICIDS2017 files under ``--data``, in a temporary warehouse. The real flows of
those files, cleaned by pea-spark's policy, are drawn with replacement (seeded)
to ``--rows`` rows. All three methods then score these same rows with the same
model, the same input transform (``artifact.transform.apply``) and the same
batch size, in this process and its Spark workers:

* pea-spark: ``pea_spark.score.score_flows`` over a cached DataFrame of
  ``--partitions`` partitions on ``local[--cores]``. Its pandas UDF loads the
  model once per Python worker and runs one TensorFlow thread per worker. An
  aggregate over the probability column forces every row through the UDF.
* Keras: ``model.predict(batch_size=--batch-size)`` over all rows at once, in
  this process with ``--cores`` TensorFlow threads. The time includes the
  input transform.
* predict_batch_udf: ``pyspark.ml.functions.predict_batch_udf`` as its
  documentation shows it, over the same cached DataFrame. The features go in
  as one ``array`` column with ``input_tensor_shapes``, and the predict
  function returned by ``make_predict_fn`` calls ``model.predict`` on each
  batch (one TensorFlow thread per worker, as pea-spark).

Each Spark method first runs on a small DataFrame with one partition per
core, so Python workers start, import TensorFlow and load the model before the
timed run. That warm-up is printed separately, and ``--no-warm-up`` skips it.

The FLOP count of one forward pass is read from the model's layers. Conv1D
counts 2*k*c_in*c_out per output position, plus bias and ReLU. The LSTM counts
2*4*units*(input + units) per time step, plus 17*units for the gates' bias
and elementwise work, each sigmoid or tanh counted as one FLOP. The dense
output counts 2*in*out plus bias and sigmoid. The ceiling is an estimate:
physical cores * GHz * float32 FLOPs per cycle (32 with AVX2 FMA: two FMA
units, 8 float32 lanes, 2 FLOPs per FMA), read from /proc/cpuinfo.
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
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The real files and the quick model's stride sample are those of the explain benchmark.
from explain_speed import DATA, REAL_FILES, train_small_model  # noqa: E402

from pea_spark.artifact import ModelArtifact, load_artifact, set_tensorflow_threads  # noqa: E402
from pea_spark.config import PeaConfig, load_config  # noqa: E402

# Rows per core in the warm-up DataFrame.
WARM_UP_ROWS = 256

logger = logging.getLogger("score_speed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument("--rows", type=int, default=200_000,
                        help="flows scored by each method (default: 200000)")
    parser.add_argument("--model", type=Path,
                        help="model artifact folder, such as <warehouse>/pea/_models/v1 "
                             "(default: train a 1-epoch model first)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help=f"folder of the three real CICIDS2017 files (default: {DATA})")
    parser.add_argument("--batch-size", type=int, default=PeaConfig().score.batch_size,
                        help="rows per model call in every method (default: score.batch_size, "
                             f"{PeaConfig().score.batch_size})")
    parser.add_argument("--cores", type=int, default=cores,
                        help=f"Spark task slots (local[N]) and Keras threads (default: {cores}, "
                             "the CPUs this process may use)")
    parser.add_argument("--partitions", type=int,
                        help="partitions of the scored DataFrame (default: --cores)")
    parser.add_argument("--ghz", type=float,
                        help="clock for the ceiling estimate (default: 'cpu MHz' in /proc/cpuinfo)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the row draw and training")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the warm-up runs, for quick checks: the timed Spark runs then "
                             "include starting workers and loading the model")
    args = parser.parse_args(argv)
    for name in ("rows", "batch_size", "cores"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be an integer >= 1")
    args.partitions = args.partitions or args.cores
    if args.partitions < 1:
        parser.error("--partitions must be an integer >= 1")
    if args.ghz is not None and args.ghz <= 0:
        parser.error("--ghz must be a positive number")
    return args


def train_quick_model(spark, config: PeaConfig, data: Path, folder: Path) -> ModelArtifact:
    """Train a model on a stride sample of the real files and return its artifact."""
    from pea_spark.train import latest_artifact

    train_small_model(spark, config, data, folder)
    return latest_artifact(spark, config)


def real_flows(spark, config: PeaConfig, data: Path, features: list[str]) -> np.ndarray:
    """Features of every real flow in the three files, cleaned as ``pea score`` cleans CSV."""
    from pea_spark.score import load_flows

    missing = [name for name in REAL_FILES if not (data / name).is_file()]
    if missing:
        raise FileNotFoundError(f"real data file not found: {data / missing[0]}: pass --data DIR")
    flows = load_flows(spark, config, [data / name for name in REAL_FILES])
    return flows.select(*features).toPandas().to_numpy(np.float64)


def flows_frame(spark, features: list[str], raw: np.ndarray, partitions: int, path: Path):
    """Cached Spark DataFrame of ``raw`` with the columns ``score_flows`` needs.

    The rows go through a Parquet file at ``path``, so that Spark tasks do not
    carry them from the driver.
    """
    frame = pd.DataFrame(raw, columns=features)
    frame.insert(0, "flow_key", np.arange(len(raw), dtype=np.int64))
    frame.insert(1, "source_file", "resampled")
    frame.insert(2, "line_number", np.arange(1, len(raw) + 1, dtype=np.int64))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    df = spark.read.parquet(str(path)).repartition(partitions).cache()
    df.count()
    return df


def prepare(args: argparse.Namespace, folder: Path) -> SimpleNamespace:
    """Start Spark, train or load the model, and build the resampled rows."""
    from pea_spark.session import create_session

    config = load_config(None, [
        f"warehouse={folder / 'warehouse'}", f"seed={args.seed}",
        f"spark.master=local[{args.cores}]", "spark.shuffle_partitions=4",
        "train.epochs=1", f"train.num_proc={min(2, args.cores)}",
        f"score.batch_size={args.batch_size}",
    ])
    spark = create_session(config)
    if args.model is None:
        artifact = train_quick_model(spark, config, args.data, folder)
    else:
        artifact = load_artifact(args.model)
    real = real_flows(spark, config, args.data, artifact.features)
    picks = np.random.default_rng(args.seed).integers(0, len(real), size=args.rows)
    raw = real[picks]
    warm = None
    if args.warm_up:
        warm = flows_frame(spark, artifact.features, raw[: WARM_UP_ROWS * args.cores],
                           args.cores, folder / "warm_up_rows.parquet")
    return SimpleNamespace(
        spark=spark, config=config, artifact=artifact, raw=raw, real_rows=len(real), warm=warm,
        flows=flows_frame(spark, artifact.features, raw, args.partitions,
                          folder / "rows.parquet"),
    )


def time_keras(run: SimpleNamespace, model, batch_size: int) -> dict:
    """Transform and ``model.predict`` all rows in this process."""
    started = time.perf_counter()
    scaled = run.artifact.transform.apply(run.raw)
    transformed = time.perf_counter()
    inputs = scaled.reshape(scaled.shape[0], scaled.shape[1], 1)
    probabilities = model.predict(inputs, batch_size=batch_size, verbose=0).reshape(-1)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "transform_seconds": transformed - started,
            "rows": len(probabilities),
            "sum": float(probabilities.astype(np.float64).sum()),
            "attacks": int((probabilities >= run.artifact.threshold).sum())}


def aggregate(df, probability: str, threshold: float) -> dict:
    """Sum the probability column and count attacks, so Spark runs every row through the UDF."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    row = df.agg(F.sum(probability).alias("sum"), F.count("*").alias("rows"),
                 F.sum((F.col(probability) >= threshold).cast("int")).alias("attacks")).first()
    return {"seconds": time.perf_counter() - started, "sum": float(row["sum"]),
            "rows": int(row["rows"]), "attacks": int(row["attacks"])}


def time_pea(run: SimpleNamespace) -> dict:
    """Warm up, then time ``score_flows`` over the cached rows."""
    from pea_spark.score import score_flows

    def score(df) -> dict:
        return aggregate(score_flows(df, run.artifact, run.config), "attack_probability",
                         run.artifact.threshold)

    warm_up = score(run.warm)["seconds"] if run.warm is not None else None
    return {**score(run.flows), "warm_up_seconds": warm_up}


def make_predict_fn_factory(artifact: ModelArtifact):
    """Return a ``make_predict_fn`` for predict_batch_udf that loads the artifact's model."""

    def make_predict_fn():
        import tensorflow as tf

        set_tensorflow_threads(1)
        model = tf.keras.models.load_model(os.path.join(artifact.path, "model.keras"),
                                           compile=False)

        def predict(features: np.ndarray) -> np.ndarray:
            scaled = artifact.transform.apply(features)
            inputs = scaled.reshape(scaled.shape[0], scaled.shape[1], 1)
            return model.predict(inputs, batch_size=len(inputs), verbose=0).reshape(-1)

        return predict

    return make_predict_fn


def time_predict_batch_udf(run: SimpleNamespace, batch_size: int) -> dict:
    """Warm up, then time Spark's ``predict_batch_udf`` over the cached rows."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql.types import FloatType

    features = run.artifact.features
    udf = predict_batch_udf(make_predict_fn_factory(run.artifact), return_type=FloatType(),
                            batch_size=batch_size, input_tensor_shapes=[[len(features)]])
    column = udf(F.array(*features)).alias("probability")

    def score(df) -> dict:
        return aggregate(df.select(column), "probability", run.artifact.threshold)

    warm_up = score(run.warm)["seconds"] if run.warm is not None else None
    return {**score(run.flows), "warm_up_seconds": warm_up}


def forward_flops(model) -> int:
    """FLOPs of one forward pass of one flow through the model's layers (see the module doc)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv1D":
            positions, c_out = layer.output_shape[1], layer.filters
            c_in, kernel = layer.input_shape[-1], layer.kernel_size[0]
            total += positions * (2 * kernel * c_in * c_out + 2 * c_out)
        elif kind == "LSTM":
            steps, inputs, units = layer.input_shape[1], layer.input_shape[-1], layer.units
            total += steps * (2 * 4 * units * (inputs + units) + 17 * units)
        elif kind == "Dense":
            inputs, units = layer.input_shape[-1], layer.units
            total += 2 * inputs * units + 2 * units
        elif layer.weights:
            raise ValueError(f"cannot count the FLOPs of layer {layer.name!r} of type {kind}: "
                             "only Conv1D, LSTM and Dense layers are counted")
    return total


def cpu_ceiling(ghz_override: float | None) -> SimpleNamespace:
    """Estimate the float32 FLOP/s peak from /proc/cpuinfo: cores * GHz * FLOPs per cycle."""
    allowed = os.sched_getaffinity(0)
    blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    cpus = []
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        if int(fields.get("processor", -1)) in allowed:
            cpus.append(fields)
    cores = len({(cpu.get("physical id"), cpu.get("core id", cpu["processor"])) for cpu in cpus})
    mhz = [float(cpu["cpu MHz"]) for cpu in cpus if "cpu MHz" in cpu]
    ghz = ghz_override or (sum(mhz) / len(mhz) / 1000 if mhz else 0.0)
    if not cpus or ghz <= 0:
        raise ValueError("cannot read the CPUs or their clock from /proc/cpuinfo for the "
                         "ceiling estimate: pass --ghz")
    flags = set(cpus[0].get("flags", "").split())
    fma = {"avx2", "fma"} <= flags
    per_cycle = 32 if fma else 8
    return SimpleNamespace(
        cores=cores, logical=len(cpus), ghz=ghz, per_cycle=per_cycle,
        flops=cores * ghz * 1e9 * per_cycle,
        model=cpus[0].get("model name", "unknown CPU"),
        ghz_source="--ghz" if ghz_override else "mean 'cpu MHz' in /proc/cpuinfo",
        unit="AVX2 FMA: 2 FMA units x 8 float32 lanes x 2" if fma
        else "no AVX2 FMA flags, SSE: 2 units x 4 float32 lanes",
    )


def report(args: argparse.Namespace, run: SimpleNamespace, flops: int, ceiling: SimpleNamespace,
           results: dict[str, dict]) -> str:
    keras_rate = args.rows / results["Keras model.predict"]["seconds"]
    lines = [
        f"Flows scored per second: model v{run.artifact.version} "
        f"({len(run.artifact.features)} inputs), {args.rows} rows drawn from "
        f"{run.real_rows} real flows, batch size {args.batch_size}, local[{args.cores}] with "
        f"{args.partitions} partitions, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        f"Forward pass: {flops / 1e6:.3f} MFLOP per flow, counted from the model's layers.",
        f"Ceiling (estimate): {ceiling.cores} cores ({ceiling.logical} logical CPUs, "
        f"{ceiling.model}) x {ceiling.ghz:.3f} GHz ({ceiling.ghz_source})",
        f"  x {ceiling.per_cycle} float32 FLOPs per cycle ({ceiling.unit}) = "
        f"{ceiling.flops / 1e9:.1f} GFLOP/s, or {ceiling.flops / flops:,.0f} flows/s.",
        "",
        f"{'method':<24}{'rows':>9}{'seconds':>10}{'flows/s':>11}{'ratio':>8}"
        f"{'of ceiling':>12}",
    ]
    for name, result in results.items():
        rate = args.rows / result["seconds"]
        lines.append(f"{name:<24}{args.rows:>9}{result['seconds']:>10.2f}{rate:>11.0f}"
                     f"{rate / keras_rate:>8.2f}{rate * flops / ceiling.flops:>12.4f}")
    keras = results["Keras model.predict"]
    lines += ["", f"Keras time includes the input transform: "
                  f"{keras['transform_seconds']:.2f} s."]
    for name, result in results.items():
        if "warm_up_seconds" not in result:
            continue
        warm_up = result["warm_up_seconds"]
        warm_up_text = "skipped (--no-warm-up)" if warm_up is None else f"{warm_up:.2f} s"
        lines.append(f"{name} warm-up (start workers, import TensorFlow, load the model): "
                     f"{warm_up_text}")
    lines += ["", f"Agreement: sum of probabilities, and attacks at threshold "
                  f"{run.artifact.threshold:g}"]
    for name, result in results.items():
        lines.append(f"  {name:<24}{result['sum']:>16.4f}{result['attacks']:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    set_tensorflow_threads(args.cores)
    ceiling = cpu_ceiling(args.ghz)
    with tempfile.TemporaryDirectory(prefix="score_speed_") as folder:
        run = prepare(args, Path(folder))
        try:
            import tensorflow as tf

            model = tf.keras.models.load_model(os.path.join(run.artifact.path, "model.keras"),
                                               compile=False)
            logger.info("scoring %d rows three ways", args.rows)
            results = {
                "Keras model.predict": time_keras(run, model, args.batch_size),
                "pea-spark score_flows": time_pea(run),
                "predict_batch_udf": time_predict_batch_udf(run, args.batch_size),
            }
        finally:
            run.spark.stop()
        for name, result in results.items():
            if result["rows"] != args.rows:
                raise RuntimeError(f"{name} scored {result['rows']} rows, expected {args.rows}")
        print(report(args, run, forward_flops(model), ceiling, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
