"""The model report on real pipeline output: its files, sections and numbers, and the page
as headless Chromium renders it.

Two copies of the trained real subset are made. One has only the tables that
training leaves (no evaluation, cross-validation or explanations), so its
report must name each missing stage. The other is evaluated (with the Random
Forest baseline), cross-validated with and without SMOTE, scored and explained
by the real stages before its report is written.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pea_spark._report_data import CNN_LSTM, evaluation_scores, metric_rows
from pea_spark._report_figures import confusion_matrix_figure, pr_figure, roc_figure
from pea_spark.report import REPORT_FILE, baseline_verdict, write_report
from pea_spark.session import read_table, table_path
from pea_spark.train import latest_artifact
from tests.conftest import CV_EPOCHS, TRAINED_TABLES, copy_trained_tables, make_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["Summary", "Data and model", "Feature ranking", "Test split",
            "Cross-validation and SMOTE ablation", "Random Forest baseline", "Recall per class",
            "LIME explanations"]
LIME_FLOWS = 4


def page_text(document: str) -> str:
    """Visible text of an HTML document, whitespace collapsed."""
    document = re.sub(r"<style>.*?</style>", " ", document, flags=re.S)
    document = re.sub(r"</?code>", "", document)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", document)).split())


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._name = ""
        self._caption: list[str] | None = None
        self._rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._rows = []
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "caption":
            self._name = "".join(self._caption).strip()
            self._caption = None
        elif tag in ("td", "th"):
            self._rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self.tables[self._name] = self._rows

    def handle_data(self, data):
        if self._caption is not None:
            self._caption.append(data)
        elif self._cell is not None:
            self._cell.append(data)


def tables_by_caption(document: str) -> dict[str, list[list[str]]]:
    """Every captioned table of the page: caption to rows, the header row first."""
    parser = _TableParser()
    parser.feed(document)
    return parser.tables


def column(rows: list[list[str]], name: str) -> list[str]:
    return [row[rows[0].index(name)] for row in rows[1:]]


@pytest.fixture(scope="module")
def bare(spark, trained_subset, tmp_path_factory):
    """Report of a copy of the trained subset that was never evaluated or explained."""
    source, _ = trained_subset
    config = make_config(tmp_path_factory.mktemp("wh_report_bare"))
    copy_trained_tables(source, config)
    output = tmp_path_factory.mktemp("report_bare")
    result = write_report(spark, config, output=output)
    return config, result, result["html"].read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def full(spark, evaluated_subset):
    """Report of the trained subset's copy after evaluate, crossval, score and explain."""
    config, _ = evaluated_subset
    folder = table_path(config, "_reports") / "v1"
    folder.mkdir(parents=True)
    # A chart left by an earlier report with more flows, and a file the report does not own.
    (folder / "lime_flow_9.png").write_bytes(PNG_SIGNATURE)
    (folder / "notes.png").write_bytes(PNG_SIGNATURE)
    result = write_report(spark, config)
    return config, result, result["html"].read_text(encoding="utf-8")


# Without a model, or with only a trained one -------------------------------------------


