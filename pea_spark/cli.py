"""The ``pea`` command line: one subcommand per pipeline stage, plus ``run``, ``sql`` and
``serve-sql``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from pea_spark.cluster import ClusterError
from pea_spark.config import ConfigError, PeaConfig, load_config

__all__ = ["main", "build_parser"]

logger = logging.getLogger("pea_spark.cli")

STAGES = ["ingest", "clean", "select", "split", "train", "evaluate", "crossval", "score",
          "explain"]


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    # Global options are accepted before and after the subcommand, so that
    # `spark-submit jobs/train.py --set train.epochs=5` works too.
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="YAML settings profile (default: built-in defaults, as in "
                             "conf/local.yaml)")
    parser.add_argument("--warehouse", metavar="DIR", default=default,
                        help="folder of the Delta tables (default: ./warehouse)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=default,
                        dest="overrides",
                        help="override one setting, e.g. --set train.epochs=5; repeatable")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``pea``."""
    parser = argparse.ArgumentParser(
        prog="pea",
        description="pea-spark: explainable CNN-LSTM intrusion detection on Apache Spark.",
    )
    _add_global_options(parser, argparse.SUPPRESS)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common])

    ingest = add("ingest", "load CICFlowMeter CSV files or folders into the bronze table")
    ingest.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="CSV files or folders searched recursively for *.csv")
    add("clean", "clean bronze into silver: doubles, labels, duplicates removed")
    add("select", "rank features by information gain, keep the top ones with low VIF")
    add("split", "stratified train/test split and k-fold assignment")
    add("train", "train the CNN-LSTM with Horovod and save a versioned model")
    for name, text in [("evaluate", "score the test split and validation fold with the model and "
                                    "a Random Forest baseline; write the metrics tables"),
                       ("crossval", "k-fold cross-validation of a model's recipe on the train "
                                    "split, with and without SMOTE, into cv_metrics"),
                       ("report", "write an HTML report with figures of a model's evaluation"),
                       ("score", "score flows into the predictions table"),
                       ("explain", "explain flows with LIME into the explanations table")]:
        sub = add(name, text)
        sub.add_argument("--model-version", type=int, metavar="N",
                         help="model version to use (default: the newest)")
        if name not in ("evaluate", "crossval", "report"):
            sub.add_argument("--input", nargs="+", metavar="PATH",
                             help="CSV files or folders to read (default: the silver table); "
                                  "a label column is not needed")
    commands.choices["score"].add_argument(
        "--rescore", action="store_true",
        help="score every input again, also files this model already scored unchanged")
    commands.choices["report"].add_argument(
        "--output", metavar="DIR",
        help="folder for report.html and its PNG figures (default: "
             "WAREHOUSE/DATABASE/_reports/vN)")
    explain = commands.choices["explain"]
    explain.add_argument("--flows", choices=["attacks", "all", "sample"],
                         help="which flows to explain (default: attacks, the flows predicted "
                              "as attacks)")
    run = add("run", "run every stage in order, from CSV files to explained predictions")
    run.add_argument("--input", nargs="+", metavar="PATH",
                     help="CSV files or folders (default: a small synthetic example archive)")
    for sub in (explain, run):
        sub.add_argument("--engine", choices=["batch", "lime"],
                         help="LIME engine: batch (the default) shares perturbations and "
                              "their predictions among flows, and lime runs lime's own "
                              "explain_instance per flow, for comparison")
    sql = add("sql", "run a Spark SQL query over the tables and views and print the rows")
    sql.add_argument("query", help='for example "SELECT * FROM pea.predictions LIMIT 5"')
    sql.add_argument("--limit", type=_row_limit, metavar="N",
                     help="rows to print, 0 for all (default: 50 for --format table, all "
                          "for csv and json)")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table",
                     dest="output_format",
                     help="table: aligned columns and a row count (the default); csv: with a "
                          "header line; json: one JSON object per line, with NaN and "
                          "infinite doubles as the strings \"NaN\", \"Infinity\" and "
                          "\"-Infinity\"")
    serve = add("serve-sql", "serve the tables and views over JDBC/ODBC with Spark's Thrift "
                             "server until Ctrl-C or SIGTERM")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=10000,
                       help="TCP port to listen on (default: 10000, the HiveServer2 port)")
    serve.add_argument("--pid-file", metavar="FILE",
                       help="write the process id to FILE while serving, for "
                            "kill $(cat FILE); removed at the stop")
    cluster = add("cluster", "start, stop or check a Spark standalone cluster on this host, or "
                             "package pea_spark for spark-submit --py-files")
    cluster.add_argument("action", choices=["start", "stop", "status", "package"],
                         help="start: a master and cluster.workers workers; stop: the daemons "
                              "and their executors; status: list which daemons run; "
                              "package: write the zip")
    cluster.add_argument("--output", default="dist/pea_spark.zip", metavar="FILE",
                         help="zip written by package (default: dist/pea_spark.zip)")
    example = add("example", "write the synthetic example archive to a folder")
    example.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    example.add_argument("--rows", type=int, default=6000, help="flows to write (default: 6000)")
    return parser


