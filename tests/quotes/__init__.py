"""What the pages quote from which record: record paths and the formatters the quotes share.

Each module here holds one group of pages' QUOTES: (page, record, quote), where a quote is a (path in the
record, format string) pair or a function of the record giving the text the page must hold; tests/test_records.py
checks them all."""

from __future__ import annotations

import json
from collections.abc import Callable

from training.paths import PROJECT_ROOT

RECORDS = PROJECT_ROOT / "docs" / "records"
CPU_TABLE = "docs/records/cpu_table.json"
INT8_GATE = "docs/records/int8_gate.json"
GPU_BENCHMARK = "docs/gpu/benchmark.json"
GPU_CHECK = "docs/gpu/gpu_check_report.json"
SHIPPED_METRICS = "trained_model/metrics.json"
API_LOAD = "docs/records/api_load_test.json"
BULK = "docs/records/bulk_compare.json"
EXPORT = "docs/records/export_shipped_adapter.json"
INSTALL = "docs/records/install_serve.json"
SHIPPED_TEST = "docs/records/shipped_test_fp32.json"
SHIPPED_BF16 = "docs/records/shipped_test_bf16.json"
GPU_BEFORE_FIX = "docs/gpu/benchmark_before_padding_fix.json"
# The runs before CPU batches were padded to a multiple of 32 tokens, kept as their records were.
CPU_TABLE_BEFORE = "docs/records/before_padding/cpu_table.json"
LOAD_TEST_BEFORE = "docs/records/before_padding/load_test.json"
LOAD_MIXED_BEFORE = "docs/records/before_padding/load_test_mixed.json"
SHIPPED_BF16_BEFORE = "docs/records/before_padding/shipped_test_bf16.json"
GPU_PROFILE = "docs/gpu/gpu_profile.json"
SHIPPED_CONFIG = "trained_model/sentiment_config.json"
CALIBRATION = "trained_model/calibration.json"
LOAD_TEST = "docs/records/load_test.json"
LOAD_MIXED = "docs/records/load_test_mixed.json"
CPU_TRAIN = "docs/records/cpu_train.json"
INSTALL_EXPORT = "docs/records/install_export.json"
ADVISORIES = "scripts/advisories/pypa-advisory-database.json"
STARS = "docs/records/stars_metrics.json"


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


def cpu_system(record: dict, table: str, system: str) -> dict:
    """One system's figures in a --cpu-table record: table "this_cpu" or "amx_off", system e.g. "pytorch bf16"."""
    return record["parts"]["cpu-table"][table]["systems"][system]


def speed_row(label: str, system: str) -> Callable[[dict], str]:
    """A whole row of docs/speed.md's CPU table (with AMX, then AMX off) built from the record, emphasis aside."""

    def row(record: dict) -> str:
        cells = [label]
        for table in ("this_cpu", "amx_off"):
            figures = cpu_system(record, table, system)
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


# (page, record, what the page writes: a format string for one value at a path, or a function of the record)