def test_report_without_model_raises(spark, tmp_path):
    config = make_config(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no model to report on .*run `pea train`"):
        write_report(spark, config)
    assert not (tmp_path / "empty" / config.database / "_reports").exists()


def test_report_unknown_version_raises(spark, full):
    config, _, _ = full
    with pytest.raises(ValueError, match=r"model version 99 not found .*available versions are 1"):
        write_report(spark, config, version=99)


def test_report_version_type_checked(spark, full):
    config, _, _ = full
    with pytest.raises(TypeError, match="version must be an int"):
        write_report(spark, config, version="1")


def test_bare_report_names_missing_stages(bare):
    _, result, document = bare
    text = page_text(document)
    assert "Cross-validation has not been run for this model: run pea crossval." in text
    assert "The model has not been evaluated on the test split: run pea evaluate." in text
    assert ("The Random Forest baseline has not been evaluated for this model: run "
            "pea --set evaluate.baseline=true evaluate.") in text
    assert "Per-class recall has not been computed for this model: run pea evaluate." in text
    assert "No LIME explanations are stored for model v1: run pea explain." in text
    assert "No validation-split metrics are stored for this model" in text
    assert document.count('class="missing"') >= 6
    for heading in SECTIONS:
        assert f">{heading}</h2>" in document


def test_bare_report_draws_only_training_history(bare):
    _, result, document = bare
    assert [p.name for p in result["figures"]] == ["training_history.png"]
    assert document.count("<img ") == 1
    assert result["model_version"] == 1


# Files and self-containment ------------------------------------------------------------


def test_report_default_folder_and_figure_files(full):
    config, result, document = full
    folder = table_path(config, "_reports") / "v1"
    assert result["html"] == folder / REPORT_FILE
    assert result["model_version"] == 1
    names = [p.name for p in result["figures"]]
    expected = ["training_history.png", "confusion_matrix.png", "test_metrics.png",
                "roc_curve.png", "precision_recall_curve.png", "crossval_folds.png",
                "smote_ablation.png", "baseline_metrics.png", "baseline_roc_curve.png",
                "baseline_precision_recall_curve.png", "class_recall.png",
                *[f"lime_flow_{i}.png" for i in range(1, LIME_FLOWS + 1)],
                "feature_influence.png"]
    assert names == expected
    assert all(p.parent == folder for p in result["figures"])
    assert not (folder / "lime_flow_9.png").exists()
    assert (folder / "notes.png").exists()
    assert not list(folder.glob(".*partial"))


def test_report_embeds_each_figure_file(full):
    _, result, document = full
    sources = re.findall(r'<img src="([^"]+)"', document)
    assert len(sources) == len(result["figures"])
    for source, path in zip(sources, result["figures"], strict=True):
        png = path.read_bytes()
        assert png.startswith(PNG_SIGNATURE), path.name
        assert source.startswith("data:image/png;base64,"), path.name
        assert base64.b64decode(source.split(",", 1)[1]) == png, path.name


def test_report_references_nothing_outside(full):
    _, _, document = full
    assert "http://" not in document
    assert "https://" not in document
    assert "<link" not in document
    assert "<script" not in document
    assert "@import" not in document
    assert "url(" not in document
    for value in re.findall(r'\b(?:src|href)="([^"]*)"', document):
        assert value.startswith(("data:image/png;base64,", "#")), value[:60]
    anchors = set(re.findall(r'\bid="([^"]+)"', document))
    for target in re.findall(r'href="#([^"]*)"', document):
        assert target in anchors


# Numbers against the tables ------------------------------------------------------------


def newest_metrics(spark, config, model: str, split: str, threshold: float) -> dict:
    frame = metric_rows(spark, config, 1)
    chosen = frame[(frame["model"] == model) & (frame["split"] == split)
                   & ((frame["threshold"] - threshold).abs() < 1e-9)]
    return dict(zip(chosen["metric"], chosen["value"], strict=True))


def test_report_sections_in_order(full):
    _, _, document = full
    headings = re.findall(r"<h2>([^<]+)</h2>", document)
    assert headings == ["Contents", *SECTIONS]
    assert 'class="missing"' not in document


def test_report_feature_ranking_table(spark, full):
    config, _, document = full
    ranking = read_table(spark, config, "feature_ranking").orderBy("rank").toPandas()
    rows = tables_by_caption(document)["feature_ranking"]
    assert rows[0] == ["rank", "feature", "CICFlowMeter name", "information gain (bits)",
                       "VIF", "selected", "dropped reason"]
    assert len(rows) - 1 == len(ranking)
    assert column(rows, "feature") == ranking["feature"].tolist()
    assert column(rows, "information gain (bits)") == [
        f"{v:.4f}" for v in ranking["information_gain"]]
    assert column(rows, "selected") == ["yes" if v else "no" for v in ranking["selected"]]
    assert column(rows, "dropped reason") == [r or "" for r in ranking["dropped_reason"]]


def test_report_test_metrics_match_table(spark, full):
    config, _, document = full
    artifact = latest_artifact(spark, config)
    tuned = newest_metrics(spark, config, CNN_LSTM, "test", artifact.threshold)
    half = newest_metrics(spark, config, CNN_LSTM, "test", 0.5)
    decision = f"at the decision threshold {artifact.threshold:.2f}"
    rows = tables_by_caption(document)["CNN-LSTM on the test split (attack is the positive "
                                       "class)"]
    assert rows[0] == ["metric", "at 0.50", decision]
    by_metric = {row[0]: row[1:] for row in rows[1:]}
    assert by_metric["F1"] == [f"{half['f1']:.4f}", f"{tuned['f1']:.4f}"]
    assert by_metric["ROC AUC"][1] == f"{tuned['roc_auc']:.4f}"
    assert by_metric["true positives"][1] == f"{int(tuned['true_positives']):,}"
    assert by_metric["flows"][1] == f"{int(tuned['rows']):,}"
    validation = newest_metrics(spark, config, CNN_LSTM, "validation", artifact.threshold)
    rows = tables_by_caption(document)["CNN-LSTM on the validation fold, which chose the "
                                       "decision threshold"]
    assert rows[0] == ["metric", "at 0.50", decision]
    assert {row[0]: row[2] for row in rows[1:]}["F1"] == f"{validation['f1']:.4f}"


def test_report_verdict_computed_from_metrics(spark, full):
    from pea_spark._report_results import forest_threshold

    config, _, document = full
    artifact = latest_artifact(spark, config)
    metrics = metric_rows(spark, config, 1)
    cnn_lstm = newest_metrics(spark, config, CNN_LSTM, "test", artifact.threshold)
    forest = newest_metrics(spark, config, "random_forest", "test", forest_threshold(metrics))
    verdict = baseline_verdict(cnn_lstm, forest)
    text = page_text(document)
    assert text.count(verdict) == 2  # in the summary and in the baseline section
    difference = round(cnn_lstm["f1"] - forest["f1"], 3)
    if difference > 0:
        assert verdict.startswith(f"The CNN-LSTM beats the Random Forest baseline by "
                                  f"{difference:.3f} F1")
    elif difference < 0:
        assert verdict.startswith(f"The Random Forest baseline beats the CNN-LSTM by "
                                  f"{-difference:.3f} F1")


def test_report_class_recall_covers_test_labels(spark, full):
    config, _, document = full
    test = read_table(spark, config, "splits").filter(F.col("split") == "test")
    labels = sorted(r[0] for r in test.select("label").distinct().collect())
    assert "BENIGN" in labels
    rows = tables_by_caption(document)["Recall per label on the test split"]
    assert sorted(column(rows, "label")) == labels
    assert len(rows[0]) == 5  # label, class, test flows, and one recall column per model
    counts = {r["label"]: r["count"] for r in test.groupBy("label").count().collect()}
    assert {row[0]: int(row[2].replace(",", "")) for row in rows[1:]} == counts


def test_report_data_section_counts(spark, full):
    config, _, document = full
    tables = tables_by_caption(document)
    files = tables["The run that last loaded each file (ingest_audit)"]
    # The trained subset was ingested once, so each file has one audit row.
    audit = read_table(spark, config, "ingest_audit").toPandas()
    assert sorted(column(files, "file")[:-1]) == sorted(audit["source_file"])
    assert set(column(files, "status")[:-1]) == {"new"}
    assert column(files, "rows loaded")[-1] == f"{int(audit['rows_loaded'].sum()):,}"
    silver = read_table(spark, config, "silver")
    training = silver.filter("training_row").count()
    classes = tables["Training rows of silver per label, and their split"]
    assert column(classes, "training rows")[-1] == f"{training:,}"
    artifact = latest_artifact(spark, config)
    smote = tables.get("Rows that trained the model (training split without the validation "
                       "fold)")
    if "class_counts_after_smote" in artifact.training:
        after = artifact.training["class_counts_after_smote"]
        assert column(smote, "after SMOTE")[-1] == f"{sum(after.values()):,}"
    else:
        assert f"{artifact.training['rows_after_smote']:,} after SMOTE" in page_text(document)
    settings = {row[0]: row[1] for row in tables["Model artifact and training run"][1:]}
    assert settings["decision threshold"] == f"{artifact.threshold:.2f}"
    assert settings["epochs trained"] == f"{artifact.training['epochs']:,}"
    assert settings["seed"] == f"{config.seed:,}"
    packages = dict(tables["Versions recorded in the model artifact at training time"][1:])
    assert packages == artifact.packages


def test_report_crossval_tables(spark, full):
    config, _, document = full
    tables = tables_by_caption(document)
    folds = tables["Per-fold metrics with SMOTE"]
    assert column(folds, "fold") == [str(i) for i in range(config.split.folds)]
    assert set(column(folds, "epochs")) <= {str(i) for i in range(1, CV_EPOCHS + 1)}
    cv = read_table(spark, config, "cv_metrics").filter(
        (F.col("smote")) & (F.col("threshold") == 0.5) & (F.col("metric") == "f1")).toPandas()
    expected = [f"{v:.4f}" for v in cv.sort_values("fold")["value"]]
    assert column(folds, "F1") == expected
    ablation = tables["SMOTE ablation over the cross-validation folds"]
    assert column(ablation, "metric") == ["accuracy", "precision", "recall", "F1",
                                          "specificity", "ROC AUC", "AP"]
    f1 = cv["value"].to_numpy()
    assert column(ablation, "with SMOTE, 0.50")[3] == f"{f1.mean():.4f} ± {f1.std(ddof=1):.4f}"


def test_report_lime_flows_are_top_probabilities(spark, full):
    config, _, document = full
    explanations = read_table(spark, config, "explanations").toPandas()
    top = (explanations.groupby("flow_key")["attack_probability"].max().reset_index()
           .sort_values(["attack_probability", "flow_key"], ascending=[False, True])
           .head(LIME_FLOWS))
    text = page_text(document)
    for number, key in enumerate(top["flow_key"], start=1):
        assert f"Flow {number}: flow_key {key}" in text


# Figures against the numbers -----------------------------------------------------------


def test_roc_and_pr_titles_match_metrics(spark, full):
    config, _, _ = full
    artifact = latest_artifact(spark, config)
    stored = newest_metrics(spark, config, CNN_LSTM, "test", artifact.threshold)
    scores = evaluation_scores(spark, config, 1)
    test = scores[(scores["model"] == CNN_LSTM) & (scores["split"] == "test")]
    pairs = {"CNN-LSTM": (test["is_attack"].to_numpy(), test["probability"].to_numpy())}
    roc_title = roc_figure(pairs).axes[0].get_title()
    assert float(re.search(r"AUC (\d\.\d{4})", roc_title).group(1)) == round(
        stored["roc_auc"], 4)
    pr_title = pr_figure(pairs).axes[0].get_title()
    assert float(re.search(r"AP (\d\.\d{4})", pr_title).group(1)) == round(
        stored["average_precision"], 4)


def test_confusion_matrix_counts_match_predictions(spark, full):
    config, _, _ = full
    artifact = latest_artifact(spark, config)
    stored = newest_metrics(spark, config, CNN_LSTM, "test", artifact.threshold)
    scores = evaluation_scores(spark, config, 1)
    test = scores[(scores["model"] == CNN_LSTM) & (scores["split"] == "test")]
    actual = test["is_attack"].to_numpy()
    predicted = (test["probability"].to_numpy() >= artifact.threshold).astype(int)
    counts = [int(((actual == a) & (predicted == p)).sum()) for a, p in
              [(0, 0), (0, 1), (1, 0), (1, 1)]]
    assert counts == [int(stored[k]) for k in ("true_negatives", "false_positives",
                                               "false_negatives", "true_positives")]
    figure = confusion_matrix_figure(*counts, artifact.threshold)
    shown = [int(t.get_text().split("\n")[0].replace(",", "")) for t in figure.axes[0].texts]
    assert shown == counts


@pytest.mark.parametrize(
    ("cnn_lstm", "forest", "expected"),
    [
        ({"f1": 0.98, "roc_auc": 0.995}, {"f1": 0.968, "roc_auc": 0.99},
         "The CNN-LSTM beats the Random Forest baseline by 0.012 F1 and by 0.005 ROC AUC."),
        ({"f1": 0.968, "roc_auc": 0.99}, {"f1": 0.98, "roc_auc": 0.995},
         "The Random Forest baseline beats the CNN-LSTM by 0.012 F1 and by 0.005 ROC AUC."),
        ({"f1": 0.97, "roc_auc": 0.99}, {"f1": 0.96, "roc_auc": 0.992},
         "The CNN-LSTM beats the Random Forest baseline by 0.010 F1. The Random Forest "
         "baseline beats the CNN-LSTM by 0.002 ROC AUC."),
        ({"f1": 0.9701, "roc_auc": 0.993}, {"f1": 0.9699, "roc_auc": 0.99},
         "The two models have the same F1 to three decimals (0.970). The CNN-LSTM beats the "
         "Random Forest baseline by 0.003 ROC AUC."),
        ({"f1": 0.97, "roc_auc": math.nan}, {"f1": 0.96, "roc_auc": 0.99},
         "The models cannot be compared on ROC AUC, because it is undefined for at least one "
         "of them."),
    ],
    ids=["cnn_lstm_ahead", "forest_ahead", "split_decision", "f1_tie", "undefined_auc"],
)
def test_baseline_verdict(cnn_lstm, forest, expected):
    assert baseline_verdict(cnn_lstm, forest) == expected


# The page in a browser -----------------------------------------------------------------


def chromium_driver():
    """Start headless Chromium through chromedriver, with DNS resolution disabled."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: the report check needs Debian's "
                    "chromium and chromium-driver packages (apt-get install -y chromium "
                    "chromium-driver, which .ci/run installs)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run scripts/install.sh, which installs the "
                    "test extra")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     # Host names fail to resolve, so no web reference loads by name. The
                     # request log check below catches any other request.
                     "--host-resolver-rules=MAP * ~NOTFOUND",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-extensions", "--no-first-run"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # An explicit driver path keeps Selenium Manager, which would download drivers, unused.
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_report_renders_in_chromium(full, tmp_path):
    _, result, _ = full
    url = result["html"].resolve().as_uri()
    driver = chromium_driver()
    try:
        driver.get(url)
        assert driver.title == "pea-spark model report: CNN-LSTM v1"
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('section > h2'), h => h.textContent)")
        assert headings == SECTIONS
        images = driver.execute_script(
            "return Array.from(document.images, i => [i.complete, i.naturalWidth, "
            "i.naturalHeight, i.alt])")
        assert len(images) == len(result["figures"])
        for complete, width, height, alt in images:
            assert complete, alt
            assert width > 0, alt
            assert height > 0, alt
        broken_links = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]'), a => a.getAttribute('href'))"
            ".filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1)))")
        assert broken_links == []
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        requested = [e["params"]["request"]["url"] for e in events
                     if e["method"] == "Network.requestWillBeSent"]
        assert requested[0] == url
        assert all(u == url or u.startswith("data:image/png;base64,") for u in requested)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        size = driver.execute_script("return [document.documentElement.scrollWidth, "
                                     "document.documentElement.scrollHeight]")
        assert size[0] <= 1280  # no horizontal scrolling at a 1280-pixel window
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
    finally:
        driver.quit()
    screenshot = tmp_path / "report-screenshot.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    assert size[1] > 5000  # every section is laid out, not collapsed


def test_report_output_file_rejected(spark, full, tmp_path):
    config, _, _ = full
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(ValueError, match=r"is a file, not a folder"):
        write_report(spark, config, output=target)
    assert target.read_text() == "old"


def test_report_uses_newest_evaluate_run(spark, evaluated_subset, tmp_path_factory):
    from pea_spark.evaluate import evaluate

    source, _ = evaluated_subset
    config = make_config(tmp_path_factory.mktemp("wh_report_rerun"), "evaluate.baseline=false")
    for name in [*TRAINED_TABLES, "metrics", "evaluation_predictions", "class_metrics"]:
        shutil.copytree(table_path(source, name), table_path(config, name))
    evaluate(spark, config)
    result = write_report(spark, config, output=tmp_path_factory.mktemp("report_rerun"))
    text = page_text(result["html"].read_text(encoding="utf-8"))
    # The newer run has no baseline, so the older run's forest must not be shown.
    assert "The Random Forest baseline has not been evaluated for this model" in text