# run_query takes --limit + 1 rows to tell whether more exist, and Spark's take accepts
# a 32-bit count (2**31 - 1 failed with a Py4J error).
MAX_ROW_LIMIT = 2**31 - 2


def _row_limit(text: str) -> int:
    """Parse ``pea sql --limit``: 0 for all rows, or a positive count."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid row count {text!r}: expected 0 (all rows) "
                                         f"or a positive whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid row count {value}: expected 0 (all rows) "
                                         f"or a positive whole number")
    if value > MAX_ROW_LIMIT:
        raise argparse.ArgumentTypeError(f"invalid row count {value}: at most {MAX_ROW_LIMIT:,} "
                                         f"(Spark's limit); use 0 for all rows")
    return value


def configure_logging(quiet: bool) -> None:
    """Log pea-spark's stages at INFO and other libraries at WARNING, to stderr."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pea_spark").setLevel(logging.WARNING if quiet else logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _format_metrics(result: dict[str, Any]) -> str:
    lines = [f"Test metrics of model v{result['model_version']} (run {result['run_id']}) at "
             f"decision threshold {result['threshold']:.2f}:"]
    for name in ["accuracy", "precision", "recall", "f1", "specificity", "roc_auc",
                 "average_precision"]:
        value = result[name]
        lines.append(f"  {name:<18} {'n/a' if math.isnan(value) else f'{value:.4f}'}")
    lines.append("  confusion matrix   predicted BENIGN  predicted ATTACK")
    lines.append(f"    actual BENIGN    {result['true_negatives']:>16}  "
                 f"{result['false_positives']:>16}")
    lines.append(f"    actual ATTACK    {result['false_negatives']:>16}  "
                 f"{result['true_positives']:>16}")
    lines.append(f"  F1 at threshold 0.50: {result['f1_at_0.5']:.4f}")
    if result.get("classes"):
        lines.append("  recall per class (label, rows, recall):")
        for label, _, rows, _, recall in result["classes"]:
            lines.append(f"    {label:<34} {rows:>8}  {recall:.4f}")
    baseline = result.get("baseline")
    if baseline:
        lines.append(f"Random Forest baseline at threshold {baseline['threshold']:.2f}: "
                     f"F1 {baseline['f1']:.4f}, ROC AUC {_number(baseline['roc_auc'])}, "
                     f"accuracy {baseline['accuracy']:.4f}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _format_crossval(result: dict[str, Any]) -> str:
    lines = [f"{result['folds']}-fold cross-validation of model v{result['model_version']} "
             f"(run {result['run_id']}), at each fold's tuned threshold:",
             f"  {'':<14} {'accuracy':>17} {'precision':>17} {'recall':>17} {'F1':>17} "
             f"{'log loss':>17}"]
    for arm, title in [("smote", "with SMOTE"), ("no_smote", "without SMOTE")]:
        if arm not in result:
            continue
        cells = [f"{result[arm][f'{m}_mean']:.4f} ± {result[arm][f'{m}_std']:.4f}"
                 for m in ["accuracy", "precision", "recall", "f1", "log_loss"]]
        lines.append(f"  {title:<14} " + " ".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)


def _dispatch(args: argparse.Namespace, config: PeaConfig) -> None:
    if args.command == "example":
        from pea_spark.example import write_example_archive

        for path in write_example_archive(args.output, rows=args.rows, seed=config.seed):
            print(path)
        return
    if args.command == "cluster":
        _cluster(args.action, args.output, config)
        return
    if args.command == "serve-sql":
        from pea_spark.thrift import check_pid_file, check_port_free, server_spark_conf

        # Fail before the SparkSession starts, which takes seconds.
        check_port_free(args.host, args.port)
        if args.pid_file is not None:
            check_pid_file(args.pid_file)
        conf = {**config.spark.conf, **server_spark_conf(args.host, args.port)}
        config = dataclasses.replace(config, spark=dataclasses.replace(config.spark, conf=conf))
    from pea_spark.session import create_session

    spark = create_session(config)
    try:
        _run_command(args, config, spark)
    finally:
        spark.stop()


def _run_command(args: argparse.Namespace, config: PeaConfig, spark: Any) -> None:
    from pea_spark import pipeline
    from pea_spark.clean import clean
    from pea_spark.crossval import crossval
    from pea_spark.evaluate import evaluate
    from pea_spark.explain import explain
    from pea_spark.ingest import ingest
    from pea_spark.score import score
    from pea_spark.selection import select
    from pea_spark.split import split
    from pea_spark.train import train

    inputs = getattr(args, "input", None)
    version = getattr(args, "model_version", None)
    actions: dict[str, Callable[[], Any]] = {
        "ingest": lambda: ingest(spark, config, inputs),
        "clean": lambda: clean(spark, config),
        "select": lambda: select(spark, config),
        "split": lambda: split(spark, config),
        "train": lambda: train(spark, config).path,
        "evaluate": lambda: evaluate(spark, config, version),
        "crossval": lambda: crossval(spark, config, version),
        "report": lambda: _report(spark, config, getattr(args, "output", None), version),
        "score": lambda: score(spark, config, inputs, version,
                               rescore=getattr(args, "rescore", False)),
        "explain": lambda: explain(spark, config, inputs, version),
        "run": lambda: pipeline.run_pipeline(spark, config, inputs),
    }
    if args.command == "sql":
        from pea_spark.query import run_query

        run_query(spark, config, args.query, sys.stdout, args.output_format, args.limit)
        return
    if args.command == "serve-sql":
        from pea_spark.thrift import serve_sql

        serve_sql(spark, config, args.host, args.port, args.pid_file,
                  announce=lambda line: print(line, flush=True))
        return
    result = actions[args.command]()
    if args.command == "evaluate":
        print(_format_metrics(result))
    elif args.command == "crossval":
        print(_format_crossval(result))
    elif args.command == "report":
        print(f"Report of model v{result['model_version']}: {result['html']} "
              f"({len(result['figures'])} figures beside it)")
    elif args.command == "run":
        print(_format_metrics(result["evaluate"]))
        if result.get("crossval"):
            print(_format_crossval(result["crossval"]))
        print(f"Predictions: {result['score']['flows']} flows scored, "
              f"{result['score']['attacks']} predicted attacks; explanations: "
              f"{result['explain']['flows']} flows. Query them with "
              f"pea sql \"SELECT * FROM {config.database}.predictions\"")
    else:
        print(result)


def _cluster(action: str, output: str, config: PeaConfig) -> None:
    from pea_spark import cluster

    settings = config.cluster
    if action == "package":
        print(cluster.build_package(output))
        return
    if action == "stop":
        stopped = cluster.stop_cluster(settings)
        print(f"stopped {len(stopped)} daemons" + (f" (pids {', '.join(map(str, stopped))})"
                                                   if stopped else ""))
        return
    mismatch = cluster.master_mismatch(settings, config.spark.master)
    if mismatch:
        logger.warning("cluster: %s", mismatch)
    daemons = (cluster.start_cluster(settings) if action == "start"
               else cluster.cluster_status(settings))
    url = cluster.master_url(settings)
    running = cluster.running_master_url(settings) if daemons[0].running else None
    if running and running != url:
        logger.warning("cluster: the running master listens on %s, not on %s that "
                       "cluster.host and cluster.master_port give; pass the same --set options "
                       "that started it", running, url)
    print(f"master {running or url}")
    for daemon in daemons:
        state = "running" if daemon.running else "stopped"
        print(f"  {daemon.name:<10} {state:<8} pid {daemon.pid or '-':<8} "
              f"web UI {daemon.web_ui or '-':<24} log {daemon.log}")


def _report(spark: Any, config: PeaConfig, output: str | None, version: int | None) -> dict:
    from pea_spark.report import write_report

    return write_report(spark, config, output, version)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pea``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "quiet", False))
    overrides = list(getattr(args, "overrides", []))
    if getattr(args, "warehouse", None):
        overrides.append(f"warehouse={args.warehouse}")
    if getattr(args, "flows", None):
        overrides.append(f"explain.flows={args.flows}")
    if getattr(args, "engine", None):
        overrides.append(f"explain.engine={args.engine}")
    try:
        config = load_config(getattr(args, "config", None), overrides)
    except (ConfigError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    try:
        _dispatch(args, config)
    except (ValueError, FileNotFoundError, TimeoutError, ClusterError) as error:
        logger.error("%s failed: %s", args.command, error)
        return 2
    except Exception:
        logger.exception("%s failed with an unexpected error", args.command)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
