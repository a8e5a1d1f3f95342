"""A figure a page quotes from a committed record is the record's own.

Each quote below names the page, the record beside it (docs/records/, docs/gpu/), where in the record the
figure is, and how the page writes it. Rerun a measurement without updating its page, or edit a page's figure
without a record behind it, and this fails. Also checked: every record a page links exists, and every record
in docs/records/ is linked from a page (a record nobody quotes is a figure nobody can find).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from training.paths import PROJECT_ROOT

RECORDS = PROJECT_ROOT / "docs" / "records"
CPU_TABLE = "docs/records/cpu_table.json"
INT8_GATE = "docs/records/int8_gate.json"
GPU_BENCHMARK = "docs/gpu/benchmark.json"
API_LOAD = "docs/records/api_load_test.json"
BULK = "docs/records/bulk_compare.json"
EXPORT = "docs/records/export_shipped_adapter.json"
INSTALL = "docs/records/install_serve.json"
SHIPPED_TEST = "docs/records/shipped_test_fp32.json"
SHIPPED_BF16 = "docs/records/shipped_test_bf16.json"


def read(relative: str):
    return json.loads((PROJECT_ROOT / relative).read_text(encoding="utf-8"))


def at(record, path: str):
    """The value at `path`, keys joined by '/' (a record's keys hold dots and spaces)."""
    for key in path.split("/"):
        record = record[int(key)] if isinstance(record, list) else record[key]
    return record


def points(value: float) -> str:
    """A change in accuracy points as the pages write it: a true minus sign, two decimals."""
    return f"{value:+.2f}".replace("-", "−").lstrip("+")


def table_system(table: str, system: str) -> Callable[[dict], str]:
    """The cells a CPU-table row quotes for one system: reviews/s, ratio to the pipeline."""

    def cells(record: dict) -> str:
        row = record["parts"]["cpu-table"][table]["systems"][system]
        return f"{row['reviews_per_s']:.2f} | {row['ratio_to_pipeline']:.2f}x"

    return cells


def speed_row(label: str, system: str) -> Callable[[dict], str]:
    """A whole row of docs/speed.md's CPU table (with AMX, then AMX off) built from the record, emphasis aside."""

    def row(record: dict) -> str:
        cells = [label]
        for table in ("this_cpu", "amx_off"):
            figures = record["parts"]["cpu-table"][table]["systems"][system]
            cells += [
                f"{figures['reviews_per_s']:.2f}",
                f"{figures['ratio_to_pipeline']:.2f}x" if system != "pipeline" else "1x",
                f"{figures['accuracy']:.4f}",
                str(figures["labels_changed_vs_fp32"]),
            ]
        return " | ".join(cells)

    return row


def api_row(step: dict) -> str:
    """A row of docs/serving.md's load-test table: clients, reviews/s, p50, p99, statuses."""
    statuses = ", ".join(f"{count} x {status}" for status, count in step["statuses"].items())
    return (
        f"| {step['clients']} | {step['reviews_per_s']:.2f} | {step['p50_ms']:,.1f} | {step['p99_ms']:,.1f} | "
        f"{statuses} |"
    )


def shipped_row(metrics: dict) -> str:
    """The first cells of a test-split table: accuracy, precision, recall, F1, ROC-AUC."""
    return "| {accuracy:.4f} | {precision:.4f} | {recall:.4f} | {f1:.4f} | {roc_auc:.4f} |".format(**metrics)


def plain(text: str) -> str:
    """A page's text without emphasis or the notes in brackets after a table's figure, for whole-row checks."""
    text = text.replace("**", "")
    return re.sub(r" \(`auto`[^)]*\)", "", text)


# (page, record, what the page writes: a format string for one value at a path, or a function of the record)
QUOTES = [
    # The README's CPU table and docs/speed.md's, from the quiet --cpu-table run.
    ("README.md", CPU_TABLE, table_system("this_cpu", "pytorch bf16")),
    ("README.md", CPU_TABLE, table_system("amx_off", "pytorch fp32")),
    ("README.md", CPU_TABLE, table_system("amx_off", "onnxruntime int8 (gated scheme)")),
    ("docs/speed.md", CPU_TABLE, speed_row("pipeline, batch 1", "pipeline")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch fp32", "pytorch fp32")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch bf16", "pytorch bf16")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch int8, gated scheme", "pytorch int8 (gated scheme)")),
    ("docs/speed.md", CPU_TABLE, speed_row("PyTorch int8, every matrix", "pytorch int8 (every matrix)")),
    ("docs/speed.md", CPU_TABLE, speed_row("export, fp32", "onnxruntime fp32")),
    ("docs/speed.md", CPU_TABLE, speed_row("export, int8 gated scheme", "onnxruntime int8 (gated scheme)")),
    ("docs/speed.md", CPU_TABLE, speed_row("export, int8 every matrix", "onnxruntime int8 (every matrix)")),
    (
        "docs/speed.md",
        CPU_TABLE,
        ("parts/cpu-table/this_cpu/machine_limit/fp32_gemm_gflop_per_s", "fp32 GEMM {} GFLOP/s"),
    ),
    ("docs/speed.md", CPU_TABLE, ("parts/cpu-table/this_cpu/machine_limit/bf16_gemm_gflop_per_s", "bf16 {:,}")),
    ("docs/speed.md", CPU_TABLE, ("parts/cpu-table/default_ratio", "bf16 at {}x the pipeline")),
    (
        "docs/speed.md",
        CPU_TABLE,
        ("parts/cpu-table/export_fp32_ratio_to_pytorch_fp32", "fp32 runs at {:.2f}x PyTorch fp32"),
    ),
    (
        "docs/speed.md",
        CPU_TABLE,
        ("parts/cpu-table/amx_off_export_fp32_ratio_to_pytorch_fp32", "({:.2f}x with AMX off)"),
    ),
    (
        "docs/export.md",
        CPU_TABLE,
        ("parts/cpu-table/amx_off_export_fp32_ratio_to_pytorch_fp32", "| 0 | 14.97 | {:.2f}x |"),
    ),
    (
        "docs/export.md",
        CPU_TABLE,
        lambda r: "| {:.2f} | 1x | 0 | {:.2f} | 1x |".format(
            r["parts"]["cpu-table"]["this_cpu"]["systems"]["pytorch fp32"]["reviews_per_s"],
            r["parts"]["cpu-table"]["amx_off"]["systems"]["pytorch fp32"]["reviews_per_s"],
        ),
    ),
    # The int8 gate on validation and its check on test reviews.
    ("docs/speed.md", INT8_GATE, ("pytorch/validation/labels_changed", "**{} (0.36%)**")),
    ("docs/speed.md", INT8_GATE, ("onnxruntime/validation/labels_changed", "**{} (0.28%)**")),
    ("docs/speed.md", INT8_GATE, ("pytorch/validation/accuracy", "| {:.4f} (+0.20 points) |")),
    ("docs/speed.md", INT8_GATE, ("onnxruntime/test/labels_changed", "the onnxruntime scheme held ({} of 1,000")),
    ("docs/speed.md", INT8_GATE, ("pytorch/test/labels_changed", "the PyTorch scheme did not ({} of 1,000")),
    ("docs/speed.md", INT8_GATE, lambda r: f"and {points(r['pytorch']['test']['accuracy_change_points'])} points)"),
    ("docs/export.md", INT8_GATE, ("onnxruntime/validation/labels_changed", "({} of 2,500 validation labels")),
    (
        "docs/export.md",
        EXPORT,
        lambda r: "1 `EmbedLayerNormalization`, {Attention} `Attention`, 12".format(**r["onnx"]["fused_operators"]),
    ),
    ("docs/export.md", EXPORT, ("onnx/fused_operators/BiasGelu", "{} `BiasGelu` for the shipped")),
    ("docs/export.md", EXPORT, ("exported/parity_check/max_abs_logit_diff", "logits within {:.1e} of PyTorch's")),
    # The API's load test and bulk scoring against predict.py --file.
    ("README.md", API_LOAD, ("in_process/api_saturated_reviews_per_s", "the API answered {:.2f} reviews/s")),
    ("README.md", API_LOAD, ("in_process/api_over_in_process", "clients, {:.2f}x the in-process")),
    ("docs/serving.md", API_LOAD, lambda r: api_row(r["clients"][0])),
    ("docs/serving.md", API_LOAD, lambda r: api_row(r["clients"][1])),
    ("docs/serving.md", API_LOAD, lambda r: api_row(r["clients"][2])),
    (
        "docs/serving.md",
        API_LOAD,
        lambda r: "| 32, batching off " + api_row(r["unbatched"]["unbatched_32_clients"])[5:],
    ),
    ("docs/serving.md", API_LOAD, ("unbatched/batched_over_unbatched", "Batching buys {:.2f}x")),
    ("docs/serving.md", API_LOAD, ("in_process/api_over_in_process", "is {:.2f}x the in-process Predictor")),
    ("docs/serving.md", API_LOAD, ("in_process/reviews_per_s", "against {:.2f} reviews/s on the same")),
    ("docs/serving.md", API_LOAD, ("burst/rss_growth", "+{:.2%} (limit 10%)")),
    ("docs/serving.md", API_LOAD, ("burst/statuses/503", "and {} x 503")),
    ("docs/serving.md", BULK, ("bulk_over_predict_file", "2 workers ran at {:.2f}x `predict.py --file`")),
    (
        "docs/serving.md",
        BULK,
        lambda r: f"({r['sentiment_bulk']['reviews_per_s']:.2f} against {r['predict_file']['reviews_per_s']:.2f}",
    ),
    ("docs/serving.md", BULK, ("sentiment_bulk/scoring_reviews_per_s", "{:.2f} reviews/s): the")),
    ("docs/serving.md", INSTALL, ("extra_adds_mb", "it adds {} MB to the virtual environment")),
    ("docs/serving.md", INSTALL, ("extra_install_s", "and took {} s from the package")),
    # The shipped adapter on the whole test split, exact fp32, with and without its temperature.
    (
        "README.md",
        SHIPPED_TEST,
        lambda r: (
            shipped_row(r["metrics"])
            + " {:.4f} | {:.4f} |".format(r["metrics"]["expected_calibration_error"], r["metrics"]["log_loss"])
        ),
    ),
    ("README.md", SHIPPED_TEST, ("calibration/uncalibrated/expected_calibration_error", "calibration error is {:.4f}")),
    ("README.md", SHIPPED_TEST, ("calibration/uncalibrated/log_loss", "the log loss {:.4f}")),
    (
        "docs/evaluation.md",
        SHIPPED_TEST,
        lambda r: (
            shipped_row(r["metrics"])
            + " {:.4f} (raw {:.4f}) |".format(
                r["metrics"]["expected_calibration_error"],
                r["calibration"]["uncalibrated"]["expected_calibration_error"],
            )
        ),
    ),
    ("docs/evaluation.md", SHIPPED_TEST, ("metrics/temperature", "(T = {:.2f}, fitted on validation)")),
    (
        "docs/evaluation.md",
        SHIPPED_BF16,
        lambda r: (
            "accuracy\n{accuracy:.4f}, F1 {f1:.4f}, calibration error {expected_calibration_error:.4f}, log loss {log_loss:.4f}".format(
                **r["metrics"]
            )
        ),
    ),
    ("docs/evaluation.md", SHIPPED_BF16, ("metrics/numeric_precision", "In {}, the default on a CPU with AMX")),
    # The GPU run.
    ("README.md", GPU_BENCHMARK, ("parts/gpu-train/samples_per_s_ratio", "training **{:.2f}x**")),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-inference/reviews_per_s", "inference **{:,.0f} reviews/s**")),
    ("docs/gpu.md", GPU_BENCHMARK, ("parts/gpu-train/project/samples_per_s", "| {:.1f} samples/s")),
    ("docs/gpu.md", GPU_BENCHMARK, ("parts/gpu-inference/pipeline/reviews_per_s", "| {} (`pipeline`, batch 64)")),
]


def expected(record: dict, quote) -> str:
    if callable(quote):
        return quote(record)
    path, template = quote
    return template.format(at(record, path))


@pytest.mark.parametrize(
    ("page", "record", "quote"), QUOTES, ids=[f"{page}:{i}" for i, (page, _, _) in enumerate(QUOTES)]
)
def test_each_quoted_figure_is_its_records(page, record, quote):
    text = (PROJECT_ROOT / page).read_text(encoding="utf-8")
    figure = expected(read(record), quote)
    assert figure in text or figure in plain(text), f"{page} does not quote {figure!r} from {record}"


def linked_records(page: Path) -> set[Path]:
    links = re.findall(r"\]\(([^)#\s]+\.json)\)", page.read_text(encoding="utf-8"))
    return {(page.parent / link).resolve() for link in links}


def pages() -> list[Path]:
    return [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def test_every_linked_record_exists_and_every_record_is_linked():
    linked = set().union(*(linked_records(page) for page in pages()))
    missing = sorted(str(path.relative_to(PROJECT_ROOT)) for path in linked if not path.is_file())
    assert not missing, f"pages link records that are not committed: {missing}"
    unlinked = sorted(path.name for path in RECORDS.glob("*.json") if path.resolve() not in linked)
    assert not unlinked, f"records no page links: {unlinked}"


# Written before scripts/load_test.py recorded the date; the pages quoting them give it. Rerun, they leave this set.
UNDATED = {"load_test.json", "load_test_mixed.json"}


def test_every_record_says_what_made_it_and_when():
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        run = record.get("run") or record.get("exported") or {}  # evaluate.py's report, an export's record
        made_by = record.get("command") or run.get("command") or ("exported" in record and "inference/export.py")
        assert made_by, f"{path.name} has no command"
        dated = bool(record.get("date") or run.get("date"))
        assert dated != (path.name in UNDATED), f"{path.name}: dated {dated}, but UNDATED says otherwise"
