"""The README's figures: the shipped adapter's test row and training run, the CPU table, the API, the GPU run."""

from __future__ import annotations

from tests.quotes import (
    API_LOAD,
    CPU_TABLE,
    CPU_TRAIN,
    GPU_BENCHMARK,
    GPU_CHECK,
    INT8_GATE,
    SHIPPED_METRICS,
    SHIPPED_TEST,
    cpu_system,
    points,
    shipped_row,
)


def cpu_row(label: str, table: str, system: str):
    """A whole row of the README's CPU table: reviews/s, ratio to the pipeline, accuracy change, the 2x target."""

    def row(record: dict) -> str:
        figures = cpu_system(record, table, system)
        accuracy = points(figures["accuracy_change_points"])
        accuracy += " points" if figures["accuracy_change_points"] else ""
        changed = figures["labels_changed_vs_fp32"]
        accuracy += f" ({changed} label{'s' * (changed > 1)})" if changed else ""
        target = "met" if figures["ratio_to_pipeline"] >= 2 else "missed"
        return (
            f"| {label} | {figures['reviews_per_s']:.2f} | {figures['ratio_to_pipeline']:.2f}x | {accuracy} | "
            f"2x: {target} |"
        )

    return row


QUOTES = [
    ("README.md", CPU_TABLE, cpu_row("bf16, on this CPU with AMX", "this_cpu", "pytorch bf16")),
    ("README.md", CPU_TABLE, cpu_row("exact fp32, the same CPU with AMX switched off", "amx_off", "pytorch fp32")),
    (
        "README.md",
        CPU_TABLE,
        cpu_row(
            "int8 of the [ONNX export](docs/export.md), with AMX switched off",
            "amx_off",
            "onnxruntime int8 (gated scheme)",
        ),
    ),
    (
        "README.md",
        CPU_TABLE,
        lambda r: f"no GPU, {r['date'][:10]}, nothing else running (load {r['load_average_at_start'][0]:.1f}):",
    ),
    (
        "README.md",
        INT8_GATE,
        lambda r: f"PyTorch int8 failed the check ({points(r['pytorch']['test']['accuracy_change_points'])} points)",
    ),
    ("README.md", API_LOAD, ("in_process/api_saturated_reviews_per_s", "the API answered {:.2f} reviews/s")),
    ("README.md", API_LOAD, ("in_process/api_over_in_process", "clients, {:.2f}x the in-process")),
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
    ("README.md", SHIPPED_METRICS, ("training/num_train_examples", "trained on {:,} IMDb")),
    ("README.md", SHIPPED_METRICS, ("training/train_runtime_s", "{:.0f} s run on one NVIDIA H200")),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-train/samples_per_s_ratio", "training **{:.2f}x**")),
    (
        "README.md",
        GPU_BENCHMARK,
        lambda r: "({:.1f} against {:.1f}, target 2x)".format(
            r["parts"]["gpu-train"]["project"]["samples_per_s"], r["parts"]["gpu-train"]["tutorial"]["samples_per_s"]
        ),
    ),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-inference/pipeline/reviews_per_s", "the `pipeline` does {:.0f})")),
    ("README.md", GPU_CHECK, ("stages/pytest/counts/passed", "`pytest -m gpu` {} of 5 passed")),
    ("README.md", GPU_BENCHMARK, ("parts/gpu-inference/reviews_per_s", "inference **{:,.0f} reviews/s**")),
    (
        "README.md",
        CPU_TRAIN,
        lambda r: "runs at {:.2f}x / {:.2f}x the samples/s of `train.py` before".format(
            *(r["parts"]["cpu-train"]["lengths"][n]["samples_per_s_ratio"] for n in ("256", "512"))
        ),
    ),
    ("README.md", SHIPPED_TEST, ("metrics/temperature", "temperature-scaled (T = {:.2f}, fitted on validation)")),
    ("README.md", SHIPPED_TEST, ("data/num_examples", "On the full IMDb test split, {:,} reviews")),
]
